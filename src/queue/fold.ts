/**
 * A fold's rewrite of the segment files: each segment the journal touches is
 * read, has its journal part applied, and is replaced whole (temporary file,
 * fsync, rename; deleted when nothing in it is live), then the directory is
 * fsynced once. The caller truncates the journal only after this resolves.
 */
import { fsyncDir } from '../store/fs-util';
import { JournalEntry } from './journal-codec';
import { SegmentJournal, overlayInTurns } from './journal-state';
import { SegmentSummary, readSegment, writeSegment } from './index-segments';

/** Folds `parts` (segment → journal part) into the segment files of `dir`, keeping `segments` (what each file holds) up to date. */
export async function foldIntoSegments(
  dir: string,
  parts: Map<number, SegmentJournal>,
  segments: Map<number, SegmentSummary>,
  report: (msg: string) => void,
): Promise<void> {
  for (const n of [...parts.keys()].sort((a, b) => a - b)) {
    const live = segments.has(n) ? await readSegment(dir, n, report) : new Map<number, JournalEntry>();
    await overlayInTurns(live, parts.get(n));
    const summary = await writeSegment(
      dir,
      n,
      [...live.values()].sort((a, b) => a.seq - b.seq),
    );
    if (summary.count > 0) segments.set(n, summary);
    else segments.delete(n);
  }
  await fsyncDir(dir);
}
