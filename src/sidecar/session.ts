/**
 * A session is one queue process's view of its queue: it runs that queue's
 * requests strictly in arrival order (read-your-writes across async and sync
 * requests) and pushes its confirms.
 */
import * as path from 'path';
import { BackingQueue } from '../queue/backing-queue';
import type { Durability } from '../queue/group-commit';
import { SerialQueue } from '../util/serial-queue';
import { QueueIndex } from '../queue/queue-index';
import { recordQueueName } from '../queue/queue-name';
import type { QueueLayout } from './config';
import { log } from './log';
import { presenceCheck, PresenceCounts } from './presence';
import { VhostState } from './vhosts';

export interface SessionInfo {
  handle: number;
  vhost: string;
  key: string;
  name: string;
}

export class Session {
  /** The queue's requests, in arrival order; a synchronous one runs at once when nothing waits. */
  readonly exec = new SerialQueue(true);
  constructor(
    readonly info: SessionInfo,
    readonly queue: BackingQueue,
  ) {}
}

export interface OpenQueueArgs {
  vh: VhostState;
  key: string;
  /** For log lines: `'q' in vhost '/'`. */
  name: string;
  /** The queue's own name, recorded in its index directory for the offline tools. */
  queueName: string;
  durable: boolean;
  fresh: boolean;
  syncIntervalMs: number;
  durability: Durability;
  writeSyncIntervalMs: number;
  layout?: QueueLayout;
  onConfirm: (ids: Buffer[]) => void;
  onConfirmLatency?: (seconds: number) => void;
  onFailure: (e: Error) => void;
}

/**
 * Builds a queue: a fresh one, or a durable one recovered from its index.
 * When the queue or the store did not stop cleanly, every recovered message is
 * marked redelivered and messages whose body is not in the store are dropped;
 * the index streams its segments for that, keeping none of them in memory.
 */
export async function openQueue(a: OpenQueueArgs): Promise<BackingQueue> {
  const qdir = path.join(a.vh.queuesDir, a.key);
  // BackingQueue names the queue in its own lines; the index's lines name files, so they get the queue's name put before them.
  const qlog = (level: 'info' | 'warn' | 'error', msg: string) => log(level, msg);
  const ilog = (level: 'info' | 'warn' | 'error', msg: string) => log(level, `queue ${a.name}: ${msg}`);
  const windows = { headWindow: a.layout?.window, tailWindow: a.layout?.window, pager: a.vh.transient.client(a.key) };
  if (!a.durable) {
    return new BackingQueue({ name: a.name, durable: false, onConfirm: a.onConfirm, onConfirmLatency: a.onConfirmLatency, onFailure: a.onFailure, log: qlog, syncIntervalMs: a.syncIntervalMs, ...windows });
  }
  // A fresh durable queue has no directory yet: the server refuses INIT new over an existing one.
  const terms = a.vh.cleanKeys.get(a.key);
  a.vh.cleanKeys.delete(a.key);
  const clean = a.fresh || (terms !== undefined && a.vh.storeClean);
  const started = Date.now();
  const counts: PresenceCounts = { fromWalk: 0, asked: 0 };
  const contains = clean ? undefined : presenceCheck(a.vh.store, a.vh.walk, a.key, counts);
  if (a.vh.walk?.digests.size === 0) a.vh.walk = undefined; // every walked queue has had its first INIT
  const { index, recovery } = await QueueIndex.open(qdir, {
    log: ilog,
    segmentEntries: a.layout?.segmentEntries,
    journalEntries: a.layout?.journalEntries,
    terms: clean ? terms : undefined,
    contains,
  });
  // Advisory (recovery never reads it): a failure is logged, the queue still opens.
  await recordQueueName(qdir, a.queueName).catch((e: Error) => log('warn', `queue ${a.name}: could not record its name in ${qdir}: ${e.message}`));
  if (recovery.dropped > 0) {
    log('warn', `queue ${a.name}: ${recovery.dropped} messages recorded in the queue index have no body in the store (never confirmed); dropped`);
  }
  if (!a.fresh) {
    log(
      'info',
      `queue ${a.name}: recovered ${recovery.count} messages (${clean ? 'clean' : 'non-clean'} stop${recovery.scanned ? ', index scanned' : ''}` +
        `${contains ? `; bodies: ${counts.fromWalk} known from the start-up walk, ${counts.asked} asked of the store` : ''}) in ${Date.now() - started} ms`,
    );
  }
  return new BackingQueue({
    name: a.name,
    durable: true,
    client: a.vh.store.client(a.key),
    index,
    recovered: recovery,
    nextSeq: recovery.nextSeq,
    onConfirm: a.onConfirm,
    onConfirmLatency: a.onConfirmLatency,
    onFailure: a.onFailure,
    log: qlog,
    syncIntervalMs: a.syncIntervalMs,
    durability: a.durability,
    writeSyncIntervalMs: a.writeSyncIntervalMs,
    ...windows,
  });
}
