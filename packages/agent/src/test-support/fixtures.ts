import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The real nvidia-smi captures copied into the package (see test-fixtures/nvidia-smi/SOURCES.md). */
export const NVIDIA_SMI_FIXTURES = fileURLToPath(new URL('../../test-fixtures/nvidia-smi/', import.meta.url));

export function nvidiaSmiFixture(name: string): string {
  return readFileSync(`${NVIDIA_SMI_FIXTURES}${name}`, 'utf8');
}

export function nvidiaSmiFixtureNames(prefix: string, dir = ''): string[] {
  return readdirSync(`${NVIDIA_SMI_FIXTURES}${dir}`)
    .filter((f) => f.startsWith(prefix))
    .sort();
}
