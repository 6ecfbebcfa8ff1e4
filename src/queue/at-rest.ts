/**
 * A stopped queue's index as it lies on disk, read without changing it (for
 * `warren inspect` and `warren verify`): its segment size, its clean marker
 * (read, not consumed: the next start still trusts it), its live entries
 * (segments merged with the journal, as a start sees them) and every damaged
 * byte range, with the file and offset where it lies.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { readFileIfPresent } from '../store/fs-util';
import { CleanTerms, parseCleanTerms } from './clean-marker';
import { DamageReport, listSegments } from './index-segments';
import { JournalEntry } from './journal-codec';
import { JOURNAL, liveBySegment, loadJournal, readOrInferLayout } from './queue-dir';
import { readQueueName } from './queue-name';

/** Same name as QUEUE_CLEAN_MARKER (clean-marker.ts), read here without consuming it. */
const CLEAN_MARKER = 'clean.json';

export interface QueueProblem {
  /** 'error': damage a start would skip (messages lost); 'warning': what a crash leaves and a start repairs. */
  severity: 'error' | 'warning';
  file: string;
  offset?: number;
  message: string;
}

export interface QueueAtRest {
  key: string;
  /** The queue's name, as recorded in its `name` file (queue-name.ts). */
  name?: string;
  dir: string;
  segmentEntries: number;
  /** The clean marker's terms; undefined if there is none or it is not trusted. */
  clean?: CleanTerms;
  /** A marker file is there but cannot be trusted (garbled, another version). */
  cleanMarkerGarbled: boolean;
  /** Live messages (published, not acked) and the sum of their sizes. */
  messages: number;
  bytes: number;
  /** Of them, delivered at least once (unacked or redelivered). */
  delivered: number;
  segmentFiles: number;
  segmentBytes: number;
  journalBytes: number;
  problems: QueueProblem[];
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await fsp.stat(file)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
}

/** Reads the queue index in `dir`; each live entry goes to `each`, a segment at a time. */
export async function readQueueAtRest(dir: string, each?: (e: JournalEntry) => void, configuredSegmentEntries?: number): Promise<QueueAtRest> {
  const problems: QueueProblem[] = [];
  const layout = await readOrInferLayout(dir, configuredSegmentEntries, (_level, msg) => problems.push({ severity: 'warning', file: path.join(dir, 'layout.json'), message: msg }));
  const segmentEntries = layout.segmentEntries ?? configuredSegmentEntries ?? 16384;
  const journalFile = path.join(dir, JOURNAL);
  const journal = await loadJournal(dir, segmentEntries);
  for (const d of journal.skipped) {
    problems.push({ severity: 'error', file: journalFile, offset: d.offset, message: `${d.reason} record, ${d.bytes} bytes; a start skips it and keeps the records after it` });
  }
  if (journal.tail) {
    problems.push({ severity: 'warning', file: journalFile, offset: journal.tail.offset, message: `${journal.tail.reason} tail of ${journal.tail.bytes} bytes (a write cut short by a crash); a start cuts it` });
  }
  const markerBytes = await readFileIfPresent(path.join(dir, CLEAN_MARKER));
  const clean = markerBytes && parseCleanTerms(markerBytes);
  const files = await listSegments(dir);
  let segmentBytes = 0;
  for (const n of files) segmentBytes += await fileSize(path.join(dir, `${n}.seg`));
  let messages = 0;
  let bytes = 0;
  let delivered = 0;
  const report: DamageReport = (_msg, file, d) => {
    problems.push({ severity: 'error', file, offset: d.offset, message: `${d.reason} record, ${d.bytes} bytes; a start skips it (its messages are lost to the queue)` });
  };
  for await (const { entries } of liveBySegment(dir, files, journal.state, report)) {
    for (const e of entries) {
      messages++;
      bytes += e.size;
      if (e.flags & 4) delivered++;
      each?.(e);
    }
  }
  return {
    key: path.basename(dir),
    name: await readQueueName(dir),
    dir,
    segmentEntries,
    clean,
    cleanMarkerGarbled: markerBytes !== undefined && clean === undefined,
    messages,
    bytes,
    delivered,
    segmentFiles: files.length,
    segmentBytes,
    journalBytes: journal.fileBytes,
    problems,
  };
}
