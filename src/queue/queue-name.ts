/**
 * `queues/<key>/name`: the queue's name, as RabbitMQ declared it (UTF-8, no
 * newline). A queue's directory is named by its hashed key, which says
 * nothing to an operator; this file lets `warren inspect` and `warren verify`
 * name the queue. Advisory only: recovery never reads it, and a queue whose
 * file is missing or unreadable is shown by its key.
 */
import * as path from 'path';
import { readFileIfPresent, writeFileAtomic } from '../util/durable-file';

export const QUEUE_NAME_FILE = 'name';

/** The recorded name of the queue whose index is `dir`, if there is one. */
export async function readQueueName(dir: string): Promise<string | undefined> {
  const b = await readFileIfPresent(path.join(dir, QUEUE_NAME_FILE)).catch(() => undefined);
  return b === undefined ? undefined : b.toString('utf8');
}

/** Records `name` for the queue index `dir` (which exists), unless it is recorded already. */
export async function recordQueueName(dir: string, name: string): Promise<void> {
  if ((await readQueueName(dir)) === name) return;
  await writeFileAtomic(path.join(dir, QUEUE_NAME_FILE), name);
}

/** `'name' (key)`, or the key alone when no name is recorded. */
export function queueLabel(q: { key: string; name?: string }): string {
  return q.name !== undefined ? `'${q.name}' (${q.key})` : q.key;
}

