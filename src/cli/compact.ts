/**
 * `warren compact DIR`: offline compaction of a stopped vhost store. The
 * store is opened as the sidecar's START opens it (its clean state trusted if
 * the queues that stopped cleanly are those it recorded; otherwise its
 * reference counts rebuilt from every queue index on disk, so nothing a queue
 * holds can be taken for garbage), every pair of files that fits in one and
 * holds garbage is combined, and the store is closed cleanly, recording the
 * same queues, so the next start is as clean as it would have been. The
 * queues' own clean markers are left as they are. A vhost a running sidecar
 * has open is refused before anything is read.
 */
import { MessageStore } from '../store';
import { indexRefDeltas } from '../queue/ref-deltas';
import type { Logger } from '../util/logger';
import { VhostTarget } from './data-dirs';
import type { Progress } from './progress';
import { survey } from './survey';

export interface CompactReport {
  vhost: string | null;
  dir: string;
  /** How the store opened: its clean state trusted, or its index rebuilt from the segment files. */
  opened: 'clean' | 'rebuilt';
  before: { files: number; bytes: number; validBytes: number };
  after: { files: number; bytes: number; validBytes: number };
  compactions: number;
  reclaimedBytes: number;
}

export interface CompactOptions {
  /** The broker's file size limit (the sidecar's --file-size-limit); default the plugin's. */
  fileSizeLimit?: number;
  /** The index to open the store with when the directory does not say (default the plugin's, leveldb). */
  defaultIndex?: string;
}

export async function compactVhost(target: VhostTarget, progress: Progress, log: Logger, opts: CompactOptions = {}): Promise<CompactReport> {
  const s = await survey(target, progress);
  const cleanKeys = s.queues.filter((q) => q.clean).map((q) => q.key);
  const allKeys = s.queues.map((q) => q.key);
  const index = s.store.terms?.indexKind ?? (s.store.index.kind !== 'none' ? s.store.index.kind : (opts.defaultIndex ?? 'leveldb'));
  const store = await MessageStore.open({
    dir: target.store,
    index,
    fileSizeLimit: opts.fileSizeLimit,
    clientRefs: cleanKeys,
    refDeltas: () => indexRefDeltas(target.queues, allKeys, log),
    log,
  });
  try {
    for (const k of cleanKeys) store.client(k);
    const st0 = store.stats();
    const before = { files: st0.files, bytes: st0.fileBytes, validBytes: st0.validBytes };
    const candidates = Math.max(0, st0.files - 2);
    const bar = progress.start('compacting', candidates, 'pairs');
    let last = 0;
    const compactions = await store.compactAll((n) => {
      bar.tick(n - last);
      last = n;
    });
    bar.stop();
    const st = store.stats();
    const after = { files: st.files, bytes: st.fileBytes, validBytes: st.validBytes };
    await store.close();
    return { vhost: target.vhost ?? null, dir: target.warren, opened: st0.successfullyRecovered ? 'clean' : 'rebuilt', before, after, compactions, reclaimedBytes: st.reclaimedBytes };
  } catch (e) {
    await store.close().catch(() => undefined);
    throw e;
  }
}
