/**
 * Index implementations by name, for `MessageStore.open({ index: 'name' })`.
 * Another implementation registers itself with one line, e.g.
 * `registerIndex(levelDbIndexFactory)`.
 */
import { IndexFactory } from '../index/types';
import { memoryIndexFactory } from '../index/memory';
import { levelDbIndexFactory } from '../index/leveldb-factory';
import { UnknownIndexError } from './errors';

const registry = new Map<string, IndexFactory>([
  ['memory', memoryIndexFactory],
  ['leveldb', levelDbIndexFactory],
]);

export function registerIndex(factory: IndexFactory, name: string = factory.kind): void {
  registry.set(name, factory);
}

export function indexNames(): string[] {
  return [...registry.keys()];
}

export function resolveIndex(index: string | IndexFactory | undefined): IndexFactory {
  if (index === undefined) return memoryIndexFactory;
  if (typeof index !== 'string') return index;
  const f = registry.get(index);
  if (!f) throw new UnknownIndexError(index, indexNames());
  return f;
}
