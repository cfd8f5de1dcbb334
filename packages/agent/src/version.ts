import { readFileSync } from 'node:fs';

/** The agent's own package.json: `version` is what `agent_version` reports, `name` what `update` installs. */
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { name: string; version: string };

export const AGENT_PACKAGE = pkg.name;
export const AGENT_VERSION = pkg.version;
