#!/usr/bin/env node
/**
 * The `warren` command.
 *   warren start    run a RabbitMQ node with Warren as the classic-queue store (data under ./var)
 */
import * as net from 'net';
import * as path from 'path';
import { parseArgs } from 'util';
import { Broker } from './broker';
import { Runtime, RuntimeError, SERIES, providedRuntimes, runtimeFor } from './rabbitmq';

/** Debian stable's RabbitMQ: what `warren start` runs unless told otherwise. */
const DEFAULT_SERIES = '4.0';

const USAGE = `usage: warren <command> [options]

commands:
  start     start a RabbitMQ node with Warren as the backing store
            (data under ./var; AMQP 0-9-1 and 1.0 on 127.0.0.1:$WARREN_PORT, default 5672).
            Ctrl-C stops it cleanly.
  brokers   list the RabbitMQ brokers this machine provides

options of start:
  --rabbitmq SERIES  which RabbitMQ: ${SERIES.join(', ')} (default $WARREN_RABBITMQ, else ${DEFAULT_SERIES})

environment:
  WARREN_PORT        AMQP port (default 5672)
  WARREN_DIST_PORT   Erlang distribution port (default WARREN_PORT + 20000)
  WARREN_DATA        data directory (default ./var)
  WARREN_NODE        Erlang node name (default warren@localhost)
  WARREN_RABBITMQ    RabbitMQ series (as --rabbitmq)
`;

function intEnv(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0 || n > 65535) {
    process.stderr.write(`warren: ${name} must be a port number, got ${JSON.stringify(v)}\n`);
    process.exit(2);
  }
  return n;
}

/** Resolves with an error message if something already listens on the port. */
function portBusy(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'EADDRINUSE' ? `port ${port} is already in use` : e.message));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(undefined)));
  });
}

async function start(args: string[]): Promise<void> {
  let rt: Runtime;
  try {
    const { values } = parseArgs({ args, options: { rabbitmq: { type: 'string' } }, strict: true });
    rt = runtimeFor(values.rabbitmq, DEFAULT_SERIES);
  } catch (e) {
    process.stderr.write(`warren: ${(e as Error).message}\n${e instanceof RuntimeError ? '' : `\n${USAGE}`}`);
    process.exit(2);
  }
  const amqpPort = intEnv('WARREN_PORT', 5672);
  const distPort = intEnv('WARREN_DIST_PORT', amqpPort + 20000);
  const dataDir = path.resolve(process.env.WARREN_DATA ?? 'var');
  const nodeName = process.env.WARREN_NODE ?? 'warren@localhost';
  for (const [what, port, env] of [
    ['AMQP', amqpPort, 'WARREN_PORT'],
    ['distribution', distPort, 'WARREN_DIST_PORT'],
  ] as const) {
    const busy = await portBusy(port);
    if (busy) {
      process.stderr.write(`warren: cannot start: the ${what} ${busy} (another RabbitMQ?); choose another with ${env}=...\n`);
      process.exit(1);
    }
  }
  const broker = new Broker({ dataDir, amqpPort, distPort, nodeName, rabbitmq: rt });
  process.stdout.write(`warren: starting RabbitMQ ${rt.version} node ${nodeName} with Warren (data under ${dataDir}) ...\n`);
  try {
    await broker.start();
  } catch (e) {
    process.stderr.write(`warren: the broker did not start: ${(e as Error).message}\n`);
    process.exit(1);
  }
  const line = '─'.repeat(72);
  process.stdout.write(
    [
      line,
      ` Warren is running: RabbitMQ ${rt.version} (Erlang ${rt.erlang}) with Warren as the classic-queue store`,
      `   broker                    ${rt.root ? `Debian root ${rt.root}` : "the host's rabbitmq-server package"}`,
      `   AMQP 0-9-1 and AMQP 1.0   amqp://guest:guest@127.0.0.1:${amqpPort}`,
      `   node                      ${nodeName} (distribution port ${distPort})`,
      `   data                      ${dataDir}`,
      `   broker log                ${broker.logFile}`,
      `   try                       node dist/examples/producer.js 1000 && node dist/examples/consumer.js`,
      ` Ctrl-C stops it cleanly.`,
      line,
      '',
    ].join('\n'),
  );
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\nwarren: ${sig}: stopping the broker cleanly ...\n`);
    broker.stop().then(
      () => {
        process.stdout.write('warren: stopped cleanly; the next `npm start` finds the messages again.\n');
        process.exit(0);
      },
      (e: Error) => {
        process.stderr.write(`warren: stop failed: ${e.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  const exited = await broker.exited();
  if (!stopping) {
    await broker.stopEpmd();
    process.stderr.write(`warren: the broker exited unexpectedly (${exited}); see ${broker.logFile}\n`);
    process.exit(1);
  }
}

async function main(argv: string[]): Promise<void> {
  switch (argv[0]) {
    case 'start':
      return start(argv.slice(1));
    case 'brokers':
      for (const rt of providedRuntimes().values()) {
        process.stdout.write(`${rt.series}\tRabbitMQ ${rt.version}\tErlang ${rt.erlang}\t${rt.root ?? 'host package'}\n`);
      }
      return;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return;
    default:
      process.stderr.write(`warren: unknown command ${JSON.stringify(argv[0])}\n\n${USAGE}`);
      process.exit(2);
  }
}

void main(process.argv.slice(2));
