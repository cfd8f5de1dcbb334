import { defineConfig } from 'vitest/config';

const BROWSER_SUITE = 'packages/dashboard/src/*.browser.test.ts';

export default defineConfig({
  test: {
    // Tests start real servers, databases and child processes; two workers suit the 2-core CI box.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 30_000,
    projects: [
      {
        extends: true,
        test: { name: 'suites', include: ['packages/*/src/**/*.test.ts'], exclude: [BROWSER_SUITE], sequence: { groupOrder: 0 } },
      },
      {
        // Chromium takes a core to itself: run after the rest, so that no suite with a pace to keep
        // (simulated agents beating, timeouts) shares the machine with it.
        extends: true,
        test: { name: 'browser', include: [BROWSER_SUITE], sequence: { groupOrder: 1 } },
      },
    ],
  },
});
