import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../../server/src/admin-key.js';
import { T0, type TestServer } from '../../server/src/test-support/test-server.js';
import { chromiumMissing, launchChromium, PageProblems, poll, startDashboardServer } from './browser-support.js';

/**
 * The admin limits as an owner meets them in a real Chromium: the instance page says what owners may
 * set, and a value beyond a limit is refused under its field with the limit named.
 */

describe.skipIf(chromiumMissing('admin limits browser suite'))('admin limits in a real browser', () => {
  let t: TestServer;
  let stopServer: (() => Promise<void>) | undefined;
  let browser: Browser;
  let page: Page;
  const problems = new PageProblems();

  beforeAll(async () => {
    ({ t, close: stopServer } = await startDashboardServer({
      env: { DUMONT_MAX_THRESHOLD_MINUTES: '120', DUMONT_KEEP_ALIVE_BUDGET_MINUTES: '90', DUMONT_OWNER_MAY_DISABLE: 'off' },
    }));
    const aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
    expect((await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 61, hostname: 'gpu-61' }, token: aliceKey })).status).toBe(201);
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
    problems.watch(page);
    // The refusals this suite provokes on purpose log a 403 in the console.
    problems.forgive('/api/v1/agent/instances/61');
    await page.goto(`${t.url}#/instances/61`);
    await page.getByLabel('API key').fill(aliceKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'gpu-61' }).waitFor();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await stopServer?.();
  });

  it('says what owners may set, and refuses more under the field, naming the limit', async () => {
    await poll(() => page.locator('[data-hint="hibernation-limits"]').textContent()).toBe(
      'Owners may set up to 120 min, and may not turn hibernation off or to dry run.',
    );
    await poll(() => page.locator('[data-hint="keep-alive-limits"]').textContent()).toBe('Owners: up to 1440 min a time; 90 of 90 min left in 24 h.');

    await page.getByLabel('Idle threshold (minutes)').fill('600');
    await page.getByRole('button', { name: 'Save' }).click();
    await poll(() => page.locator('#threshold-error').textContent()).toContain('DUMONT_MAX_THRESHOLD_MINUTES');
    expect((await t.request('GET', '/api/v1/agent/instances/61')).json.hibernation.threshold_minutes).not.toBe(600);

    await page.getByLabel('Keep alive for (minutes)').fill('60');
    await page.getByRole('button', { name: 'Keep alive' }).click();
    await poll(() => page.locator('[data-hint="keep-alive-limits"]').textContent()).toBe('Owners: up to 1440 min a time; 30 of 90 min left in 24 h.');
    await page.getByLabel('Keep alive for (minutes)').fill('45');
    await page.getByRole('button', { name: 'Keep alive' }).click();
    await poll(() => page.locator('#keep-alive-error').textContent()).toContain('DUMONT_KEEP_ALIVE_BUDGET_MINUTES');
    expect(problems.unforgiven()).toEqual([]);
  });
});
