/**
 * One queue with RabbitMQ's backing-queue semantics: ready messages in seq
 * order, pending acks by seq (the ack tag), redelivered flags, requeue in
 * order, purge, TTL support through peek + fetch.
 *
 * Persistent messages of a durable queue have their body in the vhost's
 * message store (client ref = the queue key) and their life in the queue's
 * index; everything else lives in memory only. A message that needs a
 * publisher confirm is confirmed once its body and its journal record are
 * fsynced (one group commit covers every message published since the last),
 * or when it leaves the queue first.
 *
 * Memory per queue is bounded: ready messages are held in a head window
 * (what fetch and peek need next) and a tail of recent publishes; between
 * them a delta, a seq range whose persistent messages live only in the queue
 * index (count and bytes kept as numbers). A tail past its window is dropped
 * to the delta; the head is refilled from it, a page of the index at a time.
 * Transient messages whose seq falls in the delta stay in memory (a side list
 * merged back on refill). Pending acks stay in memory (bounded by prefetch).
 *
 * Delivery counts (RabbitMQ 4.3's `delivery_count` annotation): a sparse map
 * seq → count of the messages that have one, and `redeliverBelow`, under which
 * a message without an entry counts 1 (it may have been delivered before a
 * non-clean recovery). A failed delivery (FAIL_DELIVERY) adds one; the entry
 * goes when the message leaves the queue and survives a clean stop.
 */
import { JournalEntry } from './journal-codec';
import { Logger, MAX_DELIVERY_COUNT, QueueIndex } from './queue-index';
import { ReadyList } from './ready-list';

export const Flags = { PERSISTENT: 1, NEEDS_CONFIRMING: 2, DELIVERED: 4, UNACKED: 8 } as const;

/** How fetch takes messages (the protocol's AckRequired byte). */
export enum FetchMode {
  NoAck = 0,
  Ack = 1,
  Reserve = 2,
}

/** The part of a message-store client a queue uses (see src/store). */
export interface StoreClient {
  write(id: Buffer, body: Buffer): void;
  read(id: Buffer): Promise<Buffer | undefined>;
  remove(ids: Buffer[]): void;
  sync(ids: Buffer[]): Promise<void>;
  terminate(): Promise<void>;
  deleteAndTerminate(): Promise<void>;
}

export interface PublishInput {
  seq: number;
  flags: number;
  /** The message's delivery_count annotation as it arrived; 0 for none. */
  deliveryCount: number;
  expiry: number;
  size: number;
  id: Buffer;
  blob: Buffer;
}

/** A message as handed back to the broker. */
export interface MessageOut {
  seq: number;
  flags: number;
  /** Deliveries that failed (see BackingQueue.countOf); 0 for none. */
  deliveryCount: number;
  expiry: number;
  size: number;
  id: Buffer;
  blob?: Buffer;
}

interface Message {
  seq: number;
  id: Buffer;
  /** Protocol flags; PERSISTENT is set only when the message is stored durably. */
  flags: number;
  expiry: number;
  size: number;
  /** Body of a message kept in memory (not stored durably). */
  body?: Buffer;
  /** A transient message whose body was paged out to the transient store. */
  paged?: boolean;
}

export interface QueueFigures {
  len: number;
  readyBytes: number;
  /** Ready messages with an expiry: while there are none the broker needs no TTL checks. */
  readyExpiring: number;
  unacked: number;
  unackedBytes: number;
  persistentCount: number;
  persistentBytes: number;
  nextSeq: number;
}

