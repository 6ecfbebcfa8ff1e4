/**
 * Bodies of the next ready messages read from the store ahead of FETCH, at
 * most BODY_AHEAD_COUNT messages and BODY_AHEAD_BYTES per queue: a consumer
 * then waits for no disk read, the reads overlap its deliveries. A read that
 * fails surfaces when FETCH takes it.
 */
import { BodyStore, isStored, Message } from './messages';
import { ReadyList } from './ready-list';

const BODY_AHEAD_COUNT = 256;
const BODY_AHEAD_BYTES = 2 * 1024 * 1024;

export class BodyReadAhead {
  /** Reads in flight or done, by seq. */
  private readonly reads = new Map<number, { read: Promise<Buffer | undefined>; size: number }>();
  private bytes = 0;

  constructor(private readonly store: BodyStore) {}

  get size(): number {
    return this.reads.size;
  }

  /** Starts reads for the stored messages at the front of `head`, within the bounds. */
  fill(head: ReadyList<Message>): void {
    for (let i = 0; i < head.length && this.reads.size < BODY_AHEAD_COUNT && this.bytes < BODY_AHEAD_BYTES; i++) {
      const m = head.at(i)!;
      if (!isStored(m) || this.reads.has(m.seq)) continue;
      const read = this.store.read(m.id);
      read.catch(() => undefined); // a failure surfaces when FETCH takes it
      this.reads.set(m.seq, { read, size: m.size });
      this.bytes += m.size;
    }
  }

  /** The read started for a message leaving the ready list, if any; forgotten either way. */
  take(m: Message): Promise<Buffer | undefined> | undefined {
    const a = this.reads.get(m.seq);
    if (!a) return undefined;
    this.reads.delete(m.seq);
    this.bytes -= a.size;
    return a.read;
  }

  clear(): void {
    this.reads.clear();
    this.bytes = 0;
  }
}
