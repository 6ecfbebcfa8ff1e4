/**
 * A queue's ready messages, in seq order, with bounded memory. The invariant:
 *
 *     head  <  delta [lo, hi)  ≤  tail        (by seq)
 *
 * - `head`: what fetch and peek take next, at most a head window of it
 *   refilled at a time;
 * - `delta`: a seq range whose persistent messages live only in the queue
 *   index, kept as a count and bytes; the transient messages of that range
 *   stay in memory in `deltaTransient` (their bodies paged out to the
 *   transient store when the queue has one);
 * - `tail`: recent publishes. A tail past its window is dropped to the delta
 *   whole (its persistent messages are in the index already); the head is
 *   refilled from the delta a page of the index at a time, or takes the whole
 *   tail when the delta is empty.
 *
 * The windows know nothing of pending acks except which seqs are pending (the
 * index still lists them as live, and a refill must skip them).
 */
import type { Logger } from '../util/logger';
import { QueueIndex } from './queue-index';
import { BodyStore, fromEntry, isStored, Message } from './messages';
import { ReadyList } from './ready-list';

/** Persistent ready messages of seqs [lo, hi) that live only in the queue index. */
export interface Delta {
  lo: number;
  hi: number;
  count: number;
  bytes: number;
}

export interface ReadyWindowsOptions {
  name: string;
  /** The queue index, for a durable queue: without it nothing spills. */
  index?: QueueIndex;
  /** The transient store, if the queue has one: transient bodies spilled go there. */
  pager?: BodyStore;
  headWindow: number;
  tailWindow: number;
  log: Logger;
  /** Whether `seq` is a pending ack (live in the index, not ready). */
  isUnacked: (seq: number) => boolean;
  /** Messages counted in the delta that the index turned out not to hold (never expected). */
  onLost: (count: number, bytes: number) => void;
}

export class ReadyWindows {
  readonly head = new ReadyList<Message>();
  readonly tail = new ReadyList<Message>();
  readonly delta: Delta = { lo: 0, hi: 0, count: 0, bytes: 0 };
  /** Transient ready messages whose seq falls in the delta range. */
  readonly deltaTransient = new ReadyList<Message>();
  /** Transient messages whose body is in the transient store. */
  private pagedCount = 0;

  constructor(private readonly o: ReadyWindowsOptions) {}

  get length(): number {
    return this.head.length + this.tail.length + this.delta.count + this.deltaTransient.length;
  }

  /** Messages held in memory by the windows. */
  get held(): number {
    return this.head.length + this.tail.length + this.deltaTransient.length;
  }

  get paged(): number {
    return this.pagedCount;
  }

  deltaEmpty(): boolean {
    return this.delta.count === 0 && this.deltaTransient.length === 0;
  }

  /** Everything recovered from the index starts in the delta; the first fetch or peek reads the head. */
  recovered(nextSeq: number, count: number, bytes: number): void {
    Object.assign(this.delta, { lo: 0, hi: nextSeq, count, bytes });
  }

  /** A message published ready joins, at the head while everything fits there, else at the tail. */
  add(m: Message): void {
    if (this.deltaEmpty() && this.tail.length === 0 && this.head.length < this.o.headWindow) {
      this.head.push(m);
    } else {
      this.tail.push(m);
      if (this.tail.length > this.o.tailWindow && (this.o.index || this.o.pager)) this.spillTail();
    }
  }

  /** The first ready message, left in place. */
  async first(): Promise<Message | undefined> {
    if (this.head.length === 0) await this.refill();
    return this.head.at(0);
  }

  /** Takes the first ready message. */
  async shift(): Promise<Message | undefined> {
    await this.first();
    return this.head.shift();
  }

  /** Refills the head until it holds `n` messages or nothing is left. */
  async fillHead(n: number): Promise<void> {
    while (this.head.length < n && (await this.refill()) > 0);
  }

  /** Pending acks back to the ready messages, each where its seq belongs. */
  requeue(ms: readonly Message[]): void {
    const toHead: Message[] = [];
    const toTail: Message[] = [];
    const toDelta: Message[] = [];
    const d = this.delta;
    for (const m of ms) {
      if (!this.deltaEmpty()) {
        if (m.seq < d.lo) toHead.push(m);
        else if (m.seq >= d.hi) toTail.push(m);
        else if (isStored(m)) {
          // Still live in the index: counting it is enough.
          d.count++;
          d.bytes += m.size;
        } else toDelta.push(m);
      } else if (this.tail.length > 0 && m.seq > this.tail.at(0)!.seq) {
        toTail.push(m);
      } else {
        toHead.push(m);
      }
    }
    this.head.insert(toHead);
    this.tail.insert(toTail);
    this.deltaTransient.insert(toDelta);
  }

