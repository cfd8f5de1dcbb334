#!/usr/bin/env node
// `npm install` links a workspace's bin only if the file exists at that moment, before anything is
// built: this file is committed, and runs the CLI that `npm run build` (also run by `npm start` and
// `npm test`) compiles.
import { existsSync } from 'node:fs';

const main = new URL('../dist/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('dumont-server: not built yet; run `npm run build` (or `npm start`) in the repository first\n');
  process.exit(1);
}
await import(main.href);
