/**
 * The open's decision: may the state the last run left be trusted (a clean
 * start), or must the index be rebuilt from the segment files? Trusted only
 * if every piece agrees: the recovery terms and the file summary are there
 * (both are read and deleted, so they are trusted at most once), the index
 * kind and the client refs are those recorded, the files on disk are exactly
 * those summarised with those sizes, no compaction was cut short, and the
 * index itself recovers. Anything else logs why and rebuilds
 * (docs/STORE.md, "Start-up: clean and non-clean").
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { Index } from '../index/types';
import { FileSummary, recoverFileSummary } from './file-summary';
import type { ResolvedOptions } from './options';
import { CountedRefs, countMsgRefs, readRecoveryTerms, RebuildResult, rebuildFromSegments, recoverCrashedCompactions } from './recovery';
import { listNumbered, segmentPath, SEGMENT_EXT, TMP_EXT } from './segment-file';

/** What the open found and rebuilt: everything a store needs to start (a clean start has no hints and nothing failed or skipped). */
export interface StartState extends Pick<RebuildResult, 'summaries' | 'current' | 'currentSize' | 'checksumFailures' | 'skippedBytes' | 'tornBytes' | 'hints' | 'hintedFiles'> {
  clean: boolean;
  index: Index;
  scannedFiles: number;
  /** After a rebuild that counted references in memory: referenced ids found in no file. */
  unfound?: Set<string>;
}

export async function startState(o: ResolvedOptions): Promise<StartState> {
  const { dir, log, factory } = o;
  let attemptClean: boolean;
  if (o.clientRefs === undefined) {
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.mkdir(dir, { recursive: true });
    attemptClean = false;
  } else {
    await fsp.mkdir(dir, { recursive: true });
    attemptClean = !(await recoverCrashedCompactions(dir, log));
  }
  // Always taken (read and deleted), so that state left by this run's predecessor is trusted at most once.
  const recoveredSummary = await recoverFileSummary(dir);
  const terms = await readRecoveryTerms(dir);

  let clean = false;
  if (attemptClean && o.clientRefs !== undefined) {
    const want = [...new Set(o.clientRefs)].sort();
    const had = terms ? [...new Set(terms.clientRefs)].sort() : undefined;
    if (!terms || !recoveredSummary) log('warn', 'no clean shutdown state found; rebuilding the index from the segment files');
    else if (terms.indexKind !== factory.kind) log('warn', `index changed (${terms.indexKind} -> ${factory.kind}); rebuilding`);
    else if (JSON.stringify(want) !== JSON.stringify(had)) log('warn', 'client refs differ from those recorded at the last clean shutdown; rebuilding');
    else if (!(await filesMatch(dir, recoveredSummary))) log('warn', 'segment files differ from the recorded file summary; rebuilding');
    else clean = true;
  }
  const { index, recovered } = await factory.open(path.join(dir, 'index'), clean);
  if (clean && !recovered) {
    log('warn', `the ${factory.kind} index could not be recovered; rebuilding`);
    clean = false;
  }
  if (!clean && recovered) await index.clear();

  if (clean) {
    const summaries = recoveredSummary!;
    const last = summaries[summaries.length - 1];
    return { clean, index, summaries, current: last.file, currentSize: last.fileSize, checksumFailures: 0, skippedBytes: 0, tornBytes: 0, hints: [], hintedFiles: 0, scannedFiles: 0 };
  }
  let refs: CountedRefs = { inMemory: new Map(), spilled: false, deltas: 0 };
  if (o.clientRefs !== undefined && o.refDeltas) {
    refs = await countMsgRefs(index, o.refDeltas(), log, o.recoveryRefsInMemory);
    log('info', `recovery: ${refs.deltas} ref-count deltas read, ${refs.spilled ? index.size() : refs.inMemory.size} messages referenced`);
  }
  const r = await rebuildFromSegments(dir, index, refs, { log, concurrency: o.scanConcurrency });
  return {
    clean,
    index,
    summaries: r.summaries,
    current: r.current,
    currentSize: r.currentSize,
    checksumFailures: r.checksumFailures,
    skippedBytes: r.skippedBytes,
    tornBytes: r.tornBytes,
    hints: r.hints,
    hintedFiles: r.hintedFiles,
    scannedFiles: r.summaries.length + r.deletedFiles - r.hintedFiles,
    unfound: o.refDeltas ? r.unfound : undefined,
  };
}

/** The clean state is trusted only if the files on disk are exactly those summarised, with those sizes. */
export async function filesMatch(dir: string, summaries: FileSummary[]): Promise<boolean> {
  if (summaries.length === 0) return false;
  const files = await listNumbered(dir, SEGMENT_EXT);
  if ((await listNumbered(dir, TMP_EXT)).length) return false;
  if (files.length !== summaries.length) return false;
  for (let i = 0; i < files.length; i++) {
    if (files[i] !== summaries[i].file) return false;
    const st = await fsp.stat(segmentPath(dir, files[i]));
    if (st.size !== summaries[i].fileSize) return false;
  }
  return true;
}
