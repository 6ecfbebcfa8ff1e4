/** Message ids at the store's edge: their check (and, from the index, the string key the caches use). */
export { keyOf } from '../index/types';
import { InvalidArgumentError, InvalidIdError } from './errors';
import { ID_SIZE } from './record-codec';

export function checkId(id: unknown): asserts id is Buffer {
  if (!Buffer.isBuffer(id) || id.length !== ID_SIZE) {
    throw new InvalidIdError(`message id must be a ${ID_SIZE}-byte Buffer, got ${Buffer.isBuffer(id) ? `${id.length} bytes` : typeof id}`);
  }
}

export function checkIds(ids: unknown): asserts ids is Buffer[] {
  if (!Array.isArray(ids)) throw new InvalidArgumentError('ids must be an array of Buffers');
  for (const id of ids) checkId(id);
}
