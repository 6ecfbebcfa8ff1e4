/**
 * Progress of a long operation, on stderr (stdout is the report): a bar
 * (cli-progress) on a terminal, plain lines at most once a second when
 * piped, nothing when quiet.
 */
import { SingleBar, Presets } from 'cli-progress';

export interface Bar {
  tick(n: number): void;
  stop(): void;
}

export interface Progress {
  start(what: string, total: number, unit: string): Bar;
}

const PLAIN_EVERY_MS = 1000;

export function progressOn(stream: NodeJS.WriteStream, prefix: string, quiet = false): Progress {
  return {
    start(what, total, unit) {
      if (quiet || total === 0) return { tick() {}, stop() {} };
      if (stream.isTTY) {
        const bar = new SingleBar({ format: `${prefix}: ${what} [{bar}] {percentage}% {value}/{total} ${unit} | {duration_formatted}`, stream, hideCursor: true, clearOnComplete: false }, Presets.shades_classic);
        bar.start(total, 0);
        return { tick: (n) => bar.increment(n), stop: () => bar.stop() };
      }
      let done = 0;
      let last = Date.now();
      const started = last;
      const line = (): void => {
        stream.write(`${prefix}: ${what}: ${done}/${total} ${unit} (${Math.floor((done / total) * 100)}%)\n`);
      };
      return {
        tick(n) {
          done += n;
          const now = Date.now();
          if (now - last >= PLAIN_EVERY_MS) {
            last = now;
            line();
          }
        },
        stop() {
          if (Date.now() - started >= PLAIN_EVERY_MS) line();
        },
      };
    },
  };
}
