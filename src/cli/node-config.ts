/**
 * What a node of ours is configured with: the files under its etc/ and its
 * cookie (rewritten at every start: ports or paths may have changed) and the
 * environment its server script and rabbitmqctl run with. RabbitMQ finds all
 * of it through RABBITMQ_* variables, none in /etc, so a node never reads or
 * disturbs a system-wide broker's configuration.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { BrokerError } from './broker-error';
import { NodeLayout } from './node-layout';
import { pluginBuildDir } from './plugin-build';
import { Runtime } from './rabbitmq';

/** rabbitmq_warren application settings, as BrokerOptions.pluginEnv gives them. */
export type PluginEnv = Record<string, string | number | boolean | string[]>;

/** `given`, else $WARREN_PLUGIN_ENV parsed as JSON, else none; throws if a name is not an Erlang atom. */
export function pluginEnvFrom(given: PluginEnv | undefined): PluginEnv {
  const env = given ?? (process.env.WARREN_PLUGIN_ENV ? (JSON.parse(process.env.WARREN_PLUGIN_ENV) as PluginEnv) : {});
  for (const k of Object.keys(env)) {
    if (!/^[a-z][a-z0-9_]*$/.test(k)) throw new BrokerError(`plugin setting name ${JSON.stringify(k)} is not an Erlang atom`, 'ESTART');
  }
  return env;
}

/** `given`, else $WARREN_SIDECAR_ARGS split on spaces, else none. */
export function sidecarArgsFrom(given: string[] | undefined): string[] {
  return given ?? (process.env.WARREN_SIDECAR_ARGS ?? '').split(/\s+/).filter((a) => a !== '');
}

function erlTerm(v: string | number | boolean | string[]): string {
  if (Array.isArray(v)) return `[${v.map((x) => erlTerm(x)).join(', ')}]`;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new BrokerError(`plugin setting ${v} is not an integer`, 'ESTART');
    return String(v);
  }
  return JSON.stringify(v);
}

/**
 * The ports rabbitmqctl's own distribution may listen on: RabbitMQ's default
 * is the node's port + 10000 to + 10010; a node port above 55525 (a free port
 * from the ephemeral range can be) puts that past 65535, and every rabbitmqctl
 * fails with "nodistribution": then the 11 ports below the node's are used.
 */
export function ctlDistPorts(distPort: number): [number, number] {
  return distPort + 10010 <= 65535 ? [distPort + 10000, distPort + 10010] : [distPort - 10010, distPort - 10000];
}

/** The environment the server script and rabbitmqctl run with. */
export function nodeEnv(
  layout: NodeLayout,
  node: { rabbitmq: Runtime; distPort: number; epmdPort: number; installDir: string | undefined; extraPluginDirs: string[]; address: string },
): NodeJS.ProcessEnv {
  const erlAddr = node.address.split('.').join(',');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('RABBITMQ_') && !k.startsWith('ERL_')) env[k] = v;
  }
  // A host file a Debian root does not have: node (the sidecar) would warn at every start.
  if (node.rabbitmq.root && env.NODE_EXTRA_CA_CERTS && !fs.existsSync(node.rabbitmq.hostPath(env.NODE_EXTRA_CA_CERTS))) delete env.NODE_EXTRA_CA_CERTS;
  const ours = node.installDir ? path.join(node.installDir, 'plugins') : pluginBuildDir(node.rabbitmq.series);
  const pluginDirs = [...node.extraPluginDirs, ours, ...node.rabbitmq.systemPluginDirs()];
  Object.assign(env, {
    HOME: layout.homeDir,
    RABBITMQ_NODENAME: layout.nodeName,
    RABBITMQ_BASE: layout.dataDir,
    RABBITMQ_CONF_ENV_FILE: path.join(layout.etcDir, 'rabbitmq-env.conf'),
    RABBITMQ_CONFIG_FILE: path.join(layout.etcDir, 'rabbitmq.conf'),
    RABBITMQ_ADVANCED_CONFIG_FILE: path.join(layout.etcDir, 'advanced.config'),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(layout.etcDir, 'enabled_plugins'),
    RABBITMQ_PLUGINS_DIR: pluginDirs.join(':'),
    RABBITMQ_MNESIA_BASE: layout.mnesiaBase,
    RABBITMQ_MNESIA_DIR: layout.nodeDir,
    RABBITMQ_LOG_BASE: layout.logDir,
    RABBITMQ_LOGS: layout.logFile,
    RABBITMQ_PID_FILE: layout.pidFile,
    RABBITMQ_DIST_PORT: String(node.distPort),
    RABBITMQ_CTL_DIST_PORT_MIN: String(ctlDistPorts(node.distPort)[0]),
    RABBITMQ_CTL_DIST_PORT_MAX: String(ctlDistPorts(node.distPort)[1]),
    // Distribution listens on the node's address and connects from it (so a partition can be cut by address).
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: `-kernel inet_dist_use_interface {${erlAddr}} -kernel inet_dist_connect_options [{ip,{${erlAddr}}}]`,
    ...(node.address !== '127.0.0.1' ? { RABBITMQ_USE_LONGNAME: 'true' } : {}),
    ERL_EPMD_PORT: String(node.epmdPort),
    ERL_EPMD_ADDRESS: '127.0.0.1',
  });
  return env;
}