export interface BackingQueueOptions {
  name: string;
  durable: boolean;
  /** Store client and journal: both present for a durable queue. */
  client?: StoreClient;
  index?: QueueIndex;
  /**
   * What the index recovered (durable queues): live entries, their bytes and
   * how many have an expiry, all ready; the seq below which messages may have
   * been delivered before, and the delivery counts kept by a clean stop.
   */
  recovered?: { count: number; bytes: number; expiring: number; redeliverBelow?: number; deliveryCounts?: readonly [number, number][] };
  nextSeq?: number;
  /** Called with ids whose confirms are due. */
  onConfirm: (ids: Buffer[]) => void;
  /**
   * Called once when the queue fails for good (its journal or the store could
   * not write or fsync): nothing more will be confirmed, every later request
   * is refused, and the owner must end the queue process so that RabbitMQ
   * nacks what is unconfirmed and restarts it (non-clean).
   */
  onFailure?: (e: Error) => void;
  log: Logger;
  /** Group-commit interval. */
  syncIntervalMs: number;
  /** Ready messages held in memory at the head (default 4096) and the tail (default 4096). */
  headWindow?: number;
  tailWindow?: number;
  /**
   * Client of the vhost's transient store (wiped at every start): bodies of
   * transient messages beyond the tail window are paged out to it, so they
   * do not stay in memory however long the queue grows.
   */
  pager?: StoreClient;
}

export const DEFAULT_WINDOW = 4096;
/** Index entries handled per step by purge and delete. */
const PAGE = 4096;

/**
 * Bodies of the next ready messages read from the store ahead of FETCH, at
 * most this many messages and bytes per queue: a consumer then waits for no
 * disk read, the reads overlap its deliveries.
 */
const BODY_AHEAD_COUNT = 256;
const BODY_AHEAD_BYTES = 2 * 1024 * 1024;

/** Start a group commit at once when this many confirms wait. */
const EAGER_CONFIRMS = 2048;

export class BackingQueueError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'BackingQueueError';
    this.code = code;
  }
}

/** Persistent ready messages of seqs [lo, hi) that live only in the queue index. */
interface Delta {
  lo: number;
  hi: number;
  count: number;
  bytes: number;
}

function fromEntry(e: JournalEntry): Message {
  return { seq: e.seq, id: e.id, flags: (e.flags | Flags.PERSISTENT) & ~(Flags.UNACKED | Flags.NEEDS_CONFIRMING), expiry: e.expiry, size: e.size };
}


export class BackingQueue {
  readonly name: string;
  readonly durable: boolean;
  private readonly client?: StoreClient;
  private readonly index?: QueueIndex;
  private readonly pager?: StoreClient;
  private pagedCount = 0;
  /** Ready messages, seq order: head < delta range ≤ tail. */
  private readonly head = new ReadyList<Message>();
  private readonly tail = new ReadyList<Message>();
  private readonly delta: Delta = { lo: 0, hi: 0, count: 0, bytes: 0 };
  /** Transient ready messages whose seq falls in the delta range. */
  private readonly deltaTransient = new ReadyList<Message>();
  private readonly unacked = new Map<number, Message>();
  /** Delivery counts by seq, only of messages in the queue that have one (sparse). */
  private readonly deliveryCounts: Map<number, number>;
  /** Messages of lower seqs may have been delivered before this start: without an entry they count 1. */
  private readonly redeliverBelow: number;
  /** Store reads in flight or done for ready messages at the front of the head, by seq. */
  private readonly bodyAhead = new Map<number, { read: Promise<Buffer | undefined>; size: number }>();
  private bodyAheadBytes = 0;
  private readonly headWindow: number;
  private readonly tailWindow: number;
  private readyBytes = 0;
  private readyExpiring = 0;
  private unackedBytes = 0;
  private persistentCount = 0;
  private persistentBytes = 0;
  private nextSeq: number;

  /** Confirms waiting for the next group commit, split by whether they need an fsync. */
  private confirmDurable: Buffer[] = [];
  private confirmNow: Buffer[] = [];
  private commitTimer: NodeJS.Timeout | null = null;
  private committing: Promise<void> | null = null;
  private closed = false;
  private readonly onConfirm: (ids: Buffer[]) => void;
  private readonly log: Logger;
  private readonly syncIntervalMs: number;
  private readonly onFailure: ((e: Error) => void) | undefined;
  /** Set once a commit failed: sticky. */
  private failure: Error | null = null;

