/**
 * The ref-count delta generator of a non-clean start: walks the journals of
 * the vhost's durable queues and yields (message id, +1) for every persistent
 * message published and not acked. Queues not listed contribute nothing, so
 * their messages become garbage. Progress is logged on long walks.
 */
import * as path from 'path';
import { Logger, replayJournal } from './queue-index';

const PROGRESS_MS = 1000;

export async function* journalRefDeltas(queuesDir: string, keys: readonly string[], log: Logger): AsyncIterable<[Buffer, number]> {
  const started = Date.now();
  let lastReport = started;
  let messages = 0;
  for (let i = 0; i < keys.length; i++) {
    const { entries } = await replayJournal(path.join(queuesDir, keys[i]));
    for (const e of entries) {
      messages++;
      yield [e.id, 1];
    }
    const now = Date.now();
    if (now - lastReport >= PROGRESS_MS) {
      lastReport = now;
      log('info', `recovery: walked ${i + 1}/${keys.length} queue journals (${Math.round(((i + 1) / keys.length) * 100)}%), ${messages} messages`);
    }
  }
  if (Date.now() - started >= PROGRESS_MS) log('info', `recovery: walked ${keys.length} queue journals, ${messages} messages in ${Date.now() - started} ms`);
}