/**
 * Writes the node's configuration and cookie (every start: ports or paths may
 * have changed) and, for a node that runs as its own user, gives it the data dir.
 */
export function writeNodeConfig(
  layout: NodeLayout,
  node: {
    amqpPort: number;
    managementPort?: number;
    warren: boolean;
    sidecarArgs: string[];
    pluginEnv: PluginEnv;
    user: { uid: number; gid: number } | undefined;
    cookie?: string;
    address: string;
    partitionHandling?: string;
    netTicktime?: number;
  },
): void {
  for (const d of [layout.dataDir, layout.etcDir, layout.homeDir, layout.logDir, layout.mnesiaBase]) fs.mkdirSync(d, { recursive: true });
  const write = (file: string, text: string) => {
    const p = path.join(layout.etcDir, file);
    if (!fs.existsSync(p) || fs.readFileSync(p, 'utf8') !== text) fs.writeFileSync(p, text);
  };
  write(
    'rabbitmq.conf',
    [
      '# Written by Warren (src/cli/node-config.ts); rewritten at every start.',
      `listeners.tcp.default = ${node.address}:${node.amqpPort}`,
      'listeners.ssl = none',
      'loopback_users.guest = true',
      'log.console = false',
      'log.file.level = info',
      ...(node.managementPort !== undefined ? [`management.tcp.ip = ${node.address}`, `management.tcp.port = ${node.managementPort}`] : []),
      ...(node.partitionHandling !== undefined ? [`cluster_partition_handling = ${node.partitionHandling}`] : []),
      ...(node.netTicktime !== undefined ? [`net_ticktime = ${node.netTicktime}`] : []),
      '',
    ].join('\n'),
  );
  write(
    'advanced.config',
    node.warren
      ? [
          '%% Written by Warren (src/cli/node-config.ts): classic queues use Warren as their backing queue',
          '%% (RabbitMQ\'s priority-queue wrapper stays on top of it).',
          '[{rabbit, [{backing_queue_module, rabbit_warren_bq}]},',
          ` {rabbitmq_warren, [${Object.entries({ sidecar_args: node.sidecarArgs, ...node.pluginEnv })
            .map(([k, v]) => `{${k}, ${erlTerm(v)}}`)
            .join(', ')}]}].`,
          '',
        ].join('\n')
      : '%% Written by Warren (src/cli/node-config.ts): Warren is off; classic queues use RabbitMQ\'s own store.\n[].\n',
  );
  const plugins = ['rabbitmq_amqp1_0', ...(node.managementPort !== undefined ? ['rabbitmq_management'] : []), ...(node.warren ? ['rabbitmq_warren'] : [])];
  write('enabled_plugins', `[${plugins.join(',')}].\n`);
  write('rabbitmq-env.conf', '# Intentionally empty: Warren sets the environment itself.\n');
  const cookie = path.join(layout.homeDir, '.erlang.cookie');
  const given = node.cookie;
  if (given !== undefined && (!fs.existsSync(cookie) || fs.readFileSync(cookie, 'utf8') !== given)) {
    fs.rmSync(cookie, { force: true });
    fs.writeFileSync(cookie, given, { mode: 0o400 });
  } else if (!fs.existsSync(cookie)) {
    fs.writeFileSync(cookie, crypto.randomBytes(20).toString('hex').toUpperCase(), { mode: 0o400 });
  }
  fs.chmodSync(cookie, 0o400);
  if (node.user) {
    // The node's user owns everything it keeps; a mkdtemp parent (0700, root's) must let it in.
    spawnSync('chown', ['-R', `${node.user.uid}:${node.user.gid}`, layout.dataDir]);
    fs.chmodSync(layout.dataDir, 0o755);
  }
}
