/** Errors the sidecar answers a request with (their code goes back in the error frame). */

export class UnknownHandleError extends Error {
  readonly code = 'EHANDLE';
  constructor(handle: number) {
    super(`unknown queue handle ${handle}`);
    this.name = 'UnknownHandleError';
  }
}

/** A request naming a directory outside the broker's data dir, or otherwise refused. */
export class RefusedError extends Error {
  readonly code = 'EREFUSED';
  constructor(message: string) {
    super(message);
    this.name = 'RefusedError';
  }
}
