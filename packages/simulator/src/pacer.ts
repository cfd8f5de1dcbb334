import { performance } from 'node:perf_hooks';
import { TimerHeap } from './timer-heap.js';

export interface PacerOptions<T> {
  /** At most this many `run` calls are in progress at once. */
  concurrency: number;
  run: (item: T, lateMs: number) => Promise<void>;
  onError?: (error: unknown, item: T) => void;
  now?: () => number;
}

/**
 * Runs each scheduled item at its due time, never more than `concurrency` at once, from one timer.
 * When the limit is reached, due items wait (earliest first) and their lateness is reported, so an
 * overloaded server shows up as lag instead of as an ever-growing pile of sockets.
 */
export class Pacer<T> {
  private readonly heap = new TimerHeap<T>();
  private readonly now: () => number;
  private timer: NodeJS.Timeout | null = null;
  private armedAt = Infinity;
  private running = 0;
  private stopped = false;
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly options: PacerOptions<T>) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) throw new Error('concurrency must be a whole number ≥ 1');
    this.now = options.now ?? (() => performance.now());
  }

  get inFlight(): number {
    return this.running;
  }

  get waiting(): number {
    return this.heap.size;
  }

  /** `at` is on the pacer's clock (performance.now() milliseconds unless `now` was given). */
  schedule(at: number, item: T): void {
    if (this.stopped) return;
    this.heap.push(at, item);
    if (at < this.armedAt) this.arm();
  }

  /** Starts nothing more; resolves once every run in progress has finished. Items still waiting are dropped. */
  stop(): Promise<void> {
    this.stopped = true;
    this.disarm();
    return this.running === 0 ? Promise.resolve() : new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    if (this.stopped) return;
    const now = this.now();
    while (this.running < this.options.concurrency && this.heap.peekAt() <= now) {
      const { at, item } = this.heap.pop()!;
      this.start(item, now - at);
    }
    this.arm();
  }

  private start(item: T, lateMs: number): void {
    this.running += 1;
    let promise: Promise<void>;
    try {
      promise = this.options.run(item, lateMs);
    } catch (error) {
      promise = Promise.reject(error);
    }
    promise
      .catch((error) => this.options.onError?.(error, item))
      .finally(() => {
        this.running -= 1;
        if (this.stopped) {
          if (this.running === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
          return;
        }
        this.pump();
      });
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.armedAt = Infinity;
  }

  /** One timer for the earliest item; when every slot is busy, a finishing run pumps instead. */
  private arm(): void {
    const next = this.heap.peekAt();
    if (this.stopped || next === Infinity || this.running >= this.options.concurrency) {
      this.disarm();
      return;
    }
    if (this.timer && next >= this.armedAt) return;
    this.disarm();
    this.armedAt = next;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.armedAt = Infinity;
        this.pump();
      },
      Math.max(0, next - this.now()),
    );
  }
}
