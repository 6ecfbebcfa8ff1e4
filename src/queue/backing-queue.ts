/**
 * One queue with RabbitMQ's backing-queue semantics: ready messages in seq
 * order, pending acks by seq (the ack tag), redelivered flags, requeue in
 * order, purge, TTL support through peek + fetch.
 *
 * Persistent messages of a durable queue have their body in the vhost's
 * message store (client ref = the queue key) and their life in the queue's
 * journal; everything else lives in memory only. A message that needs a
 * publisher confirm is confirmed once its body and its journal record are
 * fsynced (one group commit covers every message published since the last),
 * or when it leaves the queue first.
 */
import { JournalEntry } from './journal-codec';
import { CleanTerms, Logger, QueueIndex } from './queue-index';
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
  expiry: number;
  size: number;
  id: Buffer;
  blob: Buffer;
}

/** A message as handed back to the broker. */
export interface MessageOut {
  seq: number;
  flags: number;
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
}

export interface QueueFigures {
  len: number;
  readyBytes: number;
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
  /** Recovered messages (durable queues), in seq order. */
  recovered?: JournalEntry[];
  nextSeq?: number;
  /** Called with ids whose confirms are due. */
  onConfirm: (ids: Buffer[]) => void;
  log: Logger;
  /** Group-commit interval. */
  syncIntervalMs: number;
}

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

export class BackingQueue {
  readonly name: string;
  readonly durable: boolean;
  private readonly client?: StoreClient;
  private readonly index?: QueueIndex;
  private readonly ready = new ReadyList<Message>();
  private readonly unacked = new Map<number, Message>();
  private readyBytes = 0;
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

  constructor(opts: BackingQueueOptions) {
    this.name = opts.name;
    this.durable = opts.durable;
    this.client = opts.client;
    this.index = opts.index;
    this.onConfirm = opts.onConfirm;
    this.log = opts.log;
    this.syncIntervalMs = opts.syncIntervalMs;
    this.nextSeq = opts.nextSeq ?? 0;
    for (const e of opts.recovered ?? []) {
      const m: Message = { seq: e.seq, id: e.id, flags: (e.flags | Flags.PERSISTENT) & ~(Flags.UNACKED | Flags.NEEDS_CONFIRMING), expiry: e.expiry, size: e.size };
      this.ready.push(m);
      this.readyBytes += m.size;
      this.persistentCount++;
      this.persistentBytes += m.size;
      if (m.seq >= this.nextSeq) this.nextSeq = m.seq + 1;
    }
  }

  figures(): QueueFigures {
    return {
      len: this.ready.length,
      readyBytes: this.readyBytes,
      unacked: this.unacked.size,
      unackedBytes: this.unackedBytes,
      persistentCount: this.persistentCount,
      persistentBytes: this.persistentBytes,
      nextSeq: this.nextSeq,
    };
  }

  private isStored(m: Message): boolean {
    return (m.flags & Flags.PERSISTENT) !== 0;
  }

  private checkOpen(): void {
    if (this.closed) throw new BackingQueueError('ECLOSED', `queue ${this.name} is closed`);
  }

