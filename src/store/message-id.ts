/** Message ids at the store's edge: their check, and the string key the caches use. */
import { MsgId } from '../index/types';
import { InvalidArgumentError, InvalidIdError } from './errors';
import { ID_SIZE } from './record-codec';

/** The id as a Map key (latin1 keeps every byte). */
export function keyOf(id: MsgId): string {
  return id.toString('latin1');
}

export function checkId(id: unknown): asserts id is Buffer {
  if (!Buffer.isBuffer(id) || id.length !== ID_SIZE) {
    throw new InvalidIdError(`message id must be a ${ID_SIZE}-byte Buffer, got ${Buffer.isBuffer(id) ? `${id.length} bytes` : typeof id}`);
  }
}

export function checkIds(ids: unknown): asserts ids is Buffer[] {
  if (!Array.isArray(ids)) throw new InvalidArgumentError('ids must be an array of Buffers');
  for (const id of ids) checkId(id);
}
