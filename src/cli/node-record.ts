/**
 * What `warren start` records about the node it runs (`<data dir>/warren-node.json`),
 * so that `warren ctl` and `warren stats` reach that node with the right
 * RabbitMQ CLI, node name, ports, cookie and HOME, whichever series it is.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Broker } from './broker';
import { isSeries, Series } from './rabbitmq';

export const NODE_RECORD = 'warren-node.json';

export interface NodeRecord {
  series: Series;
  nodeName: string;
  amqpPort: number;
  distPort: number;
  epmdPort: number;
}

export class NodeRecordError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NodeRecordError';
  }
}

export function writeNodeRecord(b: Broker): void {
  const rec: NodeRecord = { series: b.rabbitmq.series, nodeName: b.nodeName, amqpPort: b.amqpPort, distPort: b.distPort, epmdPort: b.epmdPort };
  fs.writeFileSync(path.join(b.dataDir, NODE_RECORD), JSON.stringify(rec, null, 2) + '\n');
}

/** The Broker of the node `warren start` ran with `dataDir`. */
export function recordedBroker(dataDir: string): Broker {
  const file = path.join(path.resolve(dataDir), NODE_RECORD);
  let rec: Partial<NodeRecord>;
  try {
    rec = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<NodeRecord>;
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist (has `npm start` run with this data directory? set WARREN_DATA or --data)' : `cannot be read: ${(e as Error).message}`;
    throw new NodeRecordError(`${file} ${why}`);
  }
  const port = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0 && (v as number) < 65536;
  if (typeof rec.series !== 'string' || !isSeries(rec.series) || typeof rec.nodeName !== 'string' || !port(rec.amqpPort) || !port(rec.distPort) || !port(rec.epmdPort)) {
    throw new NodeRecordError(`${file} is not a node record written by warren start`);
  }
  return new Broker({ dataDir, rabbitmq: rec.series, nodeName: rec.nodeName, amqpPort: rec.amqpPort, distPort: rec.distPort, epmdPort: rec.epmdPort });
}
