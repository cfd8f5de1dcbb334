import { appendFileSync } from 'node:fs';

/**
 * The adversarial suites (`*.adversarial.test.ts`) run at one size in `npm test` and at a larger one
 * under `npm run soak`, which sets DUMONT_SOAK=1. Each suite records the figures it measured; the soak
 * script collects them (DUMONT_RELIABILITY_OUT, one JSON object a line) into docs/RELIABILITY.md.
 */
export const SOAK = process.env.DUMONT_SOAK === '1';

/** `test` in `npm test`, `soak` under `npm run soak`. */
export const scaled = (test: number, soak: number): number => (SOAK ? soak : test);

export interface Figure {
  /** The suite, as a heading of docs/RELIABILITY.md (e.g. "Fuzz over HTTP"). */
  suite: string;
  /** What was measured, in words (e.g. "generated requests", "5xx answers"). */
  figure: string;
  value: string | number;
  /** Anything worth a footnote: the backend, the seed, the machine. */
  note?: string;
}

export function recordFigure(figure: Figure): void {
  const out = process.env.DUMONT_RELIABILITY_OUT;
  if (!out) return;
  appendFileSync(out, `${JSON.stringify({ ...figure, file: callingTestFile(), soak: SOAK })}\n`);
}

/** The test file that recorded a figure (repository-relative), so the report can say how to rerun it. */
function callingTestFile(): string | null {
  for (const line of new Error().stack?.split('\n') ?? []) {
    const match = /(packages\/[^\s:()]+\.test\.ts)/.exec(line);
    if (match) return match[1]!;
  }
  return null;
}
