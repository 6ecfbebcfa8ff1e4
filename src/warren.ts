/**
 * Warren as a library: the message store and its indexes.
 * (The RabbitMQ plugin's sidecar is dist/sidecar/main.js.)
 */
export * from './store';
export type { Index, IndexFactory, MsgId, MsgLocation, MsgLocationFields } from './index/types';
export { levelDbIndexFactory, levelDbIndexWith } from './index/leveldb-factory';
export { memoryIndexFactory } from './index/memory';
export type { LevelDbIndexOptions } from './index/leveldb-factory';
export type { LevelDbIndexStats } from './index/leveldb';