  constructor(opts: BackingQueueOptions) {
    this.name = opts.name;
    this.durable = opts.durable;
    this.client = opts.client;
    this.index = opts.index;
    this.pager = opts.pager;
    this.onConfirm = opts.onConfirm;
    this.onFailure = opts.onFailure;
    this.log = opts.log;
    this.syncIntervalMs = opts.syncIntervalMs;
    this.headWindow = Math.max(1, opts.headWindow ?? DEFAULT_WINDOW);
    this.tailWindow = Math.max(1, opts.tailWindow ?? DEFAULT_WINDOW);
    this.nextSeq = opts.nextSeq ?? 0;
    const r = opts.recovered;
    this.redeliverBelow = r?.redeliverBelow ?? 0;
    this.deliveryCounts = new Map(r?.deliveryCounts ?? []);
    if (r && r.count > 0) {
      // Everything recovered starts in the delta; the first fetch or peek reads the head.
      Object.assign(this.delta, { lo: 0, hi: this.nextSeq, count: r.count, bytes: r.bytes });
      this.readyBytes = r.bytes;
      this.readyExpiring = r.expiring;
      this.persistentCount = r.count;
      this.persistentBytes = r.bytes;
    }
  }

  get length(): number {
    return this.head.length + this.tail.length + this.delta.count + this.deltaTransient.length;
  }

  figures(): QueueFigures {
    return {
      len: this.length,
      readyBytes: this.readyBytes,
      readyExpiring: this.readyExpiring,
      unacked: this.unacked.size,
      unackedBytes: this.unackedBytes,
      persistentCount: this.persistentCount,
      persistentBytes: this.persistentBytes,
      nextSeq: this.nextSeq,
    };
  }

  /** Message objects held in memory (ready windows, transient side list, pending acks, delivery counts), and the index's in-memory journal. */
  memory(): { messages: number; pendingAcks: number; deltaCount: number; journalEntries: number; pagedTransient: number; bodiesAhead: number; deliveryCounts: number } {
    return {
      messages: this.head.length + this.tail.length + this.deltaTransient.length + this.unacked.size,
      deliveryCounts: this.deliveryCounts.size,
      bodiesAhead: this.bodyAhead.size,
      pagedTransient: this.pagedCount,
      pendingAcks: this.unacked.size,
      deltaCount: this.delta.count,
      journalEntries: this.index?.journalSize ?? 0,
    };
  }

  /** The delivery count of the message `seq`: 0 is none (the broker adds no annotation). */
  countOf(seq: number): number {
    return this.deliveryCounts.get(seq) ?? (seq < this.redeliverBelow ? 1 : 0);
  }

  private out(m: Message, blob: Buffer | undefined, unacked = false): MessageOut {
    return { seq: m.seq, flags: unacked ? m.flags | Flags.UNACKED : m.flags, deliveryCount: this.countOf(m.seq), expiry: m.expiry, size: m.size, id: m.id, blob };
  }

  /**
   * Deliveries of these pending acks failed (RabbitMQ's DelFailed, sent just
   * before the requeue or ackfold): each one's count grows by one. Unknown
   * seqs are skipped.
   */
  failDelivery(seqs: readonly number[]): void {
    this.checkOpen();
    for (const s of seqs) {
      if (this.unacked.has(s)) this.deliveryCounts.set(s, Math.min(this.countOf(s) + 1, MAX_DELIVERY_COUNT));
    }
  }

  /** A message joins (+1) or leaves (−1) the ready messages: their bytes and expiry count. */
  private countReady(m: Message, sign: 1 | -1): void {
    this.readyBytes += sign * m.size;
    if (m.expiry >= 0) this.readyExpiring += sign;
  }

  private isStored(m: Message): boolean {
    return (m.flags & Flags.PERSISTENT) !== 0;
  }

  private checkOpen(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new BackingQueueError('ECLOSED', `queue ${this.name} is closed`);
  }

