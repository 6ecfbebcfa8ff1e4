/**
 * What the examples share: the broker they talk to by default, a connection
 * whose errors fail the operation that caused them, and their command lines'
 * number parsing and failure exit.
 */
import * as amqp from 'amqplib';
import { InvalidArgumentError } from 'commander';

/** The node `npm start` runs. */
export const DEFAULT_URL = 'amqp://guest:guest@127.0.0.1:5672';

/**
 * Connects to the broker. A channel or connection the broker closes with an
 * error also fails the operation that caused it: the 'error' events are
 * handled here, and that failure is reported where it happens.
 */
export async function connect(url: string): Promise<amqp.ChannelModel> {
  const conn = await amqp.connect(url);
  conn.on('error', () => undefined);
  return conn;
}

/** A command-line count: a whole number, 0 or more. */
export function count(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${JSON.stringify(v)} is not a count`);
  return n;
}

/** A command-line count of at least 1. */
export function positive(v: string): number {
  const n = count(v);
  if (n === 0) throw new InvalidArgumentError('must be at least 1');
  return n;
}

/** Ends the example with its error, exit status 1. */
export function failWith(name: string): (e: Error) => never {
  return (e: Error): never => {
    console.error(`${name}: ${e.message}`);
    process.exit(1);
  };
}
