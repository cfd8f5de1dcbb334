/**
 * A binary min-heap of (due time, item). 100k agents wait here for their next beat instead of holding
 * 100k timers; equal times come out in the order they went in.
 */
export class TimerHeap<T> {
  private ats: number[] = [];
  private seqs: number[] = [];
  private items: T[] = [];
  private seq = 0;

  get size(): number {
    return this.items.length;
  }

  push(at: number, item: T): void {
    this.ats.push(at);
    this.seqs.push(this.seq++);
    this.items.push(item);
    this.up(this.items.length - 1);
  }

  /** The earliest due time, or Infinity when empty. */
  peekAt(): number {
    return this.items.length > 0 ? this.ats[0]! : Infinity;
  }

  pop(): { at: number; item: T } | undefined {
    const n = this.items.length;
    if (n === 0) return undefined;
    const at = this.ats[0]!;
    const item = this.items[0]!;
    const lastAt = this.ats.pop()!;
    const lastSeq = this.seqs.pop()!;
    const lastItem = this.items.pop()!;
    if (n > 1) {
      this.ats[0] = lastAt;
      this.seqs[0] = lastSeq;
      this.items[0] = lastItem;
      this.down(0);
    }
    return { at, item };
  }

  private less(a: number, b: number): boolean {
    const da = this.ats[a]!;
    const db = this.ats[b]!;
    return da < db || (da === db && this.seqs[a]! < this.seqs[b]!);
  }

  private swap(a: number, b: number): void {
    [this.ats[a], this.ats[b]] = [this.ats[b]!, this.ats[a]!];
    [this.seqs[a], this.seqs[b]] = [this.seqs[b]!, this.seqs[a]!];
    [this.items[a], this.items[b]] = [this.items[b]!, this.items[a]!];
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const n = this.items.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let smallest = i;
      if (l < n && this.less(l, smallest)) smallest = l;
      if (r < n && this.less(r, smallest)) smallest = r;
      if (smallest === i) return;
      this.swap(i, smallest);
      i = smallest;
    }
  }
}
