import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../../server/src/test-support/test-server.js';
import { chromiumMissing, launchChromium, PageProblems, poll, screenshot, startDashboardServer, unnamedControls } from './browser-support.js';

/**
 * Labels in a real Chromium against the real server over SQLite: the list's label filter (and the
 * savings it sums), and the instance page's label editor, as an operator uses them.
 */

const FLEET = [
  { id: 21, labels: { team: 'vision', kind: 'notebook' } },
  { id: 22, labels: { team: 'vision', kind: 'training' } },
  { id: 23, labels: { team: 'speech', kind: 'notebook' } },
  { id: 24, labels: {} },
] as const;

describe.skipIf(chromiumMissing('labels browser suite'))('labels in a real browser', () => {
  let t: TestServer;
  let stopServer: (() => Promise<void>) | undefined;
  let browser: Browser;
  let page: Page;
  const problems = new PageProblems();

  beforeAll(async () => {
    ({ t, close: stopServer } = await startDashboardServer());
    for (const instance of FLEET) {
      const res = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: instance.id, hostname: `gpu-${instance.id}`, labels: instance.labels } });
      expect(res.status, res.text).toBe(201);
    }
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
    problems.watch(page);
    // The refusals this suite provokes on purpose (a bad selector, a bad key) log a 400 in the console.
    problems.forgive('/api/v1/agent/instances');
    problems.forgive('/api/v1/agent/savings');
    await page.goto(t.url);
    await page.getByLabel('API key').fill(t.adminKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Log out' }).waitFor();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await stopServer?.();
  });

  const listed = () => page.locator('table.instances tbody tr[data-instance-id]').evaluateAll((rows) => rows.map((r) => Number((r as { dataset: { instanceId: string } }).dataset.instanceId)));

  it('shows each instance’s labels and filters the list, and its savings, by a selector', async () => {
    await poll(listed).toEqual([21, 22, 23, 24]);
    const row = page.locator('tr[data-instance-id="21"]');
    expect(await row.getByRole('list', { name: 'Labels' }).getByRole('listitem').allTextContents()).toEqual(['kind=notebook', 'team=vision']);
    expect(await page.locator('tr[data-instance-id="24"] ul.labels').count()).toBe(0);

    const listRequest = page.waitForRequest((r) => r.url().includes('/api/v1/agent/instances?') && r.url().includes('label='));
    const savingsRequest = page.waitForRequest((r) => r.url().includes('/api/v1/agent/savings?'));
    await page.getByLabel('Label selector').fill('team=vision, kind=notebook');
    expect(new URL((await listRequest).url()).searchParams.getAll('label')).toEqual(['team=vision', 'kind=notebook']);
    expect(new URL((await savingsRequest).url()).searchParams.getAll('label')).toEqual(['team=vision', 'kind=notebook']);
    await poll(listed).toEqual([21]);
    await page.getByLabel('Label selector').fill('team=vision');
    await poll(listed).toEqual([21, 22]);
    // The same answer as the API for the same selector.
    const direct = await t.request('GET', '/api/v1/agent/instances?label=team=vision');
    expect(direct.json.instances.map((i: { instance_id: number }) => i.instance_id)).toEqual([21, 22]);

    await page.getByLabel('Label selector').fill('Team=vision');
    await poll(() => page.getByRole('alert').first().textContent()).toContain('Team');
    await page.getByLabel('Label selector').fill('');
    await poll(listed).toEqual([21, 22, 23, 24]);
    expect(await unnamedControls(page)).toEqual([]);
  });

  it('sets and removes a label on the instance page, and refuses a bad key under its field', async () => {
    await page.locator('tr[data-instance-id="24"] a').click();
    const card = page.locator('section[aria-labelledby="labels-title"]');
    await poll(() => card.getByText('No labels.').isVisible()).toBe(true);

    await card.getByLabel('Key').fill('team');
    await card.getByLabel('Value').fill('speech');
    await card.getByRole('button', { name: 'Set label' }).click();
    await poll(() => card.getByRole('listitem').allTextContents()).toEqual(['team=speech×']);
    expect((await t.request('GET', '/api/v1/agent/instances/24')).json.labels).toEqual({ team: 'speech' });

    await card.getByLabel('Key').fill('Bad Key');
    await card.getByLabel('Value').fill('x');
    await card.getByRole('button', { name: 'Set label' }).click();
    await poll(() => card.locator('#label-error').textContent()).toMatch(/Bad Key|key/);
    expect(await card.getByLabel('Key').getAttribute('aria-invalid')).toBe('true');
    expect((await t.request('GET', '/api/v1/agent/instances/24')).json.labels).toEqual({ team: 'speech' });

    await card.getByRole('button', { name: 'Remove label team' }).click();
    await poll(() => card.getByText('No labels.').isVisible()).toBe(true);
    expect((await t.request('GET', '/api/v1/agent/instances/24')).json.labels).toEqual({});
    await screenshot(page, 'instance-labels');
    expect(problems.unforgiven()).toEqual([]);
  });
});
