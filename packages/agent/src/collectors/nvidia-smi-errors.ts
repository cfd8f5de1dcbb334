/**
 * What a failed nvidia-smi run means, from its exit code and output. Pure, so each captured driver
 * failure is a test row. The text decides the reason (exit codes differ between driver versions);
 * the message always carries nvidia-smi's own first line so an operator can search for it.
 */
export type NvidiaSmiFailureReason =
  | 'driver-unreachable'
  | 'library-version-mismatch'
  | 'gpu-lost'
  | 'device-handle-error'
  | 'no-devices'
  | 'failed';

const PATTERNS: Array<[RegExp, NvidiaSmiFailureReason, string]> = [
  [/couldn't communicate with the NVIDIA driver/i, 'driver-unreachable', 'the NVIDIA driver is not loaded or not answering'],
  [/Driver\/library version mismatch/i, 'library-version-mismatch', 'the NVIDIA library and kernel module versions differ (reboot or reload the driver)'],
  [/GPU is lost/i, 'gpu-lost', 'a GPU fell off the bus'],
  [/Unable to determine the device handle/i, 'device-handle-error', 'a GPU does not answer'],
  [/No devices were found/i, 'no-devices', 'the driver sees no GPU'],
];

export interface NvidiaSmiFailure {
  reason: NvidiaSmiFailureReason;
  message: string;
}

export function firstMeaningfulLine(text: string): string | null {
  const line = text.split(/\r?\n/).find((l) => l.trim() !== '');
  return line === undefined ? null : line.trim();
}

export function classifyNvidiaSmiFailure(exitCode: number | null, output: string): NvidiaSmiFailure {
  const code = exitCode === null ? 'was killed' : `exited with code ${exitCode}`;
  const said = firstMeaningfulLine(output);
  const quoted = said === null ? '' : `: ${said.length > 300 ? `${said.slice(0, 300)}…` : said}`;
  for (const [pattern, reason, meaning] of PATTERNS) {
    if (pattern.test(output)) return { reason, message: `${meaning}; nvidia-smi ${code}${quoted}` };
  }
  return { reason: 'failed', message: `nvidia-smi ${code}${quoted}` };
}
