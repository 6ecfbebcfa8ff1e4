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
 *
 * The parts: messages.ts (the types), ready-windows.ts (head / delta / tail,
 * the invariant stated there), body-read-ahead.ts, group-commit.ts (confirms
 * after fsync). What stays here is one request handler per backing-queue
 * operation; they share the queue's figures (ready, pending and stored counts
 * and bytes), which each must move together, so they are kept in one file.
 */
import { BodyReadAhead } from './body-read-ahead';
import { DEFAULT_WRITE_SYNC_INTERVAL_MS, Durability, GroupCommit } from './group-commit';
import { BackingQueueError, BodyStore, FetchMode, Flags, fromEntry, isStored, Message, MessageOut, PublishInput, QueueFigures } from './messages';
import type { Logger } from '../util/logger';
import { MAX_DELIVERY_COUNT, QueueIndex } from './queue-index';
import { ReadyWindows } from './ready-windows';

export interface BackingQueueOptions {
  name: string;
  durable: boolean;
  /** Store client and journal: both present for a durable queue. */
  client?: BodyStore;
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
  /** Told each confirmed message's wait in the queue, publish to confirm, in seconds (metrics). */
  onConfirmLatency?: (seconds: number) => void;
  /**
   * Called once when the queue fails for good (its journal or the store could
   * not write or fsync): nothing more will be confirmed, every later request
   * is refused, and the owner must end the queue process so that RabbitMQ
   * nacks what is unconfirmed and restarts it (non-clean).
   */
  onFailure?: (e: Error) => void;
  log: Logger;
  /** How long a stored message's confirm waits for others to share its commit (0: none; group-commit.ts). */
  syncIntervalMs: number;
  /** `fsync` (default): confirm after fsync; `write`: after the write, fsync every `writeSyncIntervalMs` (default 200). */
  durability?: Durability;
  writeSyncIntervalMs?: number;
  /** Ready messages held in memory at the head (default 4096) and the tail (default 4096). */
  headWindow?: number;
  tailWindow?: number;
  /**
   * Client of the vhost's transient store (wiped at every start): bodies of
   * transient messages beyond the tail window are paged out to it, so they
   * do not stay in memory however long the queue grows.
   */
  pager?: BodyStore;
}

export const DEFAULT_WINDOW = 4096;
/** Index entries handled per step by purge and delete. */
const PAGE = 4096;

export class BackingQueue {
  readonly name: string;
  readonly durable: boolean;
  /** The vhost's message store (durable queues) and the queue's index: both or neither. */
  private readonly client?: BodyStore;
  private readonly index?: QueueIndex;
  /** The vhost's transient store, for bodies of transient messages spilled from the windows. */
  private readonly pager?: BodyStore;
  /** Ready messages, seq order: head < delta range ≤ tail. */
  private readonly ready: ReadyWindows;
  /** Pending acks by seq (bounded by the consumers' prefetch). */
  private readonly unacked = new Map<number, Message>();
  /** Delivery counts by seq, only of messages in the queue that have one (sparse). */
  private readonly deliveryCounts: Map<number, number>;
  /** Messages of lower seqs may have been delivered before this start: without an entry they count 1. */
  private readonly redeliverBelow: number;
  /** Store reads started for ready messages at the front of the head. */
  private readonly ahead?: BodyReadAhead;
  private readonly commits: GroupCommit;
  /** Figures of the ready and pending messages, and of those stored. */
  private readyBytes = 0;
  private readyExpiring = 0;
  private unackedBytes = 0;
  private persistentCount = 0;
  private persistentBytes = 0;
  /** The seq the next publish must have at least. */
  private nextSeq: number;
  private closed = false;
  private readonly log: Logger;
  private readonly onFailure: ((e: Error) => void) | undefined;
  /** Set once the queue failed: sticky. */
  private failure: Error | null = null;

  constructor(opts: BackingQueueOptions) {
    this.name = opts.name;
    this.durable = opts.durable;
    this.client = opts.client;
    this.index = opts.index;
    this.pager = opts.pager;
    this.onFailure = opts.onFailure;
    this.log = opts.log;
    this.ready = new ReadyWindows({
      name: opts.name,
      index: opts.index,
      pager: opts.pager,
      headWindow: Math.max(1, opts.headWindow ?? DEFAULT_WINDOW),
      tailWindow: Math.max(1, opts.tailWindow ?? DEFAULT_WINDOW),
      log: opts.log,
      isUnacked: (s) => this.unacked.has(s),
      onLost: (count, bytes) => {
        this.readyBytes -= bytes;
        // Which of them had an expiry is unknown: an overcount only costs the broker TTL checks.
        this.persistentCount -= count;
        this.persistentBytes -= bytes;
      },
    });
    if (opts.client) this.ahead = new BodyReadAhead(opts.client);
    this.commits = new GroupCommit({
      index: opts.index,
      client: opts.client,
      syncIntervalMs: opts.syncIntervalMs,
      durability: opts.durability ?? 'fsync',
      writeSyncIntervalMs: opts.writeSyncIntervalMs ?? DEFAULT_WRITE_SYNC_INTERVAL_MS,
      onConfirm: opts.onConfirm,
      onConfirmLatency: opts.onConfirmLatency,
      failure: () => this.failure,
      fail: (e) => {
        this.fail(e);
        return this.failure!;
      },
      closed: () => this.closed,
    });
    this.nextSeq = opts.nextSeq ?? 0;
    const r = opts.recovered;
    this.redeliverBelow = r?.redeliverBelow ?? 0;
    this.deliveryCounts = new Map(r?.deliveryCounts ?? []);
    if (r && r.count > 0) {
      this.ready.recovered(this.nextSeq, r.count, r.bytes);
      this.readyBytes = r.bytes;
      this.readyExpiring = r.expiring;
      this.persistentCount = r.count;
      this.persistentBytes = r.bytes;
    }
  }