  /**
   * The queue failed for good (a commit, a store write, or a request its owner
   * had counted on): no more commits or confirms, every later request is
   * refused, and the owner is told once (onFailure).
   */
  fail(e: Error): void {
    if (this.failure) return;
    const code = (e as NodeJS.ErrnoException).code;
    this.failure = new BackingQueueError('EFAILED', `queue ${this.name} failed: ${e.message}${code && !e.message.includes(code) ? ` (${code})` : ''}`);
    this.log('error', `${this.failure.message}; nothing more is confirmed, the queue process must restart`);
    if (this.commitTimer) clearTimeout(this.commitTimer);
    this.commitTimer = null;
    this.onFailure?.(this.failure);
  }

  private deltaEmpty(): boolean {
    return this.delta.count === 0 && this.deltaTransient.length === 0;
  }

  publish(p: PublishInput): void {
    this.checkOpen();
    if (p.seq < this.nextSeq) {
      throw new BackingQueueError('ESEQ', `queue ${this.name}: publish seq ${p.seq} is below the next seq ${this.nextSeq}`);
    }
    this.nextSeq = p.seq + 1;
    if (p.deliveryCount > 0) this.deliveryCounts.set(p.seq, p.deliveryCount);
    const stored = this.durable && (p.flags & Flags.PERSISTENT) !== 0 && this.client !== undefined;
    const flags = stored ? p.flags : p.flags & ~Flags.PERSISTENT;
    const m: Message = { seq: p.seq, id: p.id, flags: flags & ~(Flags.UNACKED | Flags.NEEDS_CONFIRMING), expiry: p.expiry, size: p.size };
    if (stored) {
      this.client!.write(p.id, p.blob);
      this.index!.publish({ seq: m.seq, id: m.id, flags: m.flags, expiry: m.expiry, size: m.size });
      this.persistentCount++;
      this.persistentBytes += m.size;
    } else {
      // Copy: the blob is a view into a network buffer.
      m.body = Buffer.from(p.blob);
    }
    if (p.flags & Flags.UNACKED) {
      if (stored) this.index!.delivered([m.seq]);
      m.flags |= Flags.DELIVERED;
      this.unacked.set(m.seq, m);
      this.unackedBytes += m.size;
    } else {
      this.countReady(m, 1);
      if (this.deltaEmpty() && this.tail.length === 0 && this.head.length < this.headWindow) {
        this.head.push(m);
      } else {
        this.tail.push(m);
        if (this.tail.length > this.tailWindow && (this.index || this.pager)) this.spillTail();
      }
    }
    if (p.flags & Flags.NEEDS_CONFIRMING) {
      (stored ? this.confirmDurable : this.confirmNow).push(p.id);
    }
    this.scheduleCommit();
  }

  /** Moves a transient message's body to the transient store, if the queue has one. */
  private pageOut(m: Message): void {
    if (!this.pager || !m.body) return;
    this.pager.write(m.id, m.body);
    m.body = undefined;
    m.paged = true;
    this.pagedCount++;
  }

  /** Releases the transient store's references of paged messages leaving the queue. */
  private release(ms: readonly Message[]): void {
    const ids: Buffer[] = [];
    for (const m of ms) {
      if (!m.paged) continue;
      m.paged = false;
      ids.push(m.id);
    }
    if (ids.length === 0) return;
    this.pagedCount -= ids.length;
    this.pager!.remove(ids);
  }

