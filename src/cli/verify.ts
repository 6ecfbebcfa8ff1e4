/**
 * `warren verify DIR`: reads a stopped vhost's data whole and says whether it
 * is sound. Read-only. It checksums every record of every segment file, reads
 * every queue index, and cross-checks them:
 *   - every message a queue holds has an intact record in the store;
 *   - after a clean stop (the index is what the next start trusts): every
 *     index entry points at an intact record of its id, its ref count equals
 *     the number of queue entries referencing it (one with references left
 *     and no queue holding it would never be reclaimed), every referenced
 *     message is indexed, and the file summary's valid bytes are the index's.
 * Each problem names its file and offset. Errors are damage or lost
 * messages; warnings are what a crash leaves and the next start repairs.
 */
import * as path from 'path';
import { keyOf } from '../index/types';
import { forEachIndexEntry } from '../index/at-rest';
import { MsgLocation } from '../index/types';
import { queueLabel } from '../queue/queue-name';
import { scanSegment } from '../store';
import { segmentPath } from '../store/segment-file';
import { VhostTarget, vhostLabel } from './data-dirs';
import type { Progress } from './progress';
import { survey } from './survey';

export type ProblemKind =
  | 'damaged-record' // bytes of a segment file holding no intact record
  | 'queue-index' // damage in a queue's journal or segment files, a garbled marker or layout
  | 'missing-message' // a queue holds a message the store has no intact record of
  | 'not-indexed' // a referenced message the (trusted) index does not list
  | 'dangling-entry' // an index entry pointing at no intact record of its id
  | 'ref-count' // an index entry's ref count differs from the queues' references
  | 'unreferenced' // an index entry with references left that no queue holds
  | 'file-summary' // the summary's valid bytes for a file differ from the index's
  | 'compaction-temp'; // a compaction cut short

export interface Problem {
  severity: 'error' | 'warning';
  kind: ProblemKind;
  file?: string;
  offset?: number;
  message: string;
}

export interface VerifyReport {
  vhost: string | null;
  dir: string;
  sound: boolean;
  /** Whether the next start trusts the store's clean state (and so whether the index was cross-checked). */
  cleanState: boolean;
  cleanStateReason?: string;
  indexChecked: boolean;
  figures: {
    queues: number;
    queueMessages: number;
    referencedMessages: number;
    segmentFiles: number;
    segmentBytes: number;
    intactRecords: number;
    indexEntries?: number;
  };
  problems: Problem[];
}

const hex = (k: string): string => Buffer.from(k, 'latin1').toString('hex');

interface IndexedAt extends MsgLocation {
  key: string;
  found: boolean;
}

