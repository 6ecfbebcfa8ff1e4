/**
 * A session is one queue process's view of its queue: it runs that queue's
 * requests strictly in arrival order (read-your-writes across async and sync
 * requests) and pushes its confirms.
 */
import * as path from 'path';
import { BackingQueue } from '../queue/backing-queue';
import { QueueIndex } from '../queue/queue-index';
import { log } from './log';
import { VhostState } from './vhosts';

/** Runs tasks one after another; a synchronous task runs at once when nothing is pending. */
export class SerialExecutor {
  private tail: Promise<void> | null = null;

  run<T>(task: () => T | Promise<T>): Promise<T> {
    let p: Promise<T>;
    if (this.tail === null) {
      let r: T | Promise<T>;
      try {
        r = task();
      } catch (e) {
        return Promise.reject(e);
      }
      if (!(r instanceof Promise)) return Promise.resolve(r);
      p = r;
    } else {
      p = this.tail.then(task);
    }
    const guard = p.then(
      () => undefined,
      () => undefined,
    );
    this.tail = guard;
    void guard.then(() => {
      if (this.tail === guard) this.tail = null;
    });
    return p;
  }

  idle(): Promise<void> {
    return this.tail ?? Promise.resolve();
  }
}

export interface SessionInfo {
  handle: number;
  vhost: string;
  key: string;
  name: string;
}

export class Session {
  readonly exec = new SerialExecutor();
  constructor(
    readonly info: SessionInfo,
    readonly queue: BackingQueue,
  ) {}
}

export interface OpenQueueArgs {
  vh: VhostState;
  key: string;
  name: string;
  durable: boolean;
  fresh: boolean;
  syncIntervalMs: number;
  onConfirm: (ids: Buffer[]) => void;
}

/**
 * Builds a queue: a fresh one, or a durable one recovered from its journal.
 * When the queue or the store did not stop cleanly, every recovered message is
 * marked redelivered and messages whose body is not in the store are dropped.
 */
export async function openQueue(a: OpenQueueArgs): Promise<BackingQueue> {
  const qdir = path.join(a.vh.queuesDir, a.key);
  const qlog = (level: 'info' | 'warn' | 'error', msg: string) => log(level, msg);
  if (!a.durable) {
    return new BackingQueue({ name: a.name, durable: false, onConfirm: a.onConfirm, log: qlog, syncIntervalMs: a.syncIntervalMs });
  }
  if (a.fresh) {
    const { rm } = await import('fs/promises');
    await rm(qdir, { recursive: true, force: true });
  }
  const { index, replay } = await QueueIndex.open(qdir, qlog);
  const client = a.vh.store.client(a.key);
  const wasClean = a.vh.cleanKeys.delete(a.key) && a.vh.storeClean;
  const clean = a.fresh || wasClean;
  let entries = replay.entries;
  if (!clean && entries.length > 0) {
    const kept = [];
    let missing = 0;
    const gone: number[] = [];
    for (const e of entries) {
      if (await a.vh.store.contains(e.id)) {
        e.flags |= 4; // delivered: after a crash every message may have been seen
        kept.push(e);
      } else {
        missing++;
        gone.push(e.seq);
      }
    }
    if (missing > 0) {
      log('warn', `queue ${a.name}: ${missing} messages recorded in the journal have no body in the store (never confirmed); dropped`);
      index.acked(gone);
    }
    entries = kept;
  }
  if (!a.fresh) {
    log('info', `queue ${a.name}: recovered ${entries.length} messages (${clean ? 'clean' : 'non-clean'} stop)`);
  }
  return new BackingQueue({
    name: a.name,
    durable: true,
    client,
    index,
    recovered: entries,
    nextSeq: replay.nextSeq,
    onConfirm: a.onConfirm,
    log: qlog,
    syncIntervalMs: a.syncIntervalMs,
  });
}
