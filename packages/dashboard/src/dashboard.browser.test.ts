import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../../server/src/admin-key.js';
import type { TestServer } from '../../server/src/test-support/test-server.js';
import { chromiumMissing, launchChromium, PageProblems, pixelsOfColour, poll, screenshot, startDashboardServer, unnamedControls } from './browser-support.js';

/**
 * The dashboard in a real Chromium against the real server over SQLite: a fleet of 21 instances made
 * through the API (heartbeats, a hibernation, two owners), then the page as an operator uses it.
 */

// Callbacks given to `page.evaluate` run in the page; this file is typechecked without the DOM library,
// so the few browser globals they touch are declared here, for this module only.
declare const document: any;
declare const localStorage: Record<string, string>;
declare const sessionStorage: Record<string, string>;

const MINUTE = 60_000;

/** Who the fleet is: ids by what they do during the seeding. */
const FLEET = {
  active: [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008],
  /** Idle since minute 3 of 34: past the 30-minute threshold, a hibernation due in 4 minutes. */
  countdown: [1009, 1010],
  /** Busy until a few minutes ago: idle, nothing scheduled yet. */
  idle: [1011, 1012, 1013],
  hibernated: [1014, 1015],
  /** Registered, never beat. */
  offline: [1016, 1017, 1018],
  alice: { active: [2001, 2002], idle: [2003] },
  /** Another owner's spares, registered and never started: enough for a second page of 50. */
  bob: Array.from({ length: 32 }, (_, i) => 4001 + i),
};
const hostnameOf = (id: number) =>
  id >= 4000 ? `bob-spare-${String(id - 4000).padStart(2, '0')}` : id >= 2000 ? `alice-h100-${id - 2000}` : `gpu-a100-${String(id - 1000).padStart(2, '0')}`;

/** Two GPUs per host, with numbers that move a little from beat to beat so the charts have a shape. */
function gpus(busy: boolean, step: number) {
  return [0, 1].map((index) => ({
    index,
    uuid: `GPU-${index}0000000-aaaa-bbbb-cccc-00000000000${index}`,
    name: 'NVIDIA A100-SXM4-80GB',
    utilization_percent: busy ? 70 + ((step * 7 + index * 11) % 25) : 0,
    memory_used_mb: busy ? 40_000 + ((step * 997) % 20_000) : 500,
    memory_total_mb: 81_920,
    temperature_celsius: busy ? 60 + ((step * 3 + index) % 15) : 31 + ((step + index) % 6),
    power_watts: busy ? 250 + ((step * 13) % 100) : 60 + (step % 9),
  }));
}
const beatBody = (id: number, busy: boolean, step: number) => ({
  instance_id: id,
  hostname: hostnameOf(id),
  agent_version: '0.1.0',
  process_count: busy ? 4 : 0,
  active_users: busy ? 1 : 0,
  gpus: gpus(busy, step),
});

