/**
 * The store's hint-file steps (writes and deletions), one at a time in the
 * order asked: a deletion asked after a write must not be overtaken by it
 * (hint-file.ts states the rules that keep a hint true). A failed step fails
 * the store before the next step runs.
 */
import { SerialQueue } from '../util/serial-queue';
import { encodeHint, removeHint, writeHint } from './hint-file';
import type { Logger } from '../util/logger';
import { segmentPath, SEGMENT_EXT } from './segment-file';
import { scanSegment } from './segment-scanner';

export interface HintChainOptions {
  dir: string;
  ioChunkSize: number;
  /** Whether files get hints written at all (removals run regardless). */
  enabled: boolean;
  /** Whether `file` may get a hint now (the store runs, has not failed, and still has the file). */
  wanted: (file: number) => boolean;
  fail: (e: unknown) => void;
  log: Logger;
}

export class HintChain {
  private readonly steps = new SerialQueue();
  /** Hint files written since the open. */
  written = 0;

  constructor(private readonly o: HintChainOptions) {}

  get enabled(): boolean {
    return this.o.enabled;
  }

  /** Steps asked and not yet done. */
  get pending(): number {
    return this.steps.pending;
  }

  /** Resolves once every step asked before this call is done. */
  idle(): Promise<void> {
    return this.steps.idle();
  }

  /** Runs `step` after every step asked before it; a failure fails the store (and rejects). */
  step(step: () => Promise<void>): Promise<void> {
    return this.steps.run(async () => {
      try {
        await step();
      } catch (e) {
        this.o.fail(e);
        throw e;
      }
    });
  }

  /** Deletes `file`'s hint (`durable`: and fsyncs the directory), in turn. */
  remove(file: number, durable: boolean): Promise<void> {
    return this.step(() => removeHint(this.o.dir, file, durable));
  }

  /** Writes `file`'s hint from records already known (a scan of the fsynced file), in turn. */
  write(file: number, data: Buffer): void {
    if (!this.o.enabled) return;
    void this.step(() => this.writeNow(file, data)).catch(() => undefined);
  }

  /** Scans `file` (fsynced, no longer appended to) and writes its hint if the scan found it sound. */
  fromScan(file: number): void {
    if (!this.o.enabled) return;
    void this.step(async () => {
      if (!this.o.wanted(file)) return;
      const scan = await scanSegment(segmentPath(this.o.dir, file), this.o.ioChunkSize);
      if (scan.checksumFailures || scan.skippedBytes) {
        this.o.log('warn', `${file}${SEGMENT_EXT}: ${scan.checksumFailures} records fail their checksum, ${scan.skippedBytes} bytes are no intact record; no hint written`);
        return;
      }
      await this.writeNow(file, encodeHint(file, scan.fileSize, scan.records));
    }).catch(() => undefined);
  }

  private async writeNow(file: number, data: Buffer): Promise<void> {
    if (!this.o.wanted(file)) return;
    await writeHint(this.o.dir, data, file);
    this.written++;
  }
}
