import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../../server/src/test-support/test-server.js';
import { chromiumMissing, launchChromium, PageProblems, poll, startDashboardServer } from './browser-support.js';

/**
 * The instance page's "Effective policy" card in a real Chromium against the real server: what the
 * detail API says governs an instance (each value and its source, the schedule, the signals, a forced
 * hibernation) is what the page shows, on a phone-wide screen too.
 */

// Callbacks given to `page.evaluate` run in the page; this file is typechecked without the DOM library.
declare const document: any;

/** A Monday, 10:00 UTC: outside "Mon-Sun 00:00-00:01" and outside "Mon-Fri 08:00-09:00". */
const NOW = Date.parse('2026-03-30T10:00:00Z');
/** The browser's zone differs from the policies' (UTC), so the page must convert the next change to local time. */
const BROWSER_ZONE = 'Europe/Berlin';

const notebooks = {
  selector: ['kind=notebook'],
  priority: 10,
  threshold_minutes: 20,
  warning_seconds: 120,
  schedule: { timezone: 'UTC', active: ['Mon-Sun 00:00-00:01'], outside: 'idle_only', outside_threshold_minutes: 15 },
  signals: [{ name: 'slurm', type: 'agent', key: 'slurm' }],
};
const nights = {
  selector: ['kind=training'],
  priority: 20,
  schedule: { timezone: 'UTC', active: ['Mon-Fri 08:00-09:00'], outside: 'hibernate' },
};

const sameSpaces = (s: string) => s.replace(/\s+/g, ' ').trim();

describe.skipIf(chromiumMissing('effective policy browser suite'))('the effective policy on the instance page', () => {
  let t: TestServer;
  let stopServer: (() => Promise<void>) | undefined;
  let browser: Browser;
  let page: Page;
  const problems = new PageProblems();

  beforeAll(async () => {
    ({ t, close: stopServer } = await startDashboardServer({ clockAt: NOW }));
    for (const [name, spec] of [['notebooks', notebooks], ['nights', nights]] as const) {
      const res = await t.request('PUT', `/api/v1/policies/${name}`, { body: spec });
      expect(res.status, res.text).toBe(201);
    }
    for (const [id, kind, extra] of [
      [71, 'notebook', { activity_signals: [{ key: 'slurm', state: 'active', detail: '2 jobs running' }] }],
      [72, 'training', {}],
    ] as const) {
      const registered = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: id, hostname: `gpu-${id}`, labels: { kind } } });
      expect(registered.status, registered.text).toBe(201);
      const beat = await t.beat(registered.json.agent_token, { instance_id: id, hostname: `gpu-${id}`, gpus: [{ index: 0, utilization_percent: 0 }], process_count: 0, ...extra });
      expect(beat.status, beat.text).toBe(200);
    }
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 390, height: 844 }, locale: 'en-US', timezoneId: BROWSER_ZONE });
    problems.watch(page);
    await page.goto(`${t.url}#/instances/71`);
    await page.getByLabel('API key').fill(t.adminKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'gpu-71' }).waitFor();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await stopServer?.();
  });

  const card = () => page.locator('section[aria-labelledby="effective-title"]');
  /** Each term of the card's list with the values under it, as the reader sees them. */
  const facts = () =>
    card()
      .locator('dl')
      .evaluate((dl: any) => {
        const rows: [string, string[]][] = [];
        for (const child of dl.children) {
          const text = String(child.textContent).replace(/\s+/g, ' ').trim();
          if (child.tagName === 'DT') rows.push([text, []]);
          else rows[rows.length - 1]![1].push(text);
        }
        return Object.fromEntries(rows);
      });
  const openInstance = async (id: number) => {
    await page.goto(`${t.url}#/instances/${id}`);
    await page.getByRole('heading', { name: `gpu-${id}` }).waitFor();
    await page.getByRole('heading', { name: 'Effective policy' }).waitFor();
  };

  it('shows each effective value with its source, the schedule with its next change in local time, and the signals, as the API says', async () => {
    const effective = (await t.request('GET', '/api/v1/agent/instances/71')).json.effective_policy;
    // The API's own answer, so that a page that agreed with a wrong API would not pass unnoticed.
    expect(effective).toMatchObject({
      policy: 'notebooks',
      threshold_minutes: { value: 15, source: 'schedule' },
      warning_seconds: { value: 120, source: 'policy' },
      schedule: { within_active_hours: false, next_change_at: '2026-03-31T00:00:00.000Z' },
      forced: null,
      signals: [{ name: 'slurm', state: 'active', detail: '2 jobs running' }],
    });
    const tag = (source: string) => (source === 'policy' ? `policy ${effective.policy}` : source);
    const shown = (field: { value: unknown; source: string }, unit = '') =>
      `${typeof field.value === 'boolean' ? (field.value ? 'yes' : 'no') : `${field.value}${unit}`} · ${tag(field.source)}`;
    const local = new Intl.DateTimeFormat('en-US', { dateStyle: 'medium', timeStyle: 'medium', timeZone: BROWSER_ZONE }).format(Date.parse(effective.schedule.next_change_at));
    // Midnight UTC is 02:00 in Berlin (summer time since 29 March).
    expect(local).toMatch(/Mar 31, 2026, 2:00:00\sAM/);

    await poll(facts).toEqual({
      Policy: ['notebooks'],
      Threshold: [shown(effective.threshold_minutes, ' min')],
      'Idle utilization': [shown(effective.idle_utilization_percent, ' %')],
      Warning: [shown(effective.warning_seconds, ' s')],
      Enabled: [shown(effective.enabled)],
      'Dry run': [shown(effective.dry_run)],
      Provider: [shown(effective.provider)],
      Schedule: [sameSpaces(`Mon-Sun 00:00-00:01 UTC · outside: threshold 15 min · now outside hours, until ${local}`)],
      Signals: ['slurm: active — 2 jobs running'],
    });
    expect(await facts()).toMatchObject({ Threshold: ['15 min · schedule'], Warning: ['120 s · policy notebooks'] });
    expect(await card().locator('.banner').count()).toBe(0);
    // Fits a 390 px phone: nothing on the page scrolls sideways.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    expect(problems.unforgiven()).toEqual([]);
  });

  it('warns, visibly, when the policy will hibernate the instance even if it is busy', async () => {
    await openInstance(72);
    const effective = (await t.request('GET', '/api/v1/agent/instances/72')).json.effective_policy;
    expect(effective.policy).toBe('nights');
    expect(effective.forced).toContain('outside its active hours');
    const warning = card().locator('.banner.warning');
    await poll(async () => sameSpaces((await warning.textContent()) ?? '')).toBe(sameSpaces(`Will be hibernated even if busy: ${effective.forced}`));
    expect(await warning.isVisible()).toBe(true);
    const shownFacts = await facts();
    expect(shownFacts.Policy).toEqual(['nights']);
    expect(shownFacts.Schedule![0]).toMatch(/^Mon-Fri 08:00-09:00 UTC · outside: hibernate · now outside hours, until /);
    expect(shownFacts.Signals).toBeUndefined();
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    expect(problems.unforgiven()).toEqual([]);
  });
});
