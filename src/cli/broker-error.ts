/**
 * The one error type of the broker launcher, with a code that says which step
 * failed; in a module of its own because every part of the launcher throws it.
 */
export class BrokerError extends Error {
  constructor(
    message: string,
    readonly code: 'ESTART' | 'ESTOP' | 'ECTL' | 'ERUNNING' | 'EBUILD' | 'ENORECORD',
  ) {
    super(message);
    this.name = 'BrokerError';
  }
}
