/**
 * How a queue recovering non-clean learns which of its messages' bodies the
 * store holds. Right after a non-clean start, the store's rebuild counted the
 * queue's index (the ref-count walk, src/queue/ref-deltas.ts) and knows which
 * of the ids it counted it found no record of: for a segment the walk saw as
 * the queue reads it now (same ids, src/queue/walk-digest.ts), that answers
 * for all of its ids at once, without asking the store id by id. That holds
 * only for the queue's first INIT after the start (nothing but the queue
 * itself removes its references, and it has not run yet); any other segment,
 * any later INIT, and any store that has failed since, asks the store.
 */
import type { MessageStore } from '../store';
import { idsDigest, SegmentDigests } from '../queue/walk-digest';

/** What the ref-count walk of a vhost's non-clean start leaves for its queues' first INITs. */
export interface StartupWalk {
  /** Whether the rebuild found no record of an id it counted. */
  unfound: (id: Buffer) => boolean;
  /** Per queue key not yet INIT'ed since the start, its segment digests. */
  digests: Map<string, SegmentDigests>;
}

/** Messages whose presence was taken from the walk, and messages asked of the store. */
export interface PresenceCounts {
  fromWalk: number;
  asked: number;
}

/** The `contains` of a queue index opened non-clean; consumes `key`'s part of `walk`. */
export function presenceCheck(
  store: MessageStore,
  walk: StartupWalk | undefined,
  key: string,
  counts: PresenceCounts,
): (ids: Buffer[], segment: number) => Promise<boolean[]> {
  const digests = walk?.digests.get(key);
  walk?.digests.delete(key);
  return async (ids, segment) => {
    const d = digests?.get(segment);
    if (walk && d !== undefined && store.failed === undefined && d === idsDigest(ids)) {
      counts.fromWalk += ids.length;
      return ids.map((id) => !walk.unfound(id));
    }
    counts.asked += ids.length;
    // asked all at once: the store answers a run of them with one index read
    return Promise.all(ids.map((id) => store.contains(id)));
  };
}
