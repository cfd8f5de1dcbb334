import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../../server/src/test-support/test-server.js';
import { chromiumMissing, launchChromium, PageProblems, pixelsOfColour, poll, screenshot, startDashboardServer, unnamedControls } from './browser-support.js';

/**
 * The Policy page in a real Chromium against the real server over SQLite: a history with known replay
 * answers, recorded through the heartbeat API on a manual clock, then the page as an operator uses it.
 */

// Callbacks given to `page.evaluate` run in the page; this file is typechecked without the DOM library.
declare const document: any;

const MINUTE = 60_000;
const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Idle from minute 0 until `busyFrom`, busy after; one beat a minute. With no warning and the default
 * 60-minute regret window, thresholds 10/20/30/60 give:
 * - 7 (2 GPUs, $1.5/h): asleep 30/20/10 min, each a regret; 60 never fires;
 * - 8 (1 GPU, $2/h): asleep 100/90/80/50 min, only the last a regret;
 * - 9 (1 GPU, no price): asleep 15/5 min, both regrets; 30 and 60 never fire.
 */
const HISTORY = [
  { id: 7, gpus: 2, price: 1.5, busyFrom: 40 },
  { id: 8, gpus: 1, price: 2, busyFrom: 110 },
  { id: 9, gpus: 1, price: null, busyFrom: 25 },
] as const;
const SEED_MINUTES = 120;
const THRESHOLDS = [10, 20, 30, 60];
const HIBERNATIONS = [3, 3, 2, 1];
const REGRETS = [2, 2, 1, 1];

const en = (n: number, digits: number) => n.toLocaleString('en-US', { maximumFractionDigits: digits });
const dollars = (n: number) => n.toLocaleString('en-US', { style: 'currency', currency: 'USD' });

