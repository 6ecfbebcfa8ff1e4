/**
 * A queue's group commit: one journal write (and, when confirms wait for
 * stored messages, one fsync of the journal and of the store's records of
 * those messages) covers everything published since the last; only then are
 * their confirms sent. Confirms of messages not stored need no fsync and go
 * at once. One commit runs at a time; a failed one fails the queue, and its
 * confirms are never sent (the publishers get nacks when the queue process
 * ends).
 *
 * When a commit starts: with `syncIntervalMs` 0 (the default) as soon as the
 * current event-loop turn has posted its publishes, or, while one runs, the
 * moment it ends, so a batch is what arrived during the last commit and no
 * confirm waits on a timer; with `syncIntervalMs` > 0 that long after the
 * first waiting confirm. Journal records with no confirm waiting on them
 * (deliveries, acks) are written lazily, LAZY_WRITE_MS after the first.
 *
 * Durability `write` (the operator's choice, like RabbitMQ's classic queues v2
 * in 3.10): a confirm is sent once the journal and the store's records have
 * reached the kernel (they survive the broker's death, not the machine's);
 * the journal and the store are fsynced every `writeSyncIntervalMs`.
 */
import { BodyStore } from './messages';
import { QueueIndex } from './queue-index';
import { Timer, after } from '../util/timer';

/** Start a group commit at once when this many confirms wait. */
const EAGER_CONFIRMS = 2048;
/** Journal records no confirm waits on are written this long after the first. */
const LAZY_WRITE_MS = 5;

/** `fsync`: confirm after fsync (the default); `write`: confirm after the write reached the kernel, fsync on an interval. */
export type Durability = 'fsync' | 'write';
export const DURABILITIES: readonly Durability[] = ['fsync', 'write'];
/** Durability `write`: the default interval of the fsyncs (RabbitMQ's queue process syncs every 200 ms too). */
export const DEFAULT_WRITE_SYNC_INTERVAL_MS = 200;

export interface GroupCommitHost {
  index?: QueueIndex;
  client?: BodyStore;
  /** How long a stored message's confirm waits for others to share its commit (0: none). */
  syncIntervalMs: number;
  durability: Durability;
  /** With durability `write`: how often the journal is fsynced. */
  writeSyncIntervalMs: number;
  onConfirm: (ids: Buffer[]) => void;
  /** Told, per confirmed message, how long (seconds) it waited from awaitConfirm to its confirm (metrics). */
  onConfirmLatency?: (seconds: number) => void;
  /** The queue's sticky failure, if it failed. */
  failure(): Error | null;
  /** Fails the queue; returns the error it now fails with. */
  fail(e: Error): Error;
  closed(): boolean;
}

export class GroupCommit {
  /** Confirms waiting for the next commit, split by whether they need an fsync. */
  private confirmDurable: Buffer[] = [];
  private confirmNow: Buffer[] = [];
  /** With onConfirmLatency: when each waiting confirm arrived (performance.now(), ms), parallel to the lists above. */
  private durableSince: number[] = [];
  private nowSince: number[] = [];
  private timer: Timer | null = null;
  private committing: Promise<void> | null = null;
  /** Durability `write`: the journal's next fsync. */
  private fsyncTimer: Timer | null = null;

  constructor(private readonly h: GroupCommitHost) {}

  /** A message whose publisher waits for a confirm; `stored`: it needs the fsync (or, durability `write`, the write). */
  awaitConfirm(id: Buffer, stored: boolean): void {
    (stored ? this.confirmDurable : this.confirmNow).push(id);
    if (this.h.onConfirmLatency) (stored ? this.durableSince : this.nowSince).push(performance.now());
  }

  /** Arms the timer if anything waits (confirms, or journal records buffered). A commit running schedules the next when it ends. */
  schedule(): void {
    if (this.h.closed() || this.timer || this.committing) return;
    const waiting = this.confirmDurable.length + this.confirmNow.length;
    const buffered = this.h.index?.bufferedBytes ?? 0;
    if (waiting === 0 && buffered === 0) return;
    const delay = waiting >= EAGER_CONFIRMS || (waiting > 0 && this.confirmDurable.length === 0) ? 0 : waiting > 0 ? this.h.syncIntervalMs : LAZY_WRITE_MS;
    this.timer = after(delay, () => {
      this.timer = null;
      this.commit().catch(() => undefined); // commit() fails the queue itself
    });
  }

  /**
   * Writes the journal, and when confirms wait, fsyncs it and the store's
   * records of those messages (durability `write`: writes them), then
   * confirms them.
   */
  commit(): Promise<void> {
    if (this.committing) {
      // One commit at a time; the next one picks up whatever came meanwhile.
      return this.committing.then(() => this.commit());
    }
    this.timer?.cancel();
    this.timer = null;
    const durable = this.confirmDurable;
    const now = this.confirmNow;
    const since = this.h.onConfirmLatency ? this.durableSince.concat(this.nowSince) : [];
    this.confirmDurable = [];
    this.confirmNow = [];
    this.durableSince = [];
    this.nowSince = [];
    const h = this.h;
    const run = async (): Promise<void> => {
      const failed = h.failure();
      if (failed) throw failed;
      try {
        if (durable.length > 0 && h.durability === 'fsync') {
          await Promise.all([h.index!.sync(), h.client!.sync(durable)]);
        } else if (durable.length > 0) {
          await Promise.all([h.index!.write(), h.client!.written(durable)]);
          this.fsyncLater();
        } else if (h.index) {
          await h.index.write();
          if (h.durability === 'write') this.fsyncLater();
        }
      } catch (e) {
        // Its confirms are never sent: the publishers get nacks when the queue process ends.
        throw h.fail(e as Error);
      }
      const ids = now.length ? durable.concat(now) : durable;
      if (ids.length) h.onConfirm(ids);
      if (h.onConfirmLatency && since.length) {
        const at = performance.now();
        for (const t of since) h.onConfirmLatency((at - t) / 1000);
      }
    };
    this.committing = run().finally(() => {
      this.committing = null;
      if (!h.failure()) this.schedule();
    });
    return this.committing;
  }

  /** Durability `write`: the journal is fsynced within writeSyncIntervalMs of a write (the store fsyncs on its own timer). */
  private fsyncLater(): void {
    if (this.fsyncTimer || this.h.closed()) return;
    this.fsyncTimer = after(this.h.writeSyncIntervalMs, () => {
      this.fsyncTimer = null;
      if (this.h.failure() || this.h.closed()) return;
      this.h.index!.sync().catch((e: Error) => this.h.fail(e));
    });
  }

  /** No commit is started by the timers any more. */
  cancel(): void {
    this.timer?.cancel();
    this.timer = null;
    this.fsyncTimer?.cancel();
    this.fsyncTimer = null;
  }

  /** Cancels the timers and commits what waits (a clean stop or a delete). */
  async stop(): Promise<void> {
    this.cancel();
    await this.commit();
  }

  /** Waits for a commit in flight, if one is, whatever its outcome (an abandon). */
  async settle(): Promise<void> {
    if (this.committing) await this.committing.catch(() => undefined);
  }
}