  get length(): number {
    return this.ready.length;
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
      messages: this.ready.held + this.unacked.size,
      deliveryCounts: this.deliveryCounts.size,
      bodiesAhead: this.ahead?.size ?? 0,
      pagedTransient: this.ready.paged,
      pendingAcks: this.unacked.size,
      deltaCount: this.ready.delta.count,
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
    this.commits.cancel();
    this.onFailure?.(this.failure);
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
      this.ready.add(m);
    }
    if (p.flags & Flags.NEEDS_CONFIRMING) this.commits.awaitConfirm(p.id, stored);
    this.commits.schedule();
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
        const next = await this.ready.first();
        if (!next || (bytes > 0 && bytes + next.size > maxBytes)) break;
        const m = (await this.ready.shift())!;
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
          const ahead = this.ahead?.take(m);
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
    this.commits.schedule();
    if (!this.closed) this.ahead?.fill(this.ready.head);
    return res;
  }

  private setDelivered(m: Message): void {
    if (m.flags & Flags.DELIVERED) return;
    if (isStored(m)) this.index!.delivered([m.seq]);
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
    if (!isStored(m)) return undefined;
    return this.client!.read(m.id);
  }

  /** Removes messages for good: index ack, store ref released, delivery count dropped. */
  private forget(ms: Message[]): void {
    if (this.deliveryCounts.size > 0) for (const m of ms) this.deliveryCounts.delete(m.seq);
    this.ready.release(ms);
    const stored = ms.filter(isStored);
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
    this.commits.schedule();
    return ms.map((m) => m.id);
  }

  /** Returns pending acks to the ready messages in seq order, flags unchanged (delivered if they were). */
  requeue(seqs: readonly number[]): Buffer[] {
    this.checkOpen();
    const ms = this.takeUnacked(seqs);
    for (const m of ms) this.countReady(m, 1);
    this.ready.requeue(ms);
    return ms.map((m) => m.id);
  }

  /** Properties of the first `max` ready messages (for TTL: dropwhile / fetchwhile). */
  async peek(max: number): Promise<{ expiry: number; size: number; flags: number }[]> {
    this.checkOpen();
    await this.ready.fillHead(max);
    const res: { expiry: number; size: number; flags: number }[] = [];
    for (let i = 0; i < max; i++) {
      const m = this.ready.head.at(i);
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
    const picked: { m: Message; unacked: boolean }[] = (await this.ready.after(afterSeq, max)).map((m) => ({ m, unacked: false }));
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
    this.ahead?.clear();
    const ms = this.ready.clearHeld();
    this.forget(ms);
    let count = ms.length;
    const d = this.ready.delta;
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
    this.ready.resetDelta();
    this.readyBytes = 0;
    this.readyExpiring = 0;
    this.commits.schedule();
    return { count, persistentCount: before.c - this.persistentCount, persistentBytes: before.b - this.persistentBytes };
  }

  /** Forgets every pending ack. */
  purgeAcks(): void {
    this.checkOpen();
    const ms = [...this.unacked.values()];
    this.unacked.clear();
    this.unackedBytes = 0;
    this.forget(ms);
    this.commits.schedule();
  }

  /** Group commit now (see group-commit.ts): resolves once the confirms due are sent. */
  commit(): Promise<void> {
    return this.commits.commit();
  }

  /**
   * Clean stop: transient messages and pending acks are dropped, persistent
   * pending acks become ready again (delivered); the index folds its journal
   * into its segments and writes the clean marker.
   */
  async terminate(): Promise<void> {
    await this.stopForGood();
    if (this.index && this.client) {
      const terms = await this.index.terminate(this.nextSeq, this.storedCounts());
      if (terms.count !== this.persistentCount || terms.bytes !== this.persistentBytes) {
        this.log('warn', `queue ${this.name}: the index holds ${terms.count} messages (${terms.bytes} bytes), the queue counted ${this.persistentCount} (${this.persistentBytes})`);
      }
      await this.client.terminate();
    }
    await this.dropPaged();
  }

  /** The end of a clean stop or a delete: what waits is committed (and confirmed), then nothing more is taken. */
  private async stopForGood(): Promise<void> {
    this.checkOpen();
    await this.commits.stop();
    this.closed = true;
    this.ahead?.clear();
  }

  /** The delivery counts of stored messages: what a clean stop keeps (transient messages go). */
  private storedCounts(): [number, number][] {
    const res: [number, number][] = [];
    for (const [seq, n] of this.deliveryCounts) {
      const m = this.unacked.get(seq) ?? this.ready.get(seq);
      // Not held in memory: it lives only in the index (the delta), so it is stored.
      if (m === undefined || isStored(m)) res.push([seq, n]);
    }
    return res;
  }

  /** At the end of the queue: its transient messages go, and so do their paged bodies. */
  private async dropPaged(): Promise<void> {
    if (!this.pager) return;
    try {
      if (this.ready.paged > 0) this.ready.release([...this.ready, ...this.unacked.values()]);
      await this.pager.deleteAndTerminate();
    } catch (e) {
      // the transient store is wiped at the next start anyway
      this.log('warn', `queue ${this.name}: could not release its paged transient messages: ${(e as Error).message}`);
    }
  }

  /** Deletes the queue: every message goes, and its index. */
  async deleteAndTerminate(): Promise<void> {
    await this.stopForGood();
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
    this.commits.cancel();
    this.closed = true;
    this.ahead?.clear();
    await this.commits.settle();
    if (this.index) await this.index.close();
    await this.dropPaged();
  }
}
