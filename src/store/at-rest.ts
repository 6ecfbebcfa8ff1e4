/**
 * A stopped store's directory as it lies on disk, read without changing it
 * (for `warren inspect`, `warren verify` and `warren compact`): its segment
 * files and hints, the clean-stop state (file summary, recovery terms, the
 * index's state: read, not consumed) and whether a start would trust it, as
 * startup.ts decides.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { describeIndex, IndexAtRest } from '../index/at-rest';
import { FileSummary, FILE_SUMMARY_NAME, parseFileSummary } from './file-summary';
import { readFileIfPresent, unsealJson } from './fs-util';
import { HINT_EXT } from './hint-file';
import { parseRecoveryTerms, RecoveryTerms, RECOVERY_TERMS_NAME } from './recovery';
import { listNumbered, segmentPath, SEGMENT_EXT, TMP_EXT } from './segment-file';
import { filesMatch } from './startup';

export interface SegmentAtRest {
  file: number;
  size: number;
  hasHint: boolean;
  /** The file summary's row for it, after a clean stop. */
  summary?: FileSummary;
}

export interface StoreAtRest {
  dir: string;
  /** Ascending; the last is the current file (the only one appended to). */
  files: SegmentAtRest[];
  /** `<n>.rdt` left by a compaction cut short (a start appends them back). */
  compactionTemps: number[];
  summary?: FileSummary[];
  terms?: RecoveryTerms;
  /** Whether the files on disk are exactly those the summary lists, with those sizes. */
  filesMatchSummary: boolean;
  index: IndexAtRest;
}

export async function describeStore(dir: string): Promise<StoreAtRest> {
  const hints = new Set(await listNumbered(dir, HINT_EXT));
  const summary = parseFileSummary(unsealJson(await readFileIfPresent(path.join(dir, FILE_SUMMARY_NAME))));
  const rows = new Map((summary ?? []).map((s) => [s.file, s]));
  const files: SegmentAtRest[] = [];
  for (const file of await listNumbered(dir, SEGMENT_EXT)) {
    // A running store (inspect is allowed then) may delete a file after the listing.
    const st = await fsp.stat(segmentPath(dir, file)).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    if (st) files.push({ file, size: st.size, hasHint: hints.has(file), summary: rows.get(file) });
  }
  return {
    dir,
    files,
    compactionTemps: await listNumbered(dir, TMP_EXT),
    summary,
    terms: parseRecoveryTerms(unsealJson(await readFileIfPresent(path.join(dir, RECOVERY_TERMS_NAME)))),
    filesMatchSummary: summary !== undefined && (await filesMatch(dir, summary)),
    index: await describeIndex(path.join(dir, 'index')),
  };
}

/**
 * Whether a start that opens the store for `clientRefs` (the sidecar passes
 * the queues whose clean marker is valid) would trust its clean state, and if
 * not, why: startup.ts's decision, taken on the state at rest.
 */
export function wouldStartClean(s: StoreAtRest, clientRefs: readonly string[]): { clean: boolean; reason?: string } {
  const sorted = (xs: readonly string[]): string => JSON.stringify([...new Set(xs)].sort());
  if (!s.terms || !s.summary) return { clean: false, reason: 'no clean shutdown state (not stopped cleanly, or in use): a start rebuilds the index from the segment files' };
  if (s.compactionTemps.length) return { clean: false, reason: 'a compaction was cut short: a start finishes it and rebuilds' };
  if (!s.filesMatchSummary) return { clean: false, reason: 'the segment files differ from the recorded file summary: a start rebuilds' };
  if (s.terms.indexKind !== s.index.kind) return { clean: false, reason: `the recorded index kind is ${s.terms.indexKind} but the index directory holds ${s.index.kind}: a start rebuilds` };
  if (!s.index.clean) return { clean: false, reason: `the ${s.index.kind} index's clean state is not whole (${s.index.reason}): a start rebuilds` };
  if (sorted(s.terms.clientRefs) !== sorted(clientRefs)) return { clean: false, reason: 'the queues that stopped cleanly are not those the store recorded: a start rebuilds the reference counts from the queue indexes' };
  return { clean: true };
}
