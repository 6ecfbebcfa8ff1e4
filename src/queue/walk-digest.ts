/**
 * What the ref-count walk of a non-clean start saw of a queue's index: a
 * digest of the ids of each segment's live entries. The queue's own recovery,
 * right after, compares each segment it reads with it; where they agree, every
 * id of the segment was counted by the walk, so the store's rebuild already
 * knows whether it holds each body (it does unless the rebuild found no record
 * of it), and the queue need not ask the store id by id. Where they disagree
 * the queue asks the store, as without a walk.
 */
import { crc32c } from '../util/crc32c';

/** Segment number → digest of its live ids. */
export type SegmentDigests = Map<number, string>;

const SEED = 0x5bd1e995;

/** Count and two sums of 32-bit hashes of the ids: order-free, so the walk and the recovery need not list them alike. */
export function idsDigest(ids: readonly Buffer[]): string {
  let a = 0;
  let b = 0;
  for (const id of ids) {
    a += crc32c(id);
    b += crc32c(id, SEED);
  }
  return `${ids.length}:${a}:${b}`;
}
