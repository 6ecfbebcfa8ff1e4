/**
 * The sidecar logs one line per event on stdout; the Erlang owner forwards
 * each line to the RabbitMQ log.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';

const ORDER: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };
let threshold: Level = 'info';

export function setLogLevel(level: Level): void {
  threshold = level;
}

export function log(level: Level, msg: string): void {
  if (ORDER[level] < ORDER[threshold]) return;
  process.stdout.write(`[${level}] ${msg.replace(/\n/g, ' | ')}\n`);
}
