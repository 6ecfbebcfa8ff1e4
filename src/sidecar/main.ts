#!/usr/bin/env node
/**
 * Sidecar entry point, started by the Erlang plugin:
 *   node dist/sidecar/main.js --socket PATH [--index leveldb|memory] [--file-size-limit N] [--sync-interval-ms N]
 * Exits when its stdin (a pipe from the broker) closes, without writing clean
 * state: a broker that died leaves the same state as a kill.
 */
import * as fs from 'fs';
import { ConfigError, parseArgs } from './config';
import { log, setLogLevel } from './log';
import { SidecarServer } from './server';

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`warren sidecar: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  setLogLevel(cfg.logLevel);
  const server = new SidecarServer(cfg, () => {
    log('info', 'sidecar stopped cleanly');
    process.exit(0);
  });
  await server.listen();
  log('info', `sidecar ${process.pid} listening on ${cfg.socket} (index ${cfg.index}, file size limit ${cfg.fileSizeLimit}, sync interval ${cfg.syncIntervalMs} ms)`);

  if (fs.fstatSync(0).isFIFO()) {
    process.stdin.on('end', () => {
      log('warn', 'stdin closed: the broker is gone; exiting without a clean shutdown');
      process.exit(1);
    });
    process.stdin.resume();
  }
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