describe.skipIf(chromiumMissing('policy page browser suite'))('the Policy page in a real browser', () => {
  let t: TestServer;
  let stopServer: (() => Promise<void>) | undefined;
  let browser: Browser;
  let page: Page;
  let start: number;
  const problems = new PageProblems();

  beforeAll(async () => {
    // The history ends a minute before the browser's "now", so that the page's dates read naturally.
    start = Math.floor(Date.now() / MINUTE) * MINUTE - (SEED_MINUTES + 1) * MINUTE;
    // The live policy waits 4 hours: in this history it never fires, so what actually ran saved nothing.
    ({ t, close: stopServer } = await startDashboardServer({ env: { DUMONT_IDLE_THRESHOLD_MINUTES: '240' }, clockAt: start }));
    await recordHistory();
    browser = await launchChromium();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await stopServer?.();
  });

  async function recordHistory() {
    const tokens = new Map<number, string>();
    for (const h of HISTORY) {
      const res = await t.request('POST', '/api/v1/agent/instances', {
        body: { instance_id: h.id, hostname: `gpu-${h.id}`, ...(h.price === null ? {} : { price_per_hour: h.price }) },
      });
      expect(res.status, res.text).toBe(201);
      tokens.set(h.id, res.json.agent_token);
    }
    for (let minute = 0; minute <= SEED_MINUTES; minute++) {
      t.clock.set(start + minute * MINUTE);
      await Promise.all(
        HISTORY.map(async (h) => {
          const busy = minute >= h.busyFrom;
          const gpus = Array.from({ length: h.gpus }, (_, index) => ({
            index,
            uuid: `GPU-${h.id}-${index}`,
            utilization_percent: busy ? 90 : 0,
            memory_used_mb: busy ? 40_000 : 10,
            memory_total_mb: 81_920,
          }));
          const res = await t.beat(tokens.get(h.id)!, { instance_id: h.id, hostname: `gpu-${h.id}`, gpus, process_count: busy ? 3 : 0, active_users: 0 });
          expect(res.status, res.text).toBe(200);
        }),
      );
    }
    await t.server.history.flush();
    t.clock.set(start + (SEED_MINUTES + 1) * MINUTE);
  }

  const cells = (threshold: number | 'actual', field: string) => page.locator(`table.replay tr[data-policy="${threshold}"] td[data-field="${field}"]`);

  it('is one click from the fleet and replays the default thresholds on arrival', async () => {
    // UTC, so that the datetime-local fields below mean the times the test names.
    page = await browser.newPage({ viewport: { width: 1280, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
    problems.watch(page);
    await page.goto(t.url);
    await page.getByLabel('API key').fill(t.adminKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await poll(() => page.getByRole('button', { name: 'Log out' }).isVisible()).toBe(true);

    const first = page.waitForResponse((r) => r.url().includes('/api/v1/agent/replay?'));
    await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: 'Policy' }).click();
    expect(new URL((await first).url()).searchParams.get('threshold_minutes')).toBe('10,20,30,60');
    await poll(() => page.title()).toBe('Policy · Dumont');
    await poll(() => page.getByRole('link', { name: 'Policy' }).getAttribute('aria-current')).toBe('page');
    expect(await page.getByLabel('Thresholds (minutes, comma-separated)').inputValue()).toBe('10,20,30,60');
    await poll(() => page.locator('table.replay tbody tr').count()).toBe(1 + THRESHOLDS.length);
  });

  it('shows the figures the API answers for the same query, and the known ones of this history', async () => {
    await page.getByLabel('Warning (seconds)').fill('0');
    const answered = page.waitForResponse((r) => r.url().includes('/api/v1/agent/replay?'));
    await page.getByRole('button', { name: 'Replay', exact: true }).click();
    const response = await answered;
    expect(response.status()).toBe(200);
    expect(new URL(response.url()).searchParams.get('warning_seconds')).toBe('0');
    await poll(() => page.getByRole('button', { name: 'Replay', exact: true }).isEnabled()).toBe(true);

    const direct = await t.request('GET', '/api/v1/agent/replay?threshold_minutes=10,20,30,60&warning_seconds=0');
    expect(direct.status, direct.text).toBe(200);
    expect(await response.json()).toEqual(direct.json);
    const { policies, actual } = direct.json;
    // The known answers, independent of the page and of the API's arithmetic.
    expect(policies.map((p: { hibernations: number }) => p.hibernations)).toEqual(HIBERNATIONS);
    expect(policies.map((p: { regrets: unknown[] }) => p.regrets.length)).toEqual(REGRETS);
    expect(actual).toEqual({ hibernations: 0, gpu_hours_saved: 0, usd_saved: 0, regrets: [], instances: [] });

    for (const [i, threshold] of THRESHOLDS.entries()) {
      const policy = policies[i];
      expect(await cells(threshold, 'hibernations').textContent()).toBe(String(HIBERNATIONS[i]));
      expect(await cells(threshold, 'regrets').textContent()).toBe(String(REGRETS[i]));
      expect(await cells(threshold, 'gpu_hours_saved').textContent()).toBe(en(policy.gpu_hours_saved, 2));
      expect(await cells(threshold, 'usd_saved').textContent()).toBe(dollars(policy.usd_saved));
    }
    // 10 minutes: 7 asleep 30 min × 2 GPUs, 8 asleep 100 min, 9 asleep 15 min; $1.5/h × 0.5 h + $2/h × 100/60 h.
    expect(await cells(10, 'gpu_hours_saved').textContent()).toBe('2.92');
    expect(await cells(10, 'usd_saved').textContent()).toBe('$4.08');
    expect(await cells('actual', 'hibernations').textContent()).toBe('0');
    await poll(() => page.locator('.empty-replay').count()).toBe(0);
  });

  it('draws savings against regrets on the chart, and names it for a screen reader', async () => {
    const chart = page.locator('figure.policy-chart');
    await poll(() => chart.getAttribute('data-points')).toBe(String(THRESHOLDS.length));
    // Priced instances: the chart counts dollars; the regrets line is drawn beside it.
    await poll(() => page.getByRole('button', { name: 'USD', exact: true }).getAttribute('aria-pressed')).toBe('true');
    const canvas = chart.locator('canvas');
    await poll(() => pixelsOfColour(canvas, '#15803d')).toBeGreaterThan(50);
    await poll(() => pixelsOfColour(canvas, '#b42318')).toBeGreaterThan(50);
    const label = await chart.getByRole('img').getAttribute('aria-label');
    expect(label).toContain('10 min, $4.08 saved, 2 regrets');
    expect(label).toContain('60 min, $1.67 saved, 1 regret.');

    await page.getByRole('button', { name: 'GPU-hours', exact: true }).click();
    await poll(() => chart.getByRole('img').getAttribute('aria-label')).toContain('10 min, 2.92 GPU-h saved');
    await poll(() => pixelsOfColour(chart.locator('canvas'), '#15803d')).toBeGreaterThan(50);
    await page.getByRole('button', { name: 'USD', exact: true }).click();
  });

  it("lists a row's regrets, each linking to its instance, and its figures per instance", async () => {
    await page.locator('tr[data-policy="60"]').click();
    const regrets = page.locator('table.regrets tbody tr');
    await poll(() => regrets.count()).toBe(1);
    expect(await regrets.first().getAttribute('data-instance-id')).toBe('8');
    expect(await regrets.first().locator('time').first().getAttribute('datetime')).toBe(iso(start + 60 * MINUTE));
    expect(await regrets.first().locator('time').nth(1).getAttribute('datetime')).toBe(iso(start + 110 * MINUTE));
    expect(await regrets.first().locator('td').last().textContent()).toBe('50 min');
    expect(await page.locator('table.per-instance tbody tr').evaluateAll((rows: any[]) => rows.map((r) => r.dataset.instanceId))).toEqual(['8']);

    await page.getByRole('button', { name: 'Replayed at 10 min' }).click();
    await poll(() => page.getByRole('button', { name: 'Replayed at 10 min' }).getAttribute('aria-expanded')).toBe('true');
    await poll(() => regrets.evaluateAll((rows: any[]) => rows.map((r) => r.dataset.instanceId))).toEqual(['7', '9']);
    const perInstance = page.locator('table.per-instance tbody tr');
    expect(await perInstance.evaluateAll((rows: any[]) => rows.map((r) => [...r.querySelectorAll('td')].map((td: any) => td.textContent)))).toEqual([
      ['7', '1', '1', '$0.75', '1'],
      ['8', '1', '1.67', '$3.33', '0'],
      ['9', '1', '0.25', '$0.00', '1'],
    ]);
    expect(await unnamedControls(page)).toEqual([]);
    await screenshot(page, 'policy-1280');
    await page.setViewportSize({ width: 390, height: 844 });
    await poll(() => page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await screenshot(page, 'policy-390');
    await page.setViewportSize({ width: 1280, height: 900 });

    await regrets.first().getByRole('link', { name: '7' }).click();
    await poll(() => page.title()).toBe('Instance 7 · Dumont');
    await page.goBack();
    await poll(() => page.title()).toBe('Policy · Dumont');
    // The form is as it was left.
    expect(await page.getByLabel('Warning (seconds)').inputValue()).toBe('0');
  });

  it('shows a refused threshold next to its field, with no server error', async () => {
    problems.forgive(`${t.url}/api/v1/agent/replay`);
    await page.getByLabel('Thresholds (minutes, comma-separated)').fill('10,0');
    const answered = page.waitForResponse((r) => r.url().includes('/api/v1/agent/replay?'));
    await page.getByRole('button', { name: 'Replay', exact: true }).click();
    const response = await answered;
    expect(response.status()).toBe(400);
    expect(await response.json()).toMatchObject({ error: 'invalid_request', field: 'threshold_minutes' });
    const field = page.getByLabel('Thresholds (minutes, comma-separated)');
    await poll(() => field.getAttribute('aria-invalid')).toBe('true');
    await poll(() => page.locator('#policy-threshold-minutes-error').textContent()).toContain('threshold_minutes');
    expect(await field.getAttribute('aria-describedby')).toBe('policy-threshold-minutes-error');
    // No figures stand under a query the server refused.
    expect(await page.locator('table.replay').count()).toBe(0);

    await page.getByLabel('Utilization', { exact: false }).fill('150');
    await field.fill('10,20,30,60');
    await page.getByRole('button', { name: 'Replay', exact: true }).click();
    await poll(() => page.locator('#policy-utilization-percent-error').textContent()).toContain('utilization_percent');
    await poll(() => page.locator('#policy-threshold-minutes-error').count()).toBe(0);
    await page.getByLabel('Utilization', { exact: false }).fill('');
  });

  it('says so when nothing was recorded in the range asked', async () => {
    // Two hours before the history began: inside raw retention, and empty.
    const local = (ms: number) => iso(ms).slice(0, 19);
    await page.getByLabel('From', { exact: true }).fill(local(start - 3 * 60 * MINUTE));
    await page.getByLabel('To', { exact: true }).fill(local(start - 60 * MINUTE));
    const answered = page.waitForResponse((r) => r.url().includes('/api/v1/agent/replay?'));
    await page.getByRole('button', { name: 'Replay', exact: true }).click();
    const query = new URL((await answered).url()).searchParams;
    expect(query.get('from')).toBe(iso(start - 3 * 60 * MINUTE));
    expect(query.get('to')).toBe(iso(start - 60 * MINUTE));
    await poll(() => page.locator('.empty-replay').textContent()).toContain('Nothing to compare');
    expect(await cells(10, 'hibernations').textContent()).toBe('0');
    expect(await page.locator('figure.policy-chart').count()).toBe(0);
  });

  it('logged no console error or warning and threw nothing in the whole run', async () => {
    expect(problems.unforgiven()).toEqual([]);
    await page.close();
  });
});
