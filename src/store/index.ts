/** Public API of the message store (src/store). */
export { MessageStore } from './message-store';
export type { StoreStats } from './message-store';
export { StoreClient } from './store-client';
export { DEFAULT_FILE_SIZE_LIMIT } from './options';
export type { MessageStoreOptions } from './options';
export { GARBAGE_FRACTION } from './compactor';
export type { Logger, LogLevel } from '../util/logger';
export { registerIndex, resolveIndex, indexNames } from './index-registry';
export {
  StoreError,
  InvalidArgumentError,
  InvalidIdError,
  StoreClosedError,
  ClientTerminatedError,
  StoreFailedError,
  UnknownIndexError,
} from './errors';
export type { StoreErrorCode } from './errors';
export type { FileSummary } from './file-summary';
export { crc32c } from '../util/crc32c';
export { encodeRecord, decodeRecord, HEADER_SIZE as RECORD_HEADER_SIZE } from './record-codec';
export { scanSegment } from './segment-scanner';
export type { ScanResult, ScannedRecord } from './segment-scanner';
