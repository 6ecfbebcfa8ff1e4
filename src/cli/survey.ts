/**
 * One vhost's Warren data read at rest, the part `inspect`, `verify` and
 * `compact` share: every queue index (its live messages counted as
 * references, as a start's ref-count walk counts them), the store's
 * directory and clean state, and whether a start would trust it.
 */
import { readQueueAtRest, QueueAtRest } from '../queue/at-rest';
import { describeStore, StoreAtRest, wouldStartClean } from '../store/at-rest';
import { keyOf } from '../index/types';
import { promises as fsp } from 'fs';
import * as path from 'path';
import { VhostTarget } from './data-dirs';
import type { Progress } from './progress';

/** Who references a message: how many live queue entries, and the first of them. */
export interface Refs {
  count: number;
  queue: string;
  seq: number;
}

export interface Survey {
  target: VhostTarget;
  store: StoreAtRest;
  queues: QueueAtRest[];
  /** Per message id (keyOf), its references from the queue indexes. */
  refs: Map<string, Refs>;
  /** What the next start would do with the store's clean state. */
  start: { clean: boolean; reason?: string };
}

/** The queue keys (directories) of the vhost, ascending. */
export async function queueKeys(queuesDir: string): Promise<string[]> {
  try {
    const ents = await fsp.readdir(queuesDir, { withFileTypes: true });
    return ents.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

export async function survey(target: VhostTarget, progress: Progress): Promise<Survey> {
  const keys = await queueKeys(target.queues);
  const refs = new Map<string, Refs>();
  const queues: QueueAtRest[] = [];
  const bar = progress.start('queue indexes', keys.length, 'queues');
  for (const key of keys) {
    queues.push(
      await readQueueAtRest(path.join(target.queues, key), (e) => {
        const k = keyOf(e.id);
        const r = refs.get(k);
        if (r) r.count++;
        else refs.set(k, { count: 1, queue: key, seq: e.seq });
      }),
    );
    bar.tick(1);
  }
  bar.stop();
  const store = await describeStore(target.store);
  // The sidecar opens the store for the queues whose clean marker it trusts.
  const start = wouldStartClean(
    store,
    queues.filter((q) => q.clean).map((q) => q.key),
  );
  return { target, store, queues, refs, start };
}
