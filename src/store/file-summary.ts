/**
 * The file summary, one entry per segment file, as the reference keeps it:
 * valid bytes, the contiguous valid prefix, left and right neighbours, size,
 * whether a compaction has it locked, and how many readers are in it.
 * Persisted (without locked/readers) on clean shutdown only.
 */
import * as path from 'path';
import { sealJson, takeFile, unsealJson, writeFileAtomic } from './fs-util';

export interface FileSummary {
  file: number;
  validTotalSize: number;
  contiguousTop: number;
  left: number | undefined;
  right: number | undefined;
  fileSize: number;
  locked: boolean;
  readers: number;
  /** A compaction found records failing their checksum here: never compacted again in this run. */
  damaged?: boolean;
}

export const FILE_SUMMARY_NAME = 'file_summary.json';

type Row = [file: number, valid: number, top: number, left: number | null, right: number | null, size: number];

export function newSummary(file: number, left: number | undefined): FileSummary {
  return { file, validTotalSize: 0, contiguousTop: 0, left, right: undefined, fileSize: 0, locked: false, readers: 0 };
}

export async function storeFileSummary(dir: string, summaries: Iterable<FileSummary>): Promise<void> {
  const rows: Row[] = [];
  for (const s of summaries) rows.push([s.file, s.validTotalSize, s.contiguousTop, s.left ?? null, s.right ?? null, s.fileSize]);
  await writeFileAtomic(path.join(dir, FILE_SUMMARY_NAME), sealJson({ version: 1, files: rows }));
}

function isRow(r: unknown): r is Row {
  if (!Array.isArray(r) || r.length !== 6) return false;
  const nat = (x: unknown): boolean => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  return nat(r[0]) && nat(r[1]) && nat(r[2]) && (r[3] === null || nat(r[3])) && (r[4] === null || nat(r[4])) && nat(r[5]);
}

/**
 * Reads (and deletes) the persisted summary; undefined if absent, garbled or
 * inconsistent. Entries come back ascending by file number.
 */
export async function recoverFileSummary(dir: string): Promise<FileSummary[] | undefined> {
  return parseFileSummary(unsealJson(await takeFile(path.join(dir, FILE_SUMMARY_NAME))));
}

/** The file summary a sealed state file held, or undefined if it is not a consistent one. */
export function parseFileSummary(v: unknown): FileSummary[] | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const { version, files } = v as { version?: unknown; files?: unknown };
  if (version !== 1 || !Array.isArray(files) || !files.every(isRow)) return undefined;
  const out = (files as Row[])
    .map(([file, valid, top, left, right, size]) => ({
      file,
      validTotalSize: valid,
      contiguousTop: top,
      left: left ?? undefined,
      right: right ?? undefined,
      fileSize: size,
      locked: false,
      readers: 0,
    }))
    .sort((a, b) => a.file - b.file);
  // neighbours must chain in order, and exactly one file (the current) has no right
  for (let i = 0; i < out.length; i++) {
    const s = out[i];
    if (s.left !== (i > 0 ? out[i - 1].file : undefined)) return undefined;
    if (s.right !== (i < out.length - 1 ? out[i + 1].file : undefined)) return undefined;
    if (s.validTotalSize > s.fileSize || s.contiguousTop > s.validTotalSize) return undefined;
  }
  return out;
}
