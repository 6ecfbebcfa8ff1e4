/**
 * `warren inspect DIR`: a vhost's store and queue indexes at rest. Segment
 * files with their sizes, valid and garbage bytes and a fragmentation
 * histogram; each queue index with its messages and bytes; the clean-shutdown
 * state and what the next start would trust. Valid bytes come from the file
 * summary when the next start trusts it, otherwise from a scan that claims
 * records as a rebuild would (the first intact record of each id a queue
 * holds). Read-only.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { keyOf } from '../index/types';
import type { QueueAtRest } from '../queue/at-rest';
import { scanSegment } from '../store';
import { segmentPath } from '../store/segment-file';
import { VhostTarget, vhostLabel } from './data-dirs';
import type { Progress } from './progress';
import { survey, Survey } from './survey';

export interface FileReport {
  file: number;
  bytes: number;
  validBytes: number;
  garbageBytes: number;
  garbageRatio: number;
  hint: boolean;
  current: boolean;
}

export interface QueueReport extends Pick<QueueAtRest, 'key' | 'name' | 'messages' | 'bytes' | 'delivered' | 'segmentFiles' | 'segmentBytes' | 'journalBytes'> {
  /** Whether it left a clean marker the next start trusts (no index scan for it). */
  clean: boolean;
  problems: number;
}

export interface InspectReport {
  vhost: string | null;
  dir: string;
  /** The pid of the sidecar that has the vhost open, if one does (the figures then move). */
  inUseBy: number | null;
  store: {
    dir: string;
    indexKind: string;
    indexBytes: number;
    validBytesFrom: 'file summary' | 'scan';
    files: FileReport[];
    totals: { files: number; bytes: number; validBytes: number; garbageBytes: number; garbageRatio: number };
    /** Files by garbage ratio, in tenths: [0] counts files with 0-10% garbage, ..., [9] 90-100%. */
    fragmentation: number[];
    compactionTemps: number[];
  };
  transient: { files: number; bytes: number };
  queues: QueueReport[];
  cleanState: { store: boolean; reason?: string; queuesClean: number; queuesNotClean: number };
}

/** Valid bytes per file as a rebuild would claim them: the first intact record of every id a queue holds. */
async function claimedBytes(s: Survey, progress: Progress): Promise<Map<number, number>> {
  const claimed = new Set<string>();
  const valid = new Map<number, number>();
  const bar = progress.start('segment files', s.store.files.reduce((n, f) => n + f.size, 0), 'bytes');
  for (const f of s.store.files) {
    const scan = await scanSegment(segmentPath(s.target.store, f.file));
    let v = 0;
    for (const r of scan.records) {
      const k = keyOf(r.id);
      if (!s.refs.has(k) || claimed.has(k)) continue;
      claimed.add(k);
      v += r.totalSize;
    }
    valid.set(f.file, v);
    bar.tick(f.size);
  }
  bar.stop();
  return valid;
}