  /** Ready messages of seq > afterSeq, at most `max` from each part, in no particular order. */
  async after(afterSeq: number, max: number): Promise<Message[]> {
    const picked: Message[] = [];
    const fromList = (l: ReadyList<Message>) => {
      for (let i = l.firstAfter(afterSeq), n = 0; n < max; i++, n++) {
        const m = l.at(i);
        if (!m) break;
        picked.push(m);
      }
    };
    fromList(this.head);
    if (!this.deltaEmpty() && this.delta.hi > afterSeq + 1) {
      if (this.delta.count > 0) {
        const r = await this.o.index!.readLive(Math.max(this.delta.lo, afterSeq + 1), this.delta.hi, max, this.o.isUnacked);
        for (const e of r.entries) picked.push(fromEntry(e));
      }
      fromList(this.deltaTransient);
    }
    fromList(this.tail);
    return picked;
  }

  /** Removes every message held in memory and returns them; the delta's range and counts stay (see resetDelta). */
  clearHeld(): Message[] {
    return [...this.head.clear(), ...this.deltaTransient.clear(), ...this.tail.clear()];
  }

  resetDelta(): void {
    Object.assign(this.delta, { lo: 0, hi: 0, count: 0, bytes: 0 });
  }

  /** The ready message `seq` if it is held in memory. */
  get(seq: number): Message | undefined {
    return this.head.get(seq) ?? this.tail.get(seq) ?? this.deltaTransient.get(seq);
  }

  /** Every ready message held in memory. */
  *[Symbol.iterator](): IterableIterator<Message> {
    yield* this.head;
    yield* this.deltaTransient;
    yield* this.tail;
  }

  /** Releases the transient store's references of paged messages leaving the queue. */
  release(ms: Iterable<Message>): void {
    const ids: Buffer[] = [];
    for (const m of ms) {
      if (!m.paged) continue;
      m.paged = false;
      ids.push(m.id);
    }
    if (ids.length === 0) return;
    this.pagedCount -= ids.length;
    this.o.pager!.remove(ids);
  }

  /** Moves a transient message's body to the transient store, if the queue has one. */
  private pageOut(m: Message): void {
    if (!this.o.pager || !m.body) return;
    this.o.pager.write(m.id, m.body);
    m.body = undefined;
    m.paged = true;
    this.pagedCount++;
  }

  /** Drops the tail to the delta: its persistent messages are in the index already. */
  private spillTail(): void {
    const ms = this.tail.clear();
    if (ms.length === 0) return;
    if (this.deltaEmpty()) this.delta.lo = ms[0].seq;
    for (const m of ms) {
      if (isStored(m)) {
        this.delta.count++;
        this.delta.bytes += m.size;
      } else {
        this.pageOut(m);
        this.deltaTransient.push(m);
      }
    }
    this.delta.hi = ms[ms.length - 1].seq + 1;
  }

  /**
   * Appends the next ready messages to the head: a page of the delta, or the
   * whole tail when the delta is empty. Returns how many were moved.
   */
  private async refill(): Promise<number> {
    if (this.deltaEmpty()) {
      const ms = this.tail.clear();
      for (const m of ms) this.head.push(m);
      return ms.length;
    }
    const d = this.delta;
    let ms: Message[] = [];
    let next = d.hi;
    if (d.count > 0) {
      const r = await this.o.index!.readLive(d.lo, d.hi, this.o.headWindow, this.o.isUnacked);
      ms = r.entries.map(fromEntry);
      next = r.next;
      for (const m of ms) {
        d.count--;
        d.bytes -= m.size;
      }
    }
    let mixed = false;
    while (this.deltaTransient.length > 0 && this.deltaTransient.at(0)!.seq < next) {
      ms.push(this.deltaTransient.shift()!);
      mixed = true;
    }
    if (mixed) ms.sort((a, b) => a.seq - b.seq);
    d.lo = next;
    if (next >= d.hi && d.count !== 0) {
      // Never expected: the figures said more than the index holds.
      this.o.log('error', `queue ${this.o.name}: ${d.count} messages (${d.bytes} bytes) counted in seqs below ${d.hi} are not in the queue index`);
      this.o.onLost(d.count, d.bytes);
      d.count = 0;
      d.bytes = 0;
    }
    for (const m of ms) this.head.push(m);
    return ms.length;
  }
}
