/** Errors raised by the message store. `code` is stable and meant for programs; `message` is for people. */
export type StoreErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INVALID_ID'
  | 'STORE_CLOSED'
  | 'CLIENT_TERMINATED'
  | 'STORE_FAILED'
  | 'UNKNOWN_INDEX'
  | 'READ_FAILED';

export class StoreError extends Error {
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StoreError';
  }
}

export class InvalidArgumentError extends StoreError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
    this.name = 'InvalidArgumentError';
  }
}

export class InvalidIdError extends StoreError {
  constructor(message: string) {
    super('INVALID_ID', message);
    this.name = 'InvalidIdError';
  }
}

export class StoreClosedError extends StoreError {
  constructor() {
    super('STORE_CLOSED', 'the message store is closed');
    this.name = 'StoreClosedError';
  }
}

export class ClientTerminatedError extends StoreError {
  constructor(ref: string) {
    super('CLIENT_TERMINATED', `message store client ${JSON.stringify(ref)} has terminated`);
    this.name = 'ClientTerminatedError';
  }
}

/** An I/O failure left the store unable to promise durability; it refuses further work. */
export class StoreFailedError extends StoreError {
  constructor(cause: unknown) {
    super('STORE_FAILED', `the message store failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'StoreFailedError';
  }
}

export class UnknownIndexError extends StoreError {
  constructor(name: string, known: readonly string[]) {
    super('UNKNOWN_INDEX', `unknown index ${JSON.stringify(name)} (known: ${known.join(', ')})`);
    this.name = 'UnknownIndexError';
  }
}
