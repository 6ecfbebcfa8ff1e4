/**
 * The live entries of the segment files read last, decoded, shared by every
 * queue index of the process and bounded in count. A consumer draining a
 * backlog reads a segment window by window (readLive, a head window of 4,096
 * from a segment of 16,384): without this each window read and checksummed
 * the whole file again, and decoding 16,384 records holds the event loop for
 * tens of milliseconds. An owner drops its entries before it rewrites its
 * segments (a fold) and when it closes; the cached arrays are never changed.
 */
import type { JournalEntry } from './journal-codec';

/** Segment n's live entries as the file holds them, in seq order. */
export interface DecodedSegment {
  readonly n: number;
  readonly entries: readonly JournalEntry[];
}

export class SegmentCache {
  /** Least recently used first. */
  private readonly held = new Map<object, DecodedSegment>();
  /** Lookups answered from the cache and not (metrics: its hit ratio). */
  hits = 0;
  misses = 0;

  constructor(private readonly limit: number) {}

  get(owner: object, n: number): DecodedSegment | undefined {
    const s = this.held.get(owner);
    if (!s || s.n !== n) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.held.delete(owner);
    this.held.set(owner, s);
    return s;
  }

  /** One segment an owner: a queue reads its backlog in seq order. */
  set(owner: object, s: DecodedSegment): void {
    this.held.delete(owner);
    this.held.set(owner, s);
    for (const k of this.held.keys()) {
      if (this.held.size <= this.limit) break;
      this.held.delete(k);
    }
  }

  drop(owner: object): void {
    this.held.delete(owner);
  }

  get size(): number {
    return this.held.size;
  }
}

/** A segment of 16,384 entries holds about 3.2 MB (2.7 MB of heap, 0.5 MB of the file read): 26 MB at most. */
export const sharedSegmentCache = new SegmentCache(8);
