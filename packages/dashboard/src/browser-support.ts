import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { expect } from 'vitest';
import { SqliteStore } from '../../server/src/store/sqlite-store.js';
import { TestServer } from '../../server/src/test-support/test-server.js';

/** What the browser suites share: the Chromium they drive, the page built from the sources now, and their checks. */

export const CHROMIUM = process.env.DUMONT_CHROMIUM ?? '/usr/bin/chromium';
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const SCREENSHOTS = join(REPO_ROOT, 'test-output', 'dashboard');
const BUILD_SCRIPT = fileURLToPath(new URL('../scripts/build.mjs', import.meta.url));

/** True (with a warning) when the suite must be skipped; under CI=true a missing Chromium is an error instead. */
export function chromiumMissing(suite: string): boolean {
  const missing = !existsSync(CHROMIUM);
  if (missing && process.env.CI === 'true') throw new Error(`${CHROMIUM} is missing; under CI=true the ${suite} must run`);
  if (missing) console.warn(`skipping the ${suite}: no Chromium at ${CHROMIUM} (set DUMONT_CHROMIUM)`);
  return missing;
}

/** The page under test is the one built from these sources now, not whatever dist/ holds. */
export function buildDashboard(outdir: string): void {
  execFileSync(process.execPath, [BUILD_SCRIPT, '--outdir', outdir], { stdio: 'pipe' });
}

/**
 * The real server over SQLite in a temporary folder, serving the page built from these sources, its
 * manual clock at `clockAt`; `close()` stops it and removes the folder.
 */
export async function startDashboardServer(options: { env?: Record<string, string>; clockAt?: number } = {}): Promise<{ t: TestServer; close: () => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'dumont-browser-'));
  buildDashboard(join(dataDir, 'ui'));
  const store = await SqliteStore.open(join(dataDir, 'dumont.db'));
  const t = new TestServer(async () => store, options.env);
  t.dashboardDir = join(dataDir, 'ui');
  t.clock.set(options.clockAt ?? Date.now());
  await t.start();
  return {
    t,
    close: async () => {
      await t.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function launchChromium(): Promise<Browser> {
  // Chromium's sandbox refuses to start as root (containers); as any other user it stays on.
  return chromium.launch({ executablePath: CHROMIUM, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
}

/** The page answers at its own pace on a loaded machine: every check of it waits (up to 10 s) instead of reading once. */
export const poll = <T>(read: () => T | Promise<T>, options: { timeout?: number } = {}) =>
  expect.poll(read, { interval: 50, ...options, timeout: Math.max(10_000, options.timeout ?? 0) });

/**
 * Console errors and warnings and uncaught errors of the pages watched. A step that provokes a refusal
 * on purpose forgives the 4xx the browser logs for that URL; anything else logged stays a failure.
 */
export class PageProblems {
  private readonly problems: string[] = [];
  private readonly forgiven: string[] = [];

  watch(page: Page): void {
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') {
        this.problems.push(`console ${message.type()}: ${message.text()} (${message.location().url})`);
      }
    });
    page.on('pageerror', (error) => this.problems.push(`page error: ${error.message}`));
  }

  forgive(url: string): void {
    this.forgiven.push(url);
  }

  logged(): string[] {
    return [...this.problems];
  }

  unforgiven(): string[] {
    return this.problems.filter((p) => !(/status of 4\d\d/.test(p) && this.forgiven.some((url) => p.includes(url))));
  }
}

/** Every control has a name a screen reader reads out, as Chromium computes it. */
export async function unnamedControls(page: Page): Promise<string[]> {
  const cdp = await page.context().newCDPSession(page);
  const { nodes } = (await cdp.send('Accessibility.getFullAXTree')) as {
    nodes: { ignored: boolean; role?: { value: string }; name?: { value: string }; backendDOMNodeId?: number }[];
  };
  await cdp.detach();
  const controls = new Set(['button', 'textbox', 'searchbox', 'spinbutton', 'checkbox', 'combobox', 'link', 'radio', 'switch', 'slider']);
  // A page that has not drawn its controls yet would pass for one whose controls all have names.
  const controlCount = await page.evaluate(() => (globalThis as any).document.querySelectorAll('button, input, select, textarea').length);
  expect(controlCount).toBeGreaterThan(5);
  return nodes
    .filter((n) => !n.ignored && controls.has(n.role?.value ?? '') && !(n.name?.value ?? '').trim())
    .map((n) => `${n.role?.value} #${n.backendDOMNodeId}`);
}

export async function screenshot(page: Page, name: string, fullPage = true): Promise<string> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage });
  return path;
}

// Callbacks given to `page.evaluate` run in the page; tests are typechecked without the DOM library.
interface Canvas {
  width: number;
  height: number;
  ownerDocument: { createElement(tag: 'canvas'): Canvas };
  getContext(
    kind: '2d',
    options?: { willReadFrequently: boolean },
  ): { drawImage(source: Canvas, x: number, y: number): void; getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } | null;
}

/** How many opaque pixels of a canvas are near `#rrggbb`: a series drawn in a colour nothing else there uses. */
export function pixelsOfColour(canvas: Locator, hex: string): Promise<number> {
  const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return canvas.evaluate((c: Canvas, [r, g, b]: number[]) => {
    // Read a copy: repeated reads of the chart's own canvas make Chromium warn that it should be a readback canvas.
    const copy = c.ownerDocument.createElement('canvas');
    copy.width = c.width;
    copy.height = c.height;
    const context = copy.getContext('2d', { willReadFrequently: true })!;
    context.drawImage(c, 0, 0);
    const { data } = context.getImageData(0, 0, c.width, c.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (Math.abs(data[i]! - r!) < 24 && Math.abs(data[i + 1]! - g!) < 24 && Math.abs(data[i + 2]! - b!) < 24 && data[i + 3]! > 200) n++;
    }
    return n;
  }, rgb);
}
