/**
 * Messages ready for delivery, kept in seq order. Publishes append at the tail
 * and fetches take from the head, both O(1); requeued messages are merged back
 * at their seq position (usually the head).
 */
export interface Sequenced {
  seq: number;
}

export class ReadyList<T extends Sequenced> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  /** Appends; `item.seq` must be greater than every seq held (publishes are in seq order). */
  push(item: T): void {
    const n = this.items.length;
    if (n > this.head && this.items[n - 1].seq >= item.seq) {
      this.insert([item]);
      return;
    }
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    (this.items as (T | undefined)[])[this.head] = undefined;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  at(i: number): T | undefined {
    return this.items[this.head + i];
  }

  /** Merges items (any order) back into seq order. */
  insert(batch: T[]): void {
    if (batch.length === 0) return;
    const sorted = [...batch].sort((a, b) => a.seq - b.seq);
    const first = this.at(0);
    if (first === undefined || sorted[sorted.length - 1].seq < first.seq) {
      // The common case: everything goes in front of the current head.
      if (this.head >= sorted.length) {
        this.head -= sorted.length;
        for (let i = 0; i < sorted.length; i++) this.items[this.head + i] = sorted[i];
      } else {
        this.items = sorted.concat(this.items.slice(this.head));
        this.head = 0;
      }
      return;
    }
    const merged: T[] = [];
    let i = this.head;
    let j = 0;
    while (i < this.items.length || j < sorted.length) {
      if (j >= sorted.length || (i < this.items.length && this.items[i].seq < sorted[j].seq)) merged.push(this.items[i++]);
      else merged.push(sorted[j++]);
    }
    this.items = merged;
    this.head = 0;
  }

  /** Removes and returns everything. */
  clear(): T[] {
    const all = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return all;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i];
  }

  /** The item of seq `seq`, if held (binary search). */
  get(seq: number): T | undefined {
    const item = this.at(this.firstAfter(seq, true));
    return item?.seq === seq ? item : undefined;
  }

  /** Index of the first item with seq > `seq`, or ≥ `seq` when `inclusive` (binary search). */
  firstAfter(seq: number, inclusive = false): number {
    let lo = this.head;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const s = this.items[mid].seq;
      if (s < seq || (!inclusive && s === seq)) lo = mid + 1;
      else hi = mid;
    }
    return lo - this.head;
  }
}
