#!/usr/bin/env node
/**
 * Sidecar entry point, started by the Erlang plugin:
 *   node dist/sidecar/main.js --socket PATH --data-dir DIR [--index leveldb|memory] [--max-frame N] ...
 * Its stdin is a pipe from the broker. The first line on it is the
 * connection token (64 hex digits): every connection must present it before
 * anything else (docs/RELIABILITY.md, "Security"). It is never on the
 * command line or in the environment, which other local users can read.
 * The sidecar exits when its stdin closes, without writing clean state: a
 * broker that died leaves the same state as a kill.
 */
import { ConfigError, parseArgs } from './config';
import { log, setLogLevel } from './log';
import { TOKEN_BYTES } from './protocol';
import { SidecarServer } from './server';

/** Reads the token line from stdin; stdin stays open afterwards (its end means the broker is gone). */
function readToken(timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let text = '';
    const done = (err: Error | null, token?: Buffer) => {
      clearTimeout(timer);
      process.stdin.off('data', onData);
      process.stdin.off('end', onEnd);
      if (err) reject(err);
      else resolve(token!);
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const nl = text.indexOf('\n');
      if (nl < 0) {
        if (text.length > 2 * TOKEN_BYTES + 2) done(new ConfigError('the first line on stdin is not a token'));
        return;
      }
      const line = text.slice(0, nl).trim();
      if (!new RegExp(`^[0-9a-f]{${2 * TOKEN_BYTES}}$`).test(line)) return done(new ConfigError(`the first line on stdin must be ${2 * TOKEN_BYTES} lowercase hex digits (the connection token)`));
      done(null, Buffer.from(line, 'hex'));
    };
    const onEnd = () => done(new ConfigError('stdin closed before the connection token arrived'));
    const timer = setTimeout(() => done(new ConfigError(`no connection token on stdin within ${timeoutMs} ms`)), timeoutMs);
    process.stdin.on('data', onData);
    process.stdin.on('end', onEnd);
  });
}

/** Exit status for a configuration the sidecar refuses: at boot the plugin stops the node on it, naming our last line. */
const EXIT_CONFIG = 2;

async function main(): Promise<void> {
  // Every file and directory the sidecar (and LevelDB in it) creates is for the broker's user alone: 0600 and 0700.
  process.umask(0o077);
  let cfg;
  let token: Buffer;
  try {
    cfg = parseArgs(process.argv.slice(2));
    token = await readToken(30_000);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`warren sidecar: ${e.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw e;
  }
  setLogLevel(cfg.logLevel);
  const server = new SidecarServer(cfg, token, () => {
    log('info', 'sidecar stopped cleanly');
    process.exit(0);
  });
  process.stdin.on('end', () => {
    log('warn', 'stdin closed: the broker is gone; exiting without a clean shutdown');
    process.exit(1);
  });
  await server.listen();
  log('info', `sidecar ${process.pid} listening on ${cfg.socket} (index ${cfg.index}, file size limit ${cfg.fileSizeLimit}, sync interval ${cfg.syncIntervalMs} ms, durability ${cfg.durability === 'write' ? `write (fsync every ${cfg.writeSyncIntervalMs} ms)` : 'fsync'}, frames up to ${cfg.maxFrame} bytes)`);

  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      log('info', `${sig}: shutting down cleanly`);
      server.shutdown().then(
        () => process.exit(0),
        (e: Error) => {
          log('error', `shutdown failed: ${e.message}`);
          process.exit(1);
        },
      );
    });
  }
}

process.on('uncaughtException', (e) => {
  log('error', `uncaught exception: ${e.stack ?? e.message}`);
  process.exit(70);
});
process.on('unhandledRejection', (e) => {
  log('error', `unhandled rejection: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exit(70);
});

void main();