export async function verifyVhost(target: VhostTarget, progress: Progress): Promise<VerifyReport> {
  const s = await survey(target, progress);
  const problems: Problem[] = [];
  for (const q of s.queues) {
    for (const p of q.problems) problems.push({ severity: p.severity, kind: 'queue-index', file: p.file, offset: p.offset, message: `queue ${queueLabel(q)}: ${p.message}` });
    if (q.cleanMarkerGarbled) problems.push({ severity: 'warning', kind: 'queue-index', file: path.join(q.dir, 'clean.json'), message: `queue ${queueLabel(q)}: its clean marker cannot be trusted; a start reads the whole index` });
  }
  for (const n of s.store.compactionTemps) {
    problems.push({ severity: 'warning', kind: 'compaction-temp', file: path.join(target.store, `${n}.rdt`), message: 'a compaction was cut short; a start appends these copies back to their file' });
  }

  // With a trusted index: its entries by file and offset, checked off as the scan meets them.
  const indexChecked = s.start.clean;
  const indexed = new Map<number, Map<number, IndexedAt>>();
  const byKey = new Map<string, IndexedAt>();
  if (indexChecked) {
    await forEachIndexEntry(path.join(target.store, 'index'), (key, loc) => {
      const at: IndexedAt = { ...loc, key, found: false };
      byKey.set(key, at);
      let f = indexed.get(loc.file);
      if (!f) indexed.set(loc.file, (f = new Map()));
      f.set(loc.offset, at);
    });
  }

  // Checksum every record; the first intact record of each referenced id is the one a rebuild would claim.
  const present = new Set<string>();
  const files = s.store.files;
  const current = files.length ? files[files.length - 1].file : -1;
  let intactRecords = 0;
  let segmentBytes = 0;
  const bar = progress.start('segment files', files.reduce((n, f) => n + f.size, 0), 'bytes');
  for (const f of files) {
    const file = segmentPath(target.store, f.file);
    const scan = await scanSegment(file);
    segmentBytes += scan.fileSize;
    intactRecords += scan.records.length;
    const here = indexed.get(f.file);
    for (const r of scan.records) {
      const k = keyOf(r.id);
      if (s.refs.has(k)) present.add(k);
      const at = here?.get(r.offset);
      if (at && at.key === k && at.totalSize === r.totalSize) at.found = true;
    }
    for (const d of scan.damaged) {
      const crashTail = f.file === current && !s.start.clean && d.checksumFailures === 0;
      problems.push({
        severity: crashTail ? 'warning' : 'error',
        kind: 'damaged-record',
        file,
        offset: d.offset,
        message: d.checksumFailures
          ? `${d.checksumFailures} record(s) failing their checksum in ${d.size} bytes; a start skips them, and the messages they held are lost`
          : crashTail
            ? `${d.size} bytes holding no intact record in the current file (writes cut short by a crash); a start covers or cuts them`
            : `${d.size} bytes holding no intact record`,
      });
    }
    bar.tick(f.size);
  }
  bar.stop();

  let queueMessages = 0;
  for (const q of s.queues) queueMessages += q.messages;
  const labels = new Map(s.queues.map((q) => [q.key, queueLabel(q)]));
  for (const [k, r] of s.refs) {
    if (!present.has(k)) {
      problems.push({
        severity: 'error',
        kind: 'missing-message',
        file: path.join(target.queues, r.queue),
        message: `queue ${labels.get(r.queue)} holds message ${hex(k)} (seq ${r.seq}${r.count > 1 ? `, ${r.count} references in all` : ''}) but no segment file has an intact record of it`,
      });
    } else if (indexChecked && !byKey.has(k)) {
      problems.push({ severity: 'error', kind: 'not-indexed', file: path.join(target.queues, r.queue), message: `queue ${labels.get(r.queue)} holds message ${hex(k)} (seq ${r.seq}) but the index has no entry for it: a clean start could not read it` });
    }
  }
  if (indexChecked) {
    const validByFile = new Map<number, number>();
    for (const at of byKey.values()) {
      const refs = s.refs.get(at.key)?.count ?? 0;
      const file = segmentPath(target.store, at.file);
      if (at.refCount > 0) validByFile.set(at.file, (validByFile.get(at.file) ?? 0) + at.totalSize);
      if (!at.found) {
        problems.push({ severity: 'error', kind: 'dangling-entry', file, offset: at.offset, message: `the index places message ${hex(at.key)} (${at.totalSize} bytes) here, but no intact record of it is there` });
      }
      if (refs === 0 && at.refCount > 0) {
        problems.push({ severity: 'error', kind: 'unreferenced', file, offset: at.offset, message: `message ${hex(at.key)} has ref count ${at.refCount} in the index but no queue holds it: it would never be reclaimed` });
      } else if (refs !== at.refCount) {
        problems.push({ severity: 'error', kind: 'ref-count', file, offset: at.offset, message: `message ${hex(at.key)}: ref count ${at.refCount} in the index, ${refs} queue entries reference it` });
      }
    }
    for (const f of files) {
      const want = validByFile.get(f.file) ?? 0;
      if (f.summary && f.summary.validTotalSize !== want) {
        problems.push({ severity: 'error', kind: 'file-summary', file: segmentPath(target.store, f.file), message: `the file summary says ${f.summary.validTotalSize} valid bytes, the index's live entries in this file add up to ${want}` });
      }
    }
  }
  return {
    vhost: target.vhost ?? null,
    dir: target.warren,
    sound: !problems.some((p) => p.severity === 'error'),
    cleanState: s.start.clean,
    cleanStateReason: s.start.reason,
    indexChecked,
    figures: {
      queues: s.queues.length,
      queueMessages,
      referencedMessages: s.refs.size,
      segmentFiles: files.length,
      segmentBytes,
      intactRecords,
      indexEntries: indexChecked ? byKey.size : undefined,
    },
    problems,
  };
}

const SHOWN_PER_KIND = 20;

/** The report for a terminal: figures, then problems (at most 20 of a kind; --json has them all). */
export function formatVerify(r: VerifyReport, t: VhostTarget): string {
  const f = r.figures;
  const out = [
    `${vhostLabel(t)} (${r.dir}): ${r.sound ? 'SOUND' : 'NOT SOUND'}`,
    `  ${f.queues} queue indexes holding ${f.queueMessages} messages (${f.referencedMessages} distinct); ${f.segmentFiles} segment files, ${f.segmentBytes} bytes, ${f.intactRecords} intact records`,
    r.indexChecked
      ? `  clean state: the next start trusts it; index cross-checked (${f.indexEntries} entries)`
      : `  clean state: not trusted (${r.cleanStateReason}); the index was not cross-checked, a start rebuilds it`,
  ];
  const shown = new Map<ProblemKind, number>();
  for (const p of r.problems) {
    const n = (shown.get(p.kind) ?? 0) + 1;
    shown.set(p.kind, n);
    if (n <= SHOWN_PER_KIND) out.push(`  ${p.severity} [${p.kind}] ${p.file ?? ''}${p.offset !== undefined ? ` @${p.offset}` : ''}: ${p.message}`);
  }
  for (const [kind, n] of shown) if (n > SHOWN_PER_KIND) out.push(`  ... and ${n - SHOWN_PER_KIND} more [${kind}] (--json lists them all)`);
  if (!r.problems.length) out.push('  no problems found');
  return out.join('\n') + '\n';
}