  publish(p: PublishInput): void {
    this.checkOpen();
    if (p.seq < this.nextSeq) {
      throw new BackingQueueError('ESEQ', `queue ${this.name}: publish seq ${p.seq} is below the next seq ${this.nextSeq}`);
    }
    this.nextSeq = p.seq + 1;
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
      this.ready.push(m);
      this.readyBytes += m.size;
    }
    if (p.flags & Flags.NEEDS_CONFIRMING) {
      (stored ? this.confirmDurable : this.confirmNow).push(p.id);
    }
    this.scheduleCommit();
  }

  /**
   * Takes up to `max` messages from the head. With FetchMode.Ack they become
   * pending acks marked delivered; with Reserve, pending acks not yet marked
   * (the broker's read-ahead: `markDelivered` or `requeue` follows); with NoAck
   * they leave the queue. Flags are returned as they were before the fetch.
   * A stored message whose body cannot be read (missing or failing its
   * checksum) is reported and dropped, never returned.
   */
  async fetch(max: number, mode: FetchMode, withBody: boolean): Promise<MessageOut[]> {
    this.checkOpen();
    const out: MessageOut[] = [];
    while (out.length < max) {
      const m = this.ready.shift();
      if (!m) break;
      this.readyBytes -= m.size;
      let blob: Buffer | undefined;
      if (withBody) {
        blob = await this.body(m);
        if (blob === undefined) {
          this.log('error', `queue ${this.name}: message seq ${m.seq} id ${m.id.toString('hex')} has no readable body in the store; dropped`);
          this.forget([m]);
          continue;
        }
      }
      out.push({ seq: m.seq, flags: m.flags, expiry: m.expiry, size: m.size, id: m.id, blob });
      if (mode !== FetchMode.NoAck) {
        if (mode === FetchMode.Ack) this.setDelivered(m);
        this.unacked.set(m.seq, m);
        this.unackedBytes += m.size;
      } else {
        this.forget([m]);
      }
    }
    this.scheduleCommit();
    return out;
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
    if (!this.isStored(m)) return undefined;
    return this.client!.read(m.id);
  }

  /** Removes messages for good: journal ack, store ref released. */
  private forget(ms: Message[]): void {
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
    const out: Message[] = [];
    for (const s of seqs) {
      const m = this.unacked.get(s);
      if (!m) continue;
      this.unacked.delete(s);
      this.unackedBytes -= m.size;
      out.push(m);
    }
    return out;
  }

  /** Acks pending acks; returns the ids acked, in the order given (unknown seqs skipped). */
  ack(seqs: readonly number[]): Buffer[] {
    this.checkOpen();
    const ms = this.takeUnacked(seqs);
    this.forget(ms);
    this.scheduleCommit();
    return ms.map((m) => m.id);
  }

  /** Returns pending acks to the ready list in seq order, flags unchanged (delivered if they were). */
  requeue(seqs: readonly number[]): Buffer[] {
    this.checkOpen();
    const ms = this.takeUnacked(seqs);
    for (const m of ms) this.readyBytes += m.size;
    this.ready.insert(ms);
    return ms.map((m) => m.id);
  }

  /** Properties of the first `max` ready messages (for TTL: dropwhile / fetchwhile). */
  peek(max: number): { expiry: number; size: number; flags: number }[] {
    this.checkOpen();
    const out: { expiry: number; size: number; flags: number }[] = [];
    for (let i = 0; i < max; i++) {
      const m = this.ready.at(i);
      if (!m) break;
      out.push({ expiry: m.expiry, size: m.size, flags: m.flags });
    }
    return out;
  }

  /** Pending acks by seq, with bodies (for ackfold). */
  async read(seqs: readonly number[]): Promise<MessageOut[]> {
    this.checkOpen();
    const out: MessageOut[] = [];
    for (const s of seqs) {
      const m = this.unacked.get(s);
      if (!m) continue;
      const blob = await this.body(m);
      if (blob === undefined) {
        this.log('error', `queue ${this.name}: pending ack seq ${s} has no readable body; skipped`);
        continue;
      }
      out.push({ seq: m.seq, flags: m.flags | Flags.UNACKED, expiry: m.expiry, size: m.size, id: m.id, blob });
    }
    return out;
  }

  /** Ready and unacked messages with seq > afterSeq, in seq order, at most `max`, with bodies. */
  async fold(afterSeq: number, max: number): Promise<MessageOut[]> {
    this.checkOpen();
    const picked: { m: Message; unacked: boolean }[] = [];
    for (let i = this.ready.firstAfter(afterSeq); picked.length < max; i++) {
      const m = this.ready.at(i);
      if (!m) break;
      picked.push({ m, unacked: false });
    }
    for (const m of this.unacked.values()) if (m.seq > afterSeq) picked.push({ m, unacked: true });
    picked.sort((a, b) => a.m.seq - b.m.seq);
    const out: MessageOut[] = [];
    for (const { m, unacked } of picked.slice(0, max)) {
      const blob = await this.body(m);
      if (blob === undefined) continue;
      out.push({ seq: m.seq, flags: unacked ? m.flags | Flags.UNACKED : m.flags, expiry: m.expiry, size: m.size, id: m.id, blob });
    }
    return out;
  }

  /** Removes every ready message; returns what was removed. */
  purge(): { count: number; persistentCount: number; persistentBytes: number } {
    this.checkOpen();
    const ms = this.ready.clear();
    this.readyBytes = 0;
    const before = { c: this.persistentCount, b: this.persistentBytes };
    this.forget(ms);
    this.scheduleCommit();
    return { count: ms.length, persistentCount: before.c - this.persistentCount, persistentBytes: before.b - this.persistentBytes };
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
      this.commit().catch((e: unknown) => this.log('error', `queue ${this.name}: group commit failed: ${(e as Error).message}`));
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
      if (durable.length > 0) {
        await Promise.all([this.index!.sync(), this.client!.sync(durable)]);
      } else if (this.index) {
        await this.index.write();
      }
      const ids = now.length ? durable.concat(now) : durable;
      if (ids.length) this.onConfirm(ids);
    };
    this.committing = run().finally(() => {
      this.committing = null;
      this.scheduleCommit();
    });
    return this.committing;
  }

  /** Live stored messages, for the journal's rewrite and clean stop. */
  private liveEntries(): JournalEntry[] {
    const all: Message[] = [];
    for (const m of this.ready) if (this.isStored(m)) all.push(m);
    for (const m of this.unacked.values()) if (this.isStored(m)) all.push(m);
    all.sort((a, b) => a.seq - b.seq);
    return all.map((m) => ({ seq: m.seq, id: m.id, flags: m.flags, expiry: m.expiry, size: m.size }));
  }

  /** Rewrites the journal when it holds mostly dead records. */
  async maintain(): Promise<void> {
    if (this.closed || !this.index) return;
    if (this.index.wantsRewrite(this.persistentCount)) await this.index.rewrite(this.liveEntries());
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
   * pending acks become ready again (delivered), the journal is compacted and
   * the clean marker written.
   */
  async terminate(): Promise<void> {
    this.checkOpen();
    await this.stopCommits();
    this.closed = true;
    if (this.index && this.client) {
      await this.index.terminate(this.liveEntries(), { nextSeq: this.nextSeq, count: this.persistentCount });
      await this.client.terminate();
    }
  }

  /** Deletes the queue: every message goes, and its journal. */
  async deleteAndTerminate(): Promise<void> {
    this.checkOpen();
    const ids = this.liveEntries().map((e) => e.id);
    await this.stopCommits();
    this.closed = true;
    if (this.index && this.client) {
      if (ids.length) this.client.remove(ids);
      await this.client.deleteAndTerminate();
      await this.index.destroy();
    }
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
    if (this.committing) await this.committing.catch(() => undefined);
    if (this.index) await this.index.close();
  }
}
