/**
 * The store's file summaries and their two totals (the reference's
 * file_summary table with sum_valid_data and sum_file_size). Every change to
 * a summary's sizes or links goes through here, so the totals always equal
 * the sums over the files. The per-file `locked`, `readers` and `damaged`
 * flags belong to the compactor and the readers and are set on the entries.
 */
import { FileSummary, newSummary } from './file-summary';

export class FileTable {
  private readonly byFile = new Map<number, FileSummary>();
  /** Bytes of live records, over all files. */
  private valid = 0;
  /** Bytes of all files. */
  private total = 0;

  constructor(summaries: Iterable<FileSummary>) {
    for (const s of summaries) {
      this.byFile.set(s.file, s);
      this.valid += s.validTotalSize;
      this.total += s.fileSize;
    }
  }

  get(file: number): FileSummary | undefined {
    return this.byFile.get(file);
  }

  has(file: number): boolean {
    return this.byFile.has(file);
  }

  get size(): number {
    return this.byFile.size;
  }

  get validBytes(): number {
    return this.valid;
  }

  get fileBytes(): number {
    return this.total;
  }

  /** (file bytes - valid bytes) / file bytes; 0 when there are none. */
  get garbageRatio(): number {
    return this.total > 0 ? (this.total - this.valid) / this.total : 0;
  }

  /** The summaries, ascending by file number. */
  sorted(): FileSummary[] {
    return [...this.byFile.values()].sort((a, b) => a.file - b.file);
  }

  eldest(): FileSummary | undefined {
    let min: FileSummary | undefined;
    for (const s of this.byFile.values()) if (!min || s.file < min.file) min = s;
    return min;
  }

  /** A record of `size` bytes appended at `offset` of `fs` (the current file). */
  appended(fs: FileSummary, offset: number, size: number): void {
    const top = fs.contiguousTop;
    fs.validTotalSize += size;
    if (offset === top) fs.contiguousTop = fs.validTotalSize;
    fs.fileSize += size;
    this.valid += size;
    this.total += size;
  }

  /** The record of `size` bytes at `offset` of `fs` became garbage. */
  released(fs: FileSummary, offset: number, size: number): void {
    fs.contiguousTop = Math.min(fs.contiguousTop, offset);
    fs.validTotalSize -= size;
    this.valid -= size;
  }

  /** A new, empty current file `file` to the right of `prev`. */
  rolled(prev: number, file: number): void {
    this.byFile.set(file, newSummary(file, prev));
    this.byFile.get(prev)!.right = file;
  }

  /** `fs` leaves the table (its file is being deleted); its neighbours are linked to each other. */
  unlink(fs: FileSummary): void {
    if (fs.right !== undefined) this.byFile.get(fs.right)!.left = fs.left;
    if (fs.left !== undefined) this.byFile.get(fs.left)!.right = fs.right;
    this.byFile.delete(fs.file);
    this.total -= fs.fileSize;
  }

  /**
   * `src`'s live records were combined into `dst`, which now holds `size`
   * bytes, all of them live; `src` leaves the table. Returns the bytes reclaimed.
   */
  combined(src: FileSummary, dst: FileSummary, size: number): number {
    // the source's right may have changed meanwhile (a file deleted), never the destination's
    const srcRight = src.right;
    if (srcRight !== undefined) this.byFile.get(srcRight)!.left = dst.file;
    const reclaimed = src.fileSize + dst.fileSize - size;
    this.valid += size - (src.validTotalSize + dst.validTotalSize);
    this.total -= reclaimed;
    dst.right = srcRight;
    dst.validTotalSize = size;
    dst.contiguousTop = size;
    dst.fileSize = size;
    this.byFile.delete(src.file);
    return reclaimed;
  }
}