async function dirFigures(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  try {
    for (const name of await fsp.readdir(dir)) {
      if (!name.endsWith('.rdq')) continue;
      files++;
      bytes += (await fsp.stat(path.join(dir, name))).size;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return { files, bytes };
}

export async function inspectVhost(target: VhostTarget, inUseBy: number | null, progress: Progress): Promise<InspectReport> {
  const s = await survey(target, progress);
  const fromSummary = s.start.clean;
  const valid = fromSummary ? new Map(s.store.files.map((f) => [f.file, f.summary!.validTotalSize])) : await claimedBytes(s, progress);
  const last = s.store.files.length ? s.store.files[s.store.files.length - 1].file : -1;
  const files: FileReport[] = s.store.files.map((f) => {
    const validBytes = valid.get(f.file) ?? 0;
    const garbageBytes = Math.max(0, f.size - validBytes);
    return { file: f.file, bytes: f.size, validBytes, garbageBytes, garbageRatio: f.size ? garbageBytes / f.size : 0, hint: f.hasHint, current: f.file === last };
  });
  const fragmentation = new Array<number>(10).fill(0);
  for (const f of files) fragmentation[Math.min(9, Math.floor(f.garbageRatio * 10))]++;
  const bytes = files.reduce((n, f) => n + f.bytes, 0);
  const validBytes = files.reduce((n, f) => n + f.validBytes, 0);
  const queuesClean = s.queues.filter((q) => q.clean).length;
  return {
    vhost: target.vhost ?? null,
    dir: target.warren,
    inUseBy,
    store: {
      dir: target.store,
      indexKind: s.store.terms?.indexKind ?? s.store.index.kind,
      indexBytes: s.store.index.bytes,
      validBytesFrom: fromSummary ? 'file summary' : 'scan',
      files,
      totals: { files: files.length, bytes, validBytes, garbageBytes: bytes - validBytes, garbageRatio: bytes ? (bytes - validBytes) / bytes : 0 },
      fragmentation,
      compactionTemps: s.store.compactionTemps,
    },
    transient: await dirFigures(target.transient),
    queues: s.queues.map((q) => ({
      key: q.key,
      name: q.name,
      messages: q.messages,
      bytes: q.bytes,
      delivered: q.delivered,
      segmentFiles: q.segmentFiles,
      segmentBytes: q.segmentBytes,
      journalBytes: q.journalBytes,
      clean: q.clean !== undefined,
      problems: q.problems.length,
    })),
    cleanState: { store: s.start.clean, reason: s.start.reason, queuesClean, queuesNotClean: s.queues.length - queuesClean },
  };
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

export function formatInspect(r: InspectReport, t: VhostTarget): string {
  const st = r.store;
  const out = [`${vhostLabel(t)} (${r.dir})${r.inUseBy !== null ? ` — IN USE by sidecar pid ${r.inUseBy}: figures are a moving snapshot` : ''}`];
  out.push(
    `  store ${st.dir}: ${st.totals.files} segment files, ${st.totals.bytes} bytes, ${st.totals.validBytes} valid, ${st.totals.garbageBytes} garbage (${pct(st.totals.garbageRatio)}); index ${st.indexKind} (${st.indexBytes} bytes); valid bytes from the ${st.validBytesFrom}`,
  );
  out.push('    file        bytes        valid      garbage  garbage%  hint');
  for (const f of st.files) {
    out.push(`    ${String(f.file).padStart(4)}${f.current ? '*' : ' '} ${String(f.bytes).padStart(12)} ${String(f.validBytes).padStart(12)} ${String(f.garbageBytes).padStart(12)}  ${pct(f.garbageRatio).padStart(7)}  ${f.hint ? 'yes' : 'no'}`);
  }
  out.push('    (* the current file, appended to; never compacted)');
  out.push(`  fragmentation (files by garbage ratio): ${st.fragmentation.map((n, i) => `${i * 10}-${i * 10 + 10}%: ${n}`).join(', ')}`);
  if (st.compactionTemps.length) out.push(`  compaction cut short: ${st.compactionTemps.map((n) => `${n}.rdt`).join(', ')} (a start appends them back)`);
  out.push(`  transient store: ${r.transient.files} files, ${r.transient.bytes} bytes (emptied at every start)`);
  out.push(`  ${r.queues.length} queue indexes:`);
  out.push('    key                               messages        bytes  delivered  segments  journal  clean  name');
  for (const q of r.queues) {
    out.push(`    ${q.key}  ${String(q.messages).padStart(8)} ${String(q.bytes).padStart(12)} ${String(q.delivered).padStart(10)} ${String(q.segmentFiles).padStart(9)} ${String(q.journalBytes).padStart(8)}  ${q.clean ? 'yes' : 'no '}    ${q.name !== undefined ? JSON.stringify(q.name) : '(not recorded)'}${q.problems ? `  (${q.problems} problems: run warren verify)` : ''}`);
  }
  const c = r.cleanState;
  out.push(
    c.store
      ? `  next start: clean (the store's index and summary are trusted); ${c.queuesClean} queues clean, ${c.queuesNotClean} scanned`
      : `  next start: ${c.reason}; ${c.queuesClean} queues clean, ${c.queuesNotClean} scanned`,
  );
  return out.join('\n') + '\n';
}