  /** Drops the tail to the delta: its persistent messages are in the index already. */
  private spillTail(): void {
    const ms = this.tail.clear();
    if (ms.length === 0) return;
    if (this.deltaEmpty()) this.delta.lo = ms[0].seq;
    for (const m of ms) {
      if (this.isStored(m)) {
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
      const r = await this.index!.readLive(d.lo, d.hi, this.headWindow, (s) => this.unacked.has(s));
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
      this.log('error', `queue ${this.name}: ${d.count} messages (${d.bytes} bytes) counted in seqs below ${d.hi} are not in the queue index`);
      this.readyBytes -= d.bytes;
      // Which of them had an expiry is unknown: an overcount only costs the broker TTL checks.
      this.persistentCount -= d.count;
      this.persistentBytes -= d.bytes;
      d.count = 0;
      d.bytes = 0;
    }
    for (const m of ms) this.head.push(m);
    return ms.length;
  }

  private async shiftReady(): Promise<Message | undefined> {
    await this.headReady();
    return this.head.shift();
  }

  /** The first ready message, left in place. */
  private async headReady(): Promise<Message | undefined> {
    if (this.head.length === 0) await this.refill();
    return this.head.at(0);
  }

  /**
   * Takes up to `max` messages from the head. With FetchMode.Ack they become
   * pending acks marked delivered; with Reserve, pending acks not yet marked
   * (the broker's read-ahead: `markDelivered` or `requeue` follows); with NoAck
   * they leave the queue. Flags are returned as they were before the fetch.
   * A stored message whose body cannot be read (missing or failing its
   * checksum) is reported and dropped, never returned. At most `maxBytes` of
   * message sizes are taken, but always at least one message (so a reply
   * fits its frame).
   */
  async fetch(max: number, mode: FetchMode, withBody: boolean, maxBytes = Infinity): Promise<MessageOut[]> {
    this.checkOpen();
    const res: MessageOut[] = [];
    let bytes = 0;
    while (res.length < max) {
      const batch: Message[] = [];
      while (batch.length < max - res.length) {
        const next = await this.headReady();
        if (!next || (bytes > 0 && bytes + next.size > maxBytes)) break;
        const m = (await this.shiftReady())!;
        bytes += m.size;
        this.countReady(m, -1);
        batch.push(m);
      }
      if (batch.length === 0) break;
      // All bodies at once: the store looks their locations up in one batch
      // and the file reads overlap (one at a time, a FETCH of many costs many
      // disk round trips).
      const blobs = await Promise.all(
        batch.map((m) => {
          const ahead = this.takeAhead(m);
          return withBody ? (ahead ?? this.body(m)) : undefined;
        }),
      );
      batch.forEach((m, i) => {
        const blob = blobs[i];
        if (withBody && blob === undefined) {
          this.log('error', `queue ${this.name}: message seq ${m.seq} id ${m.id.toString('hex')} has no readable body in the store; dropped`);
          this.forget([m]);
          return;
        }
        res.push(this.out(m, blob));
        if (mode !== FetchMode.NoAck) {
          if (mode === FetchMode.Ack) this.setDelivered(m);
          this.unacked.set(m.seq, m);
          this.unackedBytes += m.size;
        } else {
          this.forget([m]);
        }
      });
    }
    this.scheduleCommit();
    this.readAhead();
    return res;
  }

  /** Starts store reads for the messages at the front of the head, within the read-ahead bounds. */
  private readAhead(): void {
    if (this.closed || !this.client) return;
    for (let i = 0; i < this.head.length && this.bodyAhead.size < BODY_AHEAD_COUNT && this.bodyAheadBytes < BODY_AHEAD_BYTES; i++) {
      const m = this.head.at(i)!;
      if (!this.isStored(m) || this.bodyAhead.has(m.seq)) continue;
      const read = this.client.read(m.id);
      read.catch(() => undefined); // a failure surfaces when FETCH takes it
      this.bodyAhead.set(m.seq, { read, size: m.size });
      this.bodyAheadBytes += m.size;
    }
  }

  /** The read started ahead for a message leaving the ready list, if any; forgotten either way. */
  private takeAhead(m: Message): Promise<Buffer | undefined> | undefined {
    const a = this.bodyAhead.get(m.seq);
    if (!a) return undefined;
    this.bodyAhead.delete(m.seq);
    this.bodyAheadBytes -= a.size;
    return a.read;
  }

  private dropAhead(): void {
    this.bodyAhead.clear();
    this.bodyAheadBytes = 0;
  }

  private setDelivered(m: Message): void {
    if (m.flags & Flags.DELIVERED) return;
    if (this.isStored(m)) this.index!.delivered([m.seq]);
    m.flags |= Flags.DELIVERED;
  }

  /** Marks reserved pending acks delivered (they reached a consumer that acks). */
  markDelivered(seqs: readonly number[]): void {
    this.checkOpen();
    for (const s of seqs) {
      const m = this.unacked.get(s);
      if (m) this.setDelivered(m);
    }
  }

  private async body(m: Message): Promise<Buffer | undefined> {
    if (m.body) return m.body;
    if (m.paged) return this.pager!.read(m.id);
    if (!this.isStored(m)) return undefined;
    return this.client!.read(m.id);
  }

  /** Removes messages for good: index ack, store ref released, delivery count dropped. */
  private forget(ms: Message[]): void {
    if (this.deliveryCounts.size > 0) for (const m of ms) this.deliveryCounts.delete(m.seq);
    this.release(ms);
    const stored = ms.filter((m) => this.isStored(m));
    if (stored.length === 0) return;
    this.index!.acked(stored.map((m) => m.seq));
    this.client!.remove(stored.map((m) => m.id));
    for (const m of stored) {
      this.persistentCount--;
      this.persistentBytes -= m.size;
    }
  }

  private takeUnacked(seqs: readonly number[]): Message[] {
    const res: Message[] = [];
    for (const s of seqs) {
      const m = this.unacked.get(s);
      if (!m) continue;
      this.unacked.delete(s);
      this.unackedBytes -= m.size;
      res.push(m);
    }
    return res;
  }

  /** Acks pending acks; returns the ids acked, in the order given (unknown seqs skipped). */
  ack(seqs: readonly number[]): Buffer[] {
    this.checkOpen();
    const ms = this.takeUnacked(seqs);
    this.forget(ms);
    this.scheduleCommit();
    return ms.map((m) => m.id);
  }

  /** Returns pending acks to the ready messages in seq order, flags unchanged (delivered if they were). */
  requeue(seqs: readonly number[]): Buffer[] {
    this.checkOpen();
    const ms = this.takeUnacked(seqs);
    const toHead: Message[] = [];
    const toTail: Message[] = [];
    const toDelta: Message[] = [];
    const d = this.delta;
    for (const m of ms) {
      this.countReady(m, 1);
      if (!this.deltaEmpty()) {
        if (m.seq < d.lo) toHead.push(m);
        else if (m.seq >= d.hi) toTail.push(m);
        else if (this.isStored(m)) {
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
    return ms.map((m) => m.id);
  }

  /** Properties of the first `max` ready messages (for TTL: dropwhile / fetchwhile). */
  async peek(max: number): Promise<{ expiry: number; size: number; flags: number }[]> {
    this.checkOpen();
    while (this.head.length < max && (await this.refill()) > 0);
    const res: { expiry: number; size: number; flags: number }[] = [];
    for (let i = 0; i < max; i++) {
      const m = this.head.at(i);
      if (!m) break;
      res.push({ expiry: m.expiry, size: m.size, flags: m.flags });
    }
    return res;
  }

  /** Pending acks by seq, with bodies (for ackfold). */
  async read(seqs: readonly number[]): Promise<MessageOut[]> {
    this.checkOpen();
    const res: MessageOut[] = [];
    for (const s of seqs) {
      const m = this.unacked.get(s);
      if (!m) continue;
      const blob = await this.body(m);
      if (blob === undefined) {
        this.log('error', `queue ${this.name}: pending ack seq ${s} has no readable body; skipped`);
        continue;
      }
      res.push(this.out(m, blob, true));
    }
    return res;
  }

  /**
   * Ready and unacked messages with seq > afterSeq, in seq order, at most
   * `max` and at most `maxBytes` of message sizes (at least one), with bodies.
   */
  async fold(afterSeq: number, max: number, maxBytes = Infinity): Promise<MessageOut[]> {
    this.checkOpen();
    const picked: { m: Message; unacked: boolean }[] = [];
    const fromList = (l: ReadyList<Message>) => {
      for (let i = l.firstAfter(afterSeq), n = 0; n < max; i++, n++) {
        const m = l.at(i);
        if (!m) break;
        picked.push({ m, unacked: false });
      }
    };
    fromList(this.head);
    if (!this.deltaEmpty() && this.delta.hi > afterSeq + 1) {
      if (this.delta.count > 0) {
        const r = await this.index!.readLive(Math.max(this.delta.lo, afterSeq + 1), this.delta.hi, max, (s) => this.unacked.has(s));
        for (const e of r.entries) picked.push({ m: fromEntry(e), unacked: false });
      }
      fromList(this.deltaTransient);
    }
    fromList(this.tail);
    for (const m of this.unacked.values()) if (m.seq > afterSeq) picked.push({ m, unacked: true });
    picked.sort((a, b) => a.m.seq - b.m.seq);
    const res: MessageOut[] = [];
    let bytes = 0;
    for (const { m, unacked } of picked.slice(0, max)) {
      if (bytes > 0 && bytes + m.size > maxBytes) break;
      bytes += m.size;
      const blob = await this.body(m);
      if (blob === undefined) continue;
      res.push(this.out(m, blob, unacked));
    }
    return res;
  }

  /** Visits live index entries of seqs [from, to) that are not pending acks, a page at a time. */
  private async eachIndexPage(from: number, to: number, visit: (ms: Message[]) => void, skipUnacked: boolean): Promise<void> {
    for (let lo = from; lo < to; ) {
      const r = await this.index!.readLive(lo, to, PAGE, skipUnacked ? (s) => this.unacked.has(s) : undefined);
      if (r.entries.length) visit(r.entries.map(fromEntry));
      lo = r.next;
    }
  }

  /** Removes every ready message; returns what was removed. Streams the delta from the index. */
  async purge(): Promise<{ count: number; persistentCount: number; persistentBytes: number }> {
    this.checkOpen();
    const before = { c: this.persistentCount, b: this.persistentBytes };
    this.dropAhead();
    const ms = [...this.head.clear(), ...this.deltaTransient.clear(), ...this.tail.clear()];
    this.forget(ms);
    let count = ms.length;
    const d = this.delta;
    if (d.count > 0) {
      let seen = 0;
      await this.eachIndexPage(
        d.lo,
        d.hi,
        (page) => {
          seen += page.length;
          this.forget(page);
        },
        true,
      );
      if (seen !== d.count) this.log('error', `queue ${this.name}: purge found ${seen} messages in the queue index where ${d.count} were counted`);
      count += seen;
    }
    Object.assign(d, { lo: 0, hi: 0, count: 0, bytes: 0 });
    this.readyBytes = 0;
    this.readyExpiring = 0;
    this.scheduleCommit();
    return { count, persistentCount: before.c - this.persistentCount, persistentBytes: before.b - this.persistentBytes };
  }

  /** Forgets every pending ack. */
  purgeAcks(): void {
    this.checkOpen();
    const ms = [...this.unacked.values()];
    this.unacked.clear();
    this.unackedBytes = 0;
    this.forget(ms);
    this.scheduleCommit();
  }

  private scheduleCommit(): void {
    if (this.closed || this.commitTimer) return;
    const waiting = this.confirmDurable.length + this.confirmNow.length;
    const buffered = this.index?.bufferedBytes ?? 0;
    if (waiting === 0 && buffered === 0) return;
    const delay = waiting >= EAGER_CONFIRMS || (waiting > 0 && this.confirmDurable.length === 0) ? 0 : this.syncIntervalMs;
    this.commitTimer = setTimeout(() => {
      this.commitTimer = null;
      this.commit().catch(() => undefined); // commit() fails the queue itself
    }, delay);
  }

  /**
   * Group commit: writes the journal, and when confirms wait, fsyncs it and
   * the store's records of those messages, then confirms them.
   */
  commit(): Promise<void> {
    if (this.committing) {
      // One commit at a time; the next one picks up whatever came meanwhile.
      return this.committing.then(() => this.commit());
    }
    const durable = this.confirmDurable;
    const now = this.confirmNow;
    this.confirmDurable = [];
    this.confirmNow = [];
    const run = async (): Promise<void> => {
      if (this.failure) throw this.failure;
      try {
        if (durable.length > 0) {
          await Promise.all([this.index!.sync(), this.client!.sync(durable)]);
        } else if (this.index) {
          await this.index.write();
        }
      } catch (e) {
        // Its confirms are never sent: the publishers get nacks when the queue process ends.
        this.fail(e as Error);
        throw this.failure!;
      }
      const ids = now.length ? durable.concat(now) : durable;
      if (ids.length) this.onConfirm(ids);
    };
    this.committing = run().finally(() => {
      this.committing = null;
      if (!this.failure) this.scheduleCommit();
    });
    return this.committing;
  }

  private async stopCommits(): Promise<void> {
    if (this.commitTimer) {
      clearTimeout(this.commitTimer);
      this.commitTimer = null;
    }
    await this.commit();
  }

  /**
   * Clean stop: transient messages and pending acks are dropped, persistent
   * pending acks become ready again (delivered); the index folds its journal
   * into its segments and writes the clean marker.
   */
  async terminate(): Promise<void> {
    this.checkOpen();
    await this.stopCommits();
    this.closed = true;
    this.dropAhead();
    if (this.index && this.client) {
      const terms = await this.index.terminate(this.nextSeq, this.storedCounts());
      if (terms.count !== this.persistentCount || terms.bytes !== this.persistentBytes) {
        this.log('warn', `queue ${this.name}: the index holds ${terms.count} messages (${terms.bytes} bytes), the queue counted ${this.persistentCount} (${this.persistentBytes})`);
      }
      await this.client.terminate();
    }
    await this.dropPaged();
  }

  /** The delivery counts of stored messages: what a clean stop keeps (transient messages go). */
  private storedCounts(): [number, number][] {
    const res: [number, number][] = [];
    for (const [seq, n] of this.deliveryCounts) {
      const m = this.unacked.get(seq) ?? this.head.get(seq) ?? this.tail.get(seq) ?? this.deltaTransient.get(seq);
      // Not held in memory: it lives only in the index (the delta), so it is stored.
      if (m === undefined || this.isStored(m)) res.push([seq, n]);
    }
    return res;
  }

  /** At the end of the queue: its transient messages go, and so do their paged bodies. */
  private async dropPaged(): Promise<void> {
    if (!this.pager) return;
    try {
      if (this.pagedCount > 0) this.release([...this.head, ...this.deltaTransient, ...this.tail, ...this.unacked.values()]);
      await this.pager.deleteAndTerminate();
    } catch (e) {
      // the transient store is wiped at the next start anyway
      this.log('warn', `queue ${this.name}: could not release its paged transient messages: ${(e as Error).message}`);
    }
  }

  /** Deletes the queue: every message goes, and its index. */
  async deleteAndTerminate(): Promise<void> {
    this.checkOpen();
    await this.stopCommits();
    this.closed = true;
    this.dropAhead();
    this.deliveryCounts.clear();
    if (this.index && this.client) {
      const client = this.client;
      // Every live index entry (ready or pending ack) holds a store reference.
      await this.eachIndexPage(0, Number.MAX_SAFE_INTEGER, (ms) => client.remove(ms.map((m) => m.id)), false);
      await client.deleteAndTerminate();
      await this.index.destroy();
    }
    await this.dropPaged();
  }

  /**
   * The queue process went away without terminate (crash): keep what the
   * journal says (written, not marked clean) and let the next init replay it.
   */
  async abandon(): Promise<void> {
    if (this.closed) return;
    if (this.commitTimer) {
      clearTimeout(this.commitTimer);
      this.commitTimer = null;
    }
    this.closed = true;
    this.dropAhead();
    if (this.committing) await this.committing.catch(() => undefined);
    if (this.index) await this.index.close();
    await this.dropPaged();
  }
}