describe.skipIf(chromiumMissing('dashboard browser suite'))('dashboard in a real browser', () => {
  let t: TestServer;
  let stopServer: (() => Promise<void>) | undefined;
  let browser: Browser;
  let aliceKey: string;
  const problems = new PageProblems();

  beforeAll(async () => {
    // The server's manual clock ends the seeding at the browser's "now": relative times read naturally.
    const seedMinutes = 34;
    ({ t, close: stopServer } = await startDashboardServer({ clockAt: Math.floor(Date.now() / 1000) * 1000 - seedMinutes * MINUTE }));
    await seedFleet(seedMinutes);
    await t.server.history.flush();
    browser = await launchChromium();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await stopServer?.();
  });

  async function seedFleet(minutes: number) {
    const tokens = new Map<number, string>();
    for (const id of [...FLEET.active, ...FLEET.countdown, ...FLEET.idle, ...FLEET.hibernated, ...FLEET.offline]) {
      const res = await t.request('POST', '/api/v1/agent/instances', {
        body: { instance_id: id, hostname: hostnameOf(id), ...(FLEET.hibernated.includes(id) ? { price_per_hour: 2.5 } : {}) },
      });
      expect(res.status).toBe(201);
      tokens.set(id, res.json.agent_token);
    }
    aliceKey = await createApiKey(t.server.store, 'alice', false, t.clock.now());
    for (const id of [...FLEET.alice.active, ...FLEET.alice.idle]) tokens.set(id, await t.register(id, hostnameOf(id), aliceKey));
    const bobKey = await createApiKey(t.server.store, 'bob', false, t.clock.now());
    await Promise.all(FLEET.bob.map((id) => t.register(id, hostnameOf(id), bobKey)));

    const beat = async (id: number, busy: boolean, step: number, extra: Record<string, unknown> = {}) => {
      const res = await t.beat(tokens.get(id)!, { ...beatBody(id, busy, step), ...extra });
      expect(res.status, `beat of ${id}: ${res.text}`).toBe(200);
      return res.json;
    };

    // The two to hibernate: idle, an operator's hibernate, the agent's idle beat and its result.
    for (const id of FLEET.hibernated) {
      await beat(id, false, 0);
      const command = await t.request('POST', `/api/v1/agent/instances/${id}/commands`, { body: { type: 'hibernate' } });
      expect(command.status).toBe(201);
      await beat(id, false, 0);
      await beat(id, false, 0, { command_results: [{ id: command.json.id, status: 'succeeded' }] });
    }

    // One beat a minute from everyone online; history keeps one sample per beat.
    for (let step = 0; step <= minutes; step++) {
      const beats: Promise<unknown>[] = [];
      for (const id of [...FLEET.active, ...FLEET.alice.active]) beats.push(beat(id, true, step));
      for (const id of FLEET.countdown) beats.push(beat(id, step < 3, step));
      for (const id of [...FLEET.idle, ...FLEET.alice.idle]) beats.push(beat(id, step < minutes - 5, step));
      await Promise.all(beats);
      if (step < minutes) t.clock.advance(MINUTE);
    }
    const list = (await t.request('GET', '/api/v1/agent/instances')).json;
    expect(list).toMatchObject({ count: 53, active_count: 10, idle_count: 6, hibernated_count: 2, offline_count: 35, hibernating_count: 0, waking_count: 0 });
    const scheduled = (await t.request('GET', `/api/v1/agent/instances/${FLEET.countdown[0]}`)).json;
    expect(scheduled.hibernation.hibernate_in_seconds).toBe(240);
  }

  async function openPage(width: number): Promise<Page> {
    const page = await browser.newPage({ viewport: { width, height: 900 }, locale: 'en-US' });
    // The browser logs every 4xx itself; steps that provoke one on purpose forgive it (below).
    problems.watch(page);
    await page.goto(t.url);
    return page;
  }

  /** A step that provokes a refusal on purpose forgives the 4xx the browser logs for that path. */
  const forgive = (path: string) => problems.forgive(`${t.url}${path}`);

  async function logIn(page: Page, key: string) {
    const field = page.getByLabel('API key');
    await field.fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await poll(() => page.getByRole('button', { name: 'Log out' }).isVisible()).toBe(true);
    // The key is sent once and kept nowhere: not in the field, not in storage.
    expect(await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }))).not.toContain(key);
    // The session cookie is HttpOnly: the page sees only the hint that it is signed in.
    await poll(() => page.evaluate(() => document.cookie)).toBe('dumont_signed_in=1');
  }

  /** What the status tabs say: `{active: 10, …}`. */
  async function statusCounts(page: Page): Promise<Record<string, number>> {
    return page.evaluate(() =>
      Object.fromEntries(
        [...document.querySelectorAll('[data-status]')].map((b: any) => [b.dataset.status, Number(b.querySelector('.count')!.textContent)]),
      ),
    );
  }
  const hostnamesShown = (page: Page) => page.locator('table.instances tbody a').allTextContents();

  const horizontalOverflow = (page: Page) => page.evaluate(() => document.documentElement.scrollWidth);

  // One page walks through the steps in order, as an operator would; each step starts where the last ended.
  let page: Page;
  let id: number;

  it('refuses a wrong key next to the field, then logs the admin in: counts per status and every hostname', async () => {
    page = await openPage(1280);
    await page.getByLabel('API key').waitFor();
    // A first visit asks nothing it would be refused: no 4xx logged before anyone typed a key.
    expect(problems.logged()).toEqual([]);
    forgive('/api/v1/session');
    await page.getByLabel('API key').fill('dmk_wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await poll(() => page.locator('#api-key-error').textContent()).toContain('not valid');
    await poll(() => page.getByLabel('API key').inputValue()).toBe('');

    await logIn(page, t.adminKey);
    await poll(() => statusCounts(page)).toEqual({ active: 10, idle: 6, hibernating: 0, hibernated: 2, offline: 35, waking: 0 });
    await poll(() => page.getByRole('button', { name: /^All/ }).textContent()).toBe('All 53');
    // By id, the first page of 50: the admin's own, alice's, then bob's.
    const byId = [...FLEET.active, ...FLEET.countdown, ...FLEET.idle, ...FLEET.hibernated, ...FLEET.offline, 2001, 2002, 2003, ...FLEET.bob];
    expect(await hostnamesShown(page)).toEqual(byId.slice(0, 50).map(hostnameOf));
    await poll(() => page.getByText('1–50 of 53 instances').count()).toBe(1);
    // Unknown values are a dash, never 0: an instance that never beat.
    const offlineRow = page.locator(`tr[data-instance-id="${FLEET.offline[0]}"]`);
    expect(await offlineRow.locator('td').nth(4).textContent()).toBe('—');
    expect(await offlineRow.locator('td').nth(6).textContent()).toBe('—');
    await poll(() => page.locator(`tr[data-instance-id="${FLEET.active[0]}"] td`).nth(6).textContent()).toMatch(/^\d+ °C$/);
  });

  it('pages with Next and Previous', async () => {
    await poll(() => page.getByRole('button', { name: 'Previous' }).isDisabled()).toBe(true);
    await page.getByRole('button', { name: 'Next' }).click();
    await poll(() => hostnamesShown(page)).toEqual(FLEET.bob.slice(-3).map(hostnameOf));
    await poll(() => page.getByText('51–53 of 53 instances').count()).toBe(1);
    await poll(() => page.getByRole('button', { name: 'Next' }).isDisabled()).toBe(true);
    await page.getByRole('button', { name: 'Previous' }).click();
    await poll(() => hostnamesShown(page).then((h) => h.length)).toBe(50);
    await poll(() => page.getByRole('button', { name: 'Previous' }).isDisabled()).toBe(true);
  });

  it('ticks the hibernation countdown each second, filters by status, searches and sorts by a header', async () => {
    const countdownCell = page.locator(`tr[data-instance-id="${FLEET.countdown[0]}"] time.countdown`);
    const firstReading = await countdownCell.textContent();
    expect(firstReading).toMatch(/^\d+:\d\d$/);
    await poll(() => countdownCell.textContent(), { timeout: 3000 }).not.toBe(firstReading);

    await page.locator('[data-status="idle"]').click();
    await poll(() => page.locator('table.instances tbody tr').count()).toBe(6);
    await poll(() => page.locator('[data-status="idle"]').getAttribute('aria-pressed')).toBe('true');
    await page.getByRole('button', { name: /^All/ }).click();
    await page.getByRole('searchbox', { name: 'Search' }).fill('alice');
    await poll(() => hostnamesShown(page)).toEqual(['alice-h100-1', 'alice-h100-2', 'alice-h100-3']);
    await page.getByRole('searchbox', { name: 'Search' }).fill('1010');
    await poll(() => hostnamesShown(page)).toEqual(['gpu-a100-10']);
    await page.getByRole('searchbox', { name: 'Search' }).fill('a100');
    await page.getByRole('button', { name: 'Hostname' }).click();
    await page.getByRole('button', { name: 'Hostname' }).click();
    await poll(() => page.locator('th[aria-sort="descending"]').textContent()).toContain('Hostname');
    const admins = [...FLEET.active, ...FLEET.countdown, ...FLEET.idle, ...FLEET.hibernated, ...FLEET.offline].map(hostnameOf);
    await poll(() => hostnamesShown(page)).toEqual(admins.sort().reverse());
    await page.getByRole('button', { name: 'Hibernates in' }).click();
    await poll(() => page.locator('th[aria-sort="ascending"]').textContent()).toContain('Hibernates in');
    await poll(async () => (await hostnamesShown(page)).slice(0, 2)).toEqual(FLEET.countdown.map(hostnameOf));

    expect(await unnamedControls(page)).toEqual([]);
    await screenshot(page, 'fleet-1280');
  });

  it('registers an instance from the dialog and shows the token once with the server\'s install command', async () => {
    await page.getByRole('searchbox', { name: 'Search' }).fill('');
    await page.getByRole('button', { name: 'Add instance' }).click();
    const dialog = page.getByRole('dialog', { name: 'Add instance' });
    await dialog.getByLabel('Instance id', { exact: true }).fill('3001');
    await dialog.getByLabel('Hostname (optional)').fill('new-host');
    const registered = page.waitForResponse((r) => r.url().endsWith('/api/v1/agent/instances') && r.request().method() === 'POST');
    await dialog.getByRole('button', { name: 'Register' }).click();
    const answer = await (await registered).json();
    const done = page.getByRole('dialog', { name: 'Instance 3001 registered' });
    expect(await done.getByRole('textbox', { name: 'Install command' }).inputValue()).toBe(answer.install_command);
    expect(await done.getByRole('textbox', { name: 'Agent token' }).inputValue()).toBe(answer.agent_token);
    expect(await done.textContent()).toContain('./dumont-agent.token');
    expect(await unnamedControls(page)).toEqual([]);
    await screenshot(page, 'add-instance-1280', false);
    await done.getByRole('button', { name: 'Done' }).click();
    await poll(() => page.getByRole('dialog').count()).toBe(0);
    await poll(() => hostnamesShown(page)).toContain('new-host');
  });

  it('opens the idle instance: its countdown, and per-GPU charts drawn from the history the server returned', async () => {
    id = FLEET.countdown[0]!;
    const metrics = page.waitForResponse((r) => /\/instances\/\d+\/metrics/.test(r.url()));
    await page.getByRole('link', { name: hostnameOf(id) }).click();
    await poll(() => page.locator('.countdown-banner').textContent()).toMatch(/Hibernates in \d+:\d\d/);

    const history = await (await metrics).json();
    expect(history.gpus).toHaveLength(2);
    expect(history.gpus[0].points.length).toBeGreaterThan(30);
    const temperatureChart = page.locator('figure[data-metric="temperature_celsius"]').first();
    await poll(() => temperatureChart.getAttribute('data-points')).toBe(String(history.gpus[0].points.length));
    const lastTemperature = history.gpus[0].points.at(-1).temperature_celsius;
    expect(await temperatureChart.locator('.latest').textContent()).toBe(`${lastTemperature} °C`);
    // The series line is on the canvas: pixels of its colour (#c2410c), which nothing else there uses.
    expect(await pixelsOfColour(temperatureChart.locator('canvas'), '#c2410c')).toBeGreaterThan(50);
    await poll(() => page.locator('figure.chart').count()).toBe(8); // 2 GPUs × 4 metrics
    expect(await unnamedControls(page)).toEqual([]);
    await screenshot(page, 'instance-1280');

    const day = page.waitForResponse((r) => /\/metrics\?from=/.test(r.url()));
    await page.getByRole('button', { name: '24 h' }).click();
    const dayAnswer = await day;
    expect(dayAnswer.status()).toBe(200);
    const dayHistory = await dayAnswer.json();
    expect(Date.parse(dayHistory.to) - Date.parse(dayHistory.from)).toBe(86_400_000);
    await poll(() => page.getByRole('button', { name: '24 h' }).getAttribute('aria-pressed')).toBe('true');
    await poll(() => temperatureChart.getAttribute('data-points')).toBe(String(dayHistory.gpus[0].points.length));
    await poll(() => page.locator('.charts .error').count()).toBe(0);
    await page.getByRole('button', { name: '1 h' }).click();
  });

  it('asks in the page before a restart (cancel sends nothing) and queues a snapshot at once', async () => {
    await page.getByRole('button', { name: 'Restart…' }).click();
    const confirm = page.getByRole('dialog', { name: 'Restart this instance?' });
    await poll(() => confirm.isVisible()).toBe(true);
    await poll(() => page.evaluate(() => document.activeElement?.textContent)).toBe('Cancel');
    await screenshot(page, 'confirm-1280', false);
    await confirm.getByRole('button', { name: 'Cancel' }).click();
    await poll(() => page.getByRole('dialog').count()).toBe(0);
    await page.getByRole('button', { name: 'Snapshot' }).click();
    await poll(() => page.locator('tr[data-command-type="snapshot"]').count()).toBe(1);
    expect((await t.request('GET', `/api/v1/agent/instances/${id}/commands`)).json.commands.map((c: { type: string }) => c.type)).toEqual(['snapshot']);
  });

  it('keeps the instance alive: the countdown is gone and the timeline says keep_alive', async () => {
    await page.getByLabel('Keep alive for (minutes)').fill('45');
    await page.getByRole('button', { name: 'Keep alive' }).click();
    await poll(() => page.locator('.countdown-banner').count()).toBe(0);
    await poll(() => page.locator('.timeline li[data-event-type="keep_alive"]').count()).toBe(1);
    await poll(() => page.getByRole('status').filter({ hasText: 'postponed by 45 minutes' }).count()).toBe(1);
    const detail = (await t.request('GET', `/api/v1/agent/instances/${id}`)).json;
    expect(detail.hibernation.hibernate_in_seconds).toBeNull();
    expect(Date.parse(detail.postponed_until)).toBe(t.clock.now() + 45 * MINUTE);
  });

  it('names a field the server refuses next to its control, and saves the hibernation settings', async () => {
    await page.getByLabel('Idle threshold (minutes)').fill('0');
    await page.getByRole('button', { name: 'Save' }).click();
    await poll(() => page.locator('#threshold-error').textContent()).toBeTruthy();
    await poll(() => page.getByLabel('Idle threshold (minutes)').getAttribute('aria-invalid')).toBe('true');
    forgive(`/api/v1/agent/instances/${id}/hibernation`); // that refusal's 400, logged by the browser
    await page.getByLabel('Idle threshold (minutes)').fill('45');
    await page.getByLabel('Dry run (record, never stop)').check();
    await page.getByRole('button', { name: 'Save' }).click();
    await poll(async () => (await t.request('GET', `/api/v1/agent/instances/${id}`)).json.hibernation).toMatchObject({ threshold_minutes: 45, dry_run: true });
    await poll(() => page.locator('.timeline li[data-event-type="policy_changed"]').count()).toBe(1);
  });

  it('loads older events by cursor, newest first', async () => {
    for (let i = 0; i < 25; i++) {
      expect((await t.request('POST', `/api/v1/agent/instances/${id}/keep-alive?minutes=${i + 1}`)).status).toBe(200);
    }
    const all = (await t.request('GET', `/api/v1/agent/instances/${id}/events?limit=1000`)).json.events as { id: number }[];
    expect(all.length).toBeGreaterThan(20);
    // The next poll brings the first page; the rest come by "Load more events".
    await poll(() => page.locator('.timeline li').first().getAttribute('data-event-id'), { timeout: 8000 }).toBe(String(all[0]!.id));
    await poll(() => page.locator('.timeline li').count()).toBe(20);
    await page.getByRole('button', { name: 'Load more events' }).click();
    await poll(() => page.locator('.timeline li').count()).toBe(Math.min(all.length, 40));
    while (await page.getByRole('button', { name: 'Load more events' }).count()) {
      await page.getByRole('button', { name: 'Load more events' }).click();
      await page.waitForTimeout(100);
    }
    const shown = await page.locator('.timeline li').evaluateAll((items: any[]) => items.map((li) => Number(li.dataset.eventId)));
    expect(shown).toEqual(all.map((e) => e.id));
  });

  it('fits a 390 px screen: the table scrolls inside the page, nothing is wider than the viewport', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await poll(() => horizontalOverflow(page)).toBeLessThanOrEqual(390);
    await screenshot(page, 'instance-390');
    await page.goto(`${t.url}/#/`);
    await poll(() => hostnamesShown(page).then((h) => h.length)).toBe(50);
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(390);
    expect(await unnamedControls(page)).toEqual([]);
    await screenshot(page, 'fleet-390');
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('wakes a hibernated instance; keep-alive and hibernate-now are not offered while it sleeps', async () => {
    await page.goto(`${t.url}/#/instances/${FLEET.hibernated[0]}`);
    await poll(() => page.locator('.page-title .badge').textContent()).toBe('Hibernated');
    await poll(() => page.getByRole('button', { name: 'Keep alive' }).isDisabled()).toBe(true);
    await poll(() => page.getByRole('button', { name: 'Hibernate now…' }).isDisabled()).toBe(true);
    await page.getByRole('button', { name: 'Wake' }).click();
    await poll(() => page.locator('.page-title .badge').textContent()).toBe('Waking');
    await poll(() => page.getByRole('button', { name: 'Wake' }).count()).toBe(0);
    await poll(() => page.locator('.timeline li[data-event-type="wake_requested"]').count()).toBe(1);
  });

  it('logs out; an owner key sees only its own instances', async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await poll(() => page.getByLabel('API key').isVisible()).toBe(true);
    expect((await page.request.get(`${t.url}/api/v1/agent/instances`)).status()).toBe(401);
    await logIn(page, aliceKey);
    await poll(() => hostnamesShown(page)).toEqual(['alice-h100-1', 'alice-h100-2', 'alice-h100-3']);
    expect(await statusCounts(page)).toEqual({ active: 2, idle: 1, hibernating: 0, hibernated: 0, offline: 0, waking: 0 });
    // It may add instances of its own, as its key may through the API.
    await poll(() => page.getByRole('button', { name: 'Add instance' }).count()).toBe(1);
    await page.goto(`${t.url}/#/instances/${FLEET.active[0]}`);
    await poll(() => page.getByRole('alert').textContent()).toContain('not found');
    forgive(`/api/v1/agent/instances/${FLEET.active[0]}`); // that 404, logged by the browser
  });

  it('shows the mass-silence banner while most of the fleet went quiet at once', async () => {
    await page.goto(`${t.url}/#/`);
    await poll(() => hostnamesShown(page).then((h) => h.length)).toBe(3);
    await poll(() => page.getByText('Mass silence').count()).toBe(0);
    t.clock.advance(91_000);
    await t.sweep();
    expect((await t.request('GET', '/api/v1/agent/instances')).json.mass_silence).not.toBeNull();
    await poll(() => page.locator('.banner').filter({ hasText: 'Mass silence' }).textContent(), { timeout: 8000 }).toMatch(/went silent at once/);
    await poll(() => statusCounts(page)).toMatchObject({ active: 0, idle: 0, offline: 3 });
  });

  it('logged no console error or warning and threw nothing in the whole run', async () => {
    expect(problems.unforgiven()).toEqual([]);
    await page.close();
  });
});
