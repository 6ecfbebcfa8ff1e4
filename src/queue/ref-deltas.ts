/**
 * The ref-count delta generator of a non-clean start: walks the indexes of
 * the vhost's durable queues, a segment at a time, and yields (message id, +1)
 * for every persistent message published and not acked. Queues not listed
 * contribute nothing, so their messages become garbage. Progress is logged on
 * long walks. With `seen`, each queue's segment digests go there
 * (walk-digest.ts says what for).
 */
import * as path from 'path';
import type { Logger } from '../util/logger';
import { scanQueueIndex } from './queue-dir';
import { idsDigest, SegmentDigests } from './walk-digest';

const PROGRESS_MS = 1000;

export async function* indexRefDeltas(
  queuesDir: string,
  keys: readonly string[],
  log: Logger,
  segmentEntries?: number,
  seen?: Map<string, SegmentDigests>,
): AsyncIterable<[Buffer, number]> {
  const started = Date.now();
  let lastReport = started;
  let messages = 0;
  for (let i = 0; i < keys.length; i++) {
    const digests: SegmentDigests = new Map();
    for await (const { entries, n } of scanQueueIndex(path.join(queuesDir, keys[i]), segmentEntries, log)) {
      if (seen) digests.set(n, idsDigest(entries.map((e) => e.id)));
      for (const e of entries) {
        messages++;
        yield [e.id, 1];
      }
    }
    seen?.set(keys[i], digests);
    const now = Date.now();
    if (now - lastReport >= PROGRESS_MS) {
      lastReport = now;
      log('info', `recovery: walked ${i + 1}/${keys.length} queue indexes (${Math.round(((i + 1) / keys.length) * 100)}%), ${messages} messages`);
    }
  }
  if (Date.now() - started >= PROGRESS_MS) log('info', `recovery: walked ${keys.length} queue indexes, ${messages} messages in ${Date.now() - started} ms`);
}
