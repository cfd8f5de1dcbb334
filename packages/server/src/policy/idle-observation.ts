import type { BeatIdleFacts } from '@dumont/protocol';

/**
 * What one heartbeat tells the policy: the beat's facts (judged by `judgeIdle` from
 * @dumont/protocol, the one per-beat rule, shared with the agent's last check before a hook), mapped
 * onto the server clock.
 */
export interface IdleObservation extends BeatIdleFacts {
  /** The agent's last_activity mapped onto the server clock (ms), or null. */
  lastActivityAt: number | null;
  /**
   * When the agent collected these facts, on the server clock (estimated through the agent's clock
   * offset at its previous beat). A hibernation fires only on facts younger than the freshness window.
   */
  observedAt: number;
  /** The agent reports that the hook of the instance's hibernate command is running right now. */
  hibernateHookRunning: boolean;
  /** Why the policy's external activity signals say the machine is in use (or cannot tell); null = all idle or none. */
  signalActivity?: string | null;
}
