import { useEffect, useRef, useState } from 'preact/hooks';

export const POLL_MS = 5000;

/**
 * Runs `load` now, whenever `deps` change, and every `intervalMs` while the tab is visible; a tab that
 * becomes visible again refreshes at once. A tick never starts a second load while one runs. `load` gets
 * `isCurrent()`: false once `deps` changed or a refresh started, so an answer that arrives late for a view
 * the user left is dropped instead of painted over a newer one. Returns `refresh()` (after an action).
 */
export function usePoll(load: (isCurrent: () => boolean) => Promise<void>, intervalMs: number, deps: readonly unknown[]): () => Promise<void> {
  const latest = useRef(load);
  latest.current = load;
  const state = useRef({ generation: 0, busy: false });
  const run = useRef(async () => {
    const s = state.current;
    if (s.busy) return;
    const generation = s.generation;
    s.busy = true;
    try {
      await latest.current(() => generation === s.generation);
    } finally {
      if (generation === s.generation) s.busy = false;
    }
  });
  const refresh = useRef(() => {
    state.current.generation++;
    state.current.busy = false;
    return run.current();
  });

  useEffect(() => {
    void refresh.current();
    let timer: ReturnType<typeof setInterval> | null = null;
    const start = () => {
      timer ??= setInterval(() => void run.current(), intervalMs);
    };
    const stop = () => {
      if (timer !== null) clearInterval(timer);
      timer = null;
    };
    const onVisibility = () => {
      if (document.visibilityState === 'visible') {
        void run.current();
        start();
      } else {
        stop();
      }
    };
    if (document.visibilityState === 'visible') start();
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      stop();
      state.current.generation++;
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, deps);

  return refresh.current;
}

/** The browser's clock, re-read every second: drives countdowns and relative times. */
export function useNow(): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  return now;
}

export function useDebounced<T>(value: T, delayMs: number): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), delayMs);
    return () => clearTimeout(timer);
  }, [value, delayMs]);
  return settled;
}

/** Seconds left of a countdown the server gave at `fetchedAt` (browser clock, ms). */
export function remaining(secondsAtFetch: number | null | undefined, fetchedAt: number, now: number): number | null {
  if (secondsAtFetch === null || secondsAtFetch === undefined) return null;
  return Math.max(0, secondsAtFetch - Math.floor((now - fetchedAt) / 1000));
}
