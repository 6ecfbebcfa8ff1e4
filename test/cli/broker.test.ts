/**
 * The pieces of Broker that need no running node: names, paths, environment.
 */
import { ctlDistPorts } from '../../src/cli/node-config';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../../src/cli/broker';
import { vhostDirName } from '../../src/cli/node-layout';
import { repoRoot } from '../../src/cli/repo';

describe('Broker (without a node)', () => {
  const dataDir = path.join(os.tmpdir(), 'warren-broker-unit');

  it("names vhost directories as RabbitMQ does (base36 of md5, upper case)", () => {
    expect(vhostDirName('/')).toBe('628WB79CIFDYO9LJI6DKMI09L');
  });

  it('finds the repository root by plugin.json', () => {
    const root = repoRoot();
    expect(fs.existsSync(path.join(root, 'plugin.json'))).toBe(true);
    expect(fs.existsSync(path.join(root, 'rabbitmq', 'src', 'rabbit_warren_bq.erl'))).toBe(true);
  });

  it('keeps everything of the node under its data dir, with its own name and ports', () => {
    const b = new Broker({ dataDir, amqpPort: 5999, nodeName: 'unit@localhost' });
    expect(b.distPort).toBe(25999);
    expect(b.epmdPort).toBe(26000);
    expect(b.logFile).toBe(path.join(dataDir, 'log', 'unit@localhost.log'));
    expect(b.msgStoreDir()).toBe(path.join(dataDir, 'mnesia', 'unit@localhost', 'msg_stores', 'vhosts', '628WB79CIFDYO9LJI6DKMI09L'));
    const env = b.env();
    expect(env.RABBITMQ_NODENAME).toBe('unit@localhost');
    expect(env.RABBITMQ_DIST_PORT).toBe('25999');
    expect(env.ERL_EPMD_PORT).toBe('26000');
    expect(env.HOME).toBe(path.join(dataDir, 'home'));
    for (const k of ['RABBITMQ_CONFIG_FILE', 'RABBITMQ_ADVANCED_CONFIG_FILE', 'RABBITMQ_ENABLED_PLUGINS_FILE', 'RABBITMQ_MNESIA_BASE', 'RABBITMQ_LOGS', 'RABBITMQ_CONF_ENV_FILE']) {
      expect(env[k]?.startsWith(dataDir)).toBe(true);
    }
    expect(env.RABBITMQ_PLUGINS_DIR?.split(':')[0]).toBe(path.join(repoRoot(), 'build', `rabbitmq-${b.rabbitmq.series}`, 'plugins'));
  });

  it('rejects a node name without a host', () => {
    expect(() => new Broker({ dataDir, nodeName: 'nohost' })).toThrow(/host part/);
  });

  it('stop() of a node that is not running resolves at once', async () => {
    const b = new Broker({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'warren-broker-unit-')), nodeName: 'never-started@localhost' });
    expect(b.isRunning()).toBe(false);
    await expect(b.stop()).resolves.toBeUndefined();
    fs.rmSync(b.dataDir, { recursive: true, force: true });
  });
});

describe("rabbitmqctl's distribution ports", () => {
  it('are the 11 above the node port + 10000, or the 11 below the node port - 10000 when those would pass 65535', () => {
    expect(ctlDistPorts(25672)).toEqual([35672, 35682]);
    expect(ctlDistPorts(55525)).toEqual([65525, 65535]);
    expect(ctlDistPorts(55526)).toEqual([45516, 45526]);
    expect(ctlDistPorts(60999)).toEqual([50989, 50999]);
  });
});
