import type { InstanceStatus } from '@dumont/protocol';
import { STATUS_LABELS } from './format.js';

/** The status as a word, coloured as a hint: colour is never the only carrier. */
export function StatusBadge({ status }: { status: InstanceStatus }) {
  return <span class={`badge status-${status}`}>{STATUS_LABELS[status] ?? status}</span>;
}
