/**
 * Starts one RabbitMQ node with Warren for the whole integration run (the
 * series in $WARREN_RABBITMQ, else the host's own; own node name, ports, epmd
 * and data dir under /tmp) and records how to reach it.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../src/cli/broker';
import { freePort } from '../src/cli/ports';
import { TestState, stateFileOfThisRun } from './harness';

export default async function globalSetup(): Promise<void> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-it-'));
  const amqpPort = await freePort();
  const distPort = await freePort();
  const epmdPort = await freePort();
  const nodeName = `warren-it-${process.pid}@localhost`;
  // Small store files, so that tests roll and compact them; small queue windows
  // and index segments, so that long queues live mostly in their index.
  const sidecarArgs = ['--file-size-limit', String(256 * 1024), '--queue-window', '512', '--queue-segment-entries', '2048', '--queue-journal-entries', '4096'];
  const broker = new Broker({ dataDir, amqpPort, distPort, epmdPort, nodeName, sidecarArgs });
  const rt = broker.rabbitmq;
  process.stdout.write(`\nintegration suite against RabbitMQ ${rt.version} (Erlang ${rt.erlang}${rt.root ? `, Debian root ${rt.root}` : ', host package'})\n`);
  await broker.start();
  const state: TestState = { dataDir, amqpPort, distPort, epmdPort, nodeName, sidecarArgs, rabbitmq: rt.series };
  const file = stateFileOfThisRun();
  fs.writeFileSync(file, JSON.stringify(state));
  process.env.WARREN_IT_STATE = file;
}
