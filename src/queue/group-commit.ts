/**
 * A queue's group commit: one journal write (and, when confirms wait for
 * stored messages, one fsync of the journal and of the store's records of
 * those messages) covers everything published since the last; only then are
 * their confirms sent. Confirms of messages not stored need no fsync and go
 * at once. One commit runs at a time; a failed one fails the queue, and its
 * confirms are never sent (the publishers get nacks when the queue process
 * ends).
 */
import { BodyStore } from './messages';
import { QueueIndex } from './queue-index';

/** Start a group commit at once when this many confirms wait. */
const EAGER_CONFIRMS = 2048;

export interface GroupCommitHost {
  index?: QueueIndex;
  client?: BodyStore;
  /** Longest wait before a commit when stored messages wait for their confirm. */
  syncIntervalMs: number;
  onConfirm: (ids: Buffer[]) => void;
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
  private timer: NodeJS.Timeout | null = null;
  private committing: Promise<void> | null = null;

  constructor(private readonly h: GroupCommitHost) {}

  /** A message whose publisher waits for a confirm; `stored`: it needs the fsync. */
  awaitConfirm(id: Buffer, stored: boolean): void {
    (stored ? this.confirmDurable : this.confirmNow).push(id);
  }

  /** Arms the timer if anything waits (confirms, or journal records buffered). */
  schedule(): void {
    if (this.h.closed() || this.timer) return;
    const waiting = this.confirmDurable.length + this.confirmNow.length;
    const buffered = this.h.index?.bufferedBytes ?? 0;
    if (waiting === 0 && buffered === 0) return;
    const delay = waiting >= EAGER_CONFIRMS || (waiting > 0 && this.confirmDurable.length === 0) ? 0 : this.h.syncIntervalMs;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.commit().catch(() => undefined); // commit() fails the queue itself
    }, delay);
  }

  /**
   * Writes the journal, and when confirms wait, fsyncs it and the store's
   * records of those messages, then confirms them.
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
    const h = this.h;
    const run = async (): Promise<void> => {
      const failed = h.failure();
      if (failed) throw failed;
      try {
        if (durable.length > 0) {
          await Promise.all([h.index!.sync(), h.client!.sync(durable)]);
        } else if (h.index) {
          await h.index.write();
        }
      } catch (e) {
        // Its confirms are never sent: the publishers get nacks when the queue process ends.
        throw h.fail(e as Error);
      }
      const ids = now.length ? durable.concat(now) : durable;
      if (ids.length) h.onConfirm(ids);
    };
    this.committing = run().finally(() => {
      this.committing = null;
      if (!h.failure()) this.schedule();
    });
    return this.committing;
  }

  /** No commit is started by the timer any more. */
  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Cancels the timer and commits what waits (a clean stop or a delete). */
  async stop(): Promise<void> {
    this.cancel();
    await this.commit();
  }

  /** Waits for a commit in flight, if one is, whatever its outcome (an abandon). */
  async settle(): Promise<void> {
    if (this.committing) await this.committing.catch(() => undefined);
  }
}
