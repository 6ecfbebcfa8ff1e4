/**
 * Sidecar settings: defaults from plugin.json, overridden by command-line
 * flags (`--socket PATH --data-dir DIR --index leveldb --file-size-limit N
 * --sync-interval-ms N --durability fsync|write --write-sync-interval-ms N
 * --max-frame N --max-open-journals N`, and the queue-index sizes
 * `--queue-window N --queue-segment-entries N --queue-journal-entries N`,
 * and `--metrics-port N` for Prometheus metrics on 127.0.0.1, metrics.ts).
 * The connection token is not a flag: it comes on stdin (see main.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import { DEFAULT_MAX_FRAME, MAX_MAX_FRAME, MIN_MAX_FRAME } from './frames';
import { DEFAULT_WRITE_SYNC_INTERVAL_MS, DURABILITIES, Durability } from '../queue/group-commit';
import { Level } from './log';

/** Queue-index and window sizes (sidecar flags); unset = the queue module's defaults. */
export interface QueueLayout {
  segmentEntries?: number;
  journalEntries?: number;
  window?: number;
}

export interface SidecarConfig {
  socket: string;
  /**
   * The broker's data directory (RabbitMQ's mnesia dir). Every vhost
   * directory a request names must be `<dataDir>/msg_stores/vhosts/<name>`.
   */
  dataDir: string;
  /** Largest frame accepted from an authenticated connection, and largest reply sent. */
  maxFrame: number;
  index: string;
  fileSizeLimit: number;
  /** How long a confirm waits for others to share its fsync (0, the default: none). */
  syncIntervalMs: number;
  /** `fsync` (default): confirm after fsync; `write`: confirm after the write, fsync every writeSyncIntervalMs. */
  durability: Durability;
  writeSyncIntervalMs: number;
  logLevel: Level;
  /** Queue journals open at once (descriptors; the least recently used idle one is closed). */
  maxOpenJournals?: number;
  /** Prometheus metrics on http://127.0.0.1:<port>/metrics (unset: none). */
  metricsPort?: number;
  /** Ready messages per queue kept in memory at the head and at the tail; queue-index segment and journal sizes. */
  queue?: QueueLayout;
}

export class ConfigError extends Error {
  readonly code = 'ECONFIG';
}

interface PluginDefaults {
  index?: string;
  fileSizeLimit?: number;
  syncIntervalMs?: number;
  durability?: Durability;
  writeSyncIntervalMs?: number;
}

function pluginDefaults(): PluginDefaults {
  const file = path.resolve(__dirname, '..', '..', 'plugin.json');
  try {
    const manifest = JSON.parse(fs.readFileSync(file, 'utf8')) as { defaults?: PluginDefaults };
    return manifest.defaults ?? {};
  } catch {
    return {};
  }
}

function positiveInt(flag: string, v: string, min = 1): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new ConfigError(`${flag} must be ${min === 0 ? 'a non-negative' : 'a positive'} integer, got ${JSON.stringify(v)}`);
  return n;
}

function durability(flag: string, v: string | undefined): Durability {
  if (v === undefined || !(DURABILITIES as readonly string[]).includes(v)) throw new ConfigError(`${flag} must be ${DURABILITIES.join(' or ')}, got ${JSON.stringify(v)}`);
  return v as Durability;
}

export function parseArgs(argv: readonly string[]): SidecarConfig {
  const d = pluginDefaults();
  const cfg: SidecarConfig = {
    socket: '',
    dataDir: '',
    maxFrame: DEFAULT_MAX_FRAME,
    index: d.index ?? 'leveldb',
    fileSizeLimit: d.fileSizeLimit ?? 16 * 1024 * 1024,
    syncIntervalMs: d.syncIntervalMs ?? 0,
    durability: d.durability === undefined ? 'fsync' : durability('plugin.json defaults.durability', d.durability),
    writeSyncIntervalMs: d.writeSyncIntervalMs ?? DEFAULT_WRITE_SYNC_INTERVAL_MS,
    logLevel: 'info',
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const v = argv[i + 1];
    if (v === undefined) throw new ConfigError(`${flag} needs a value`);
    i++;
    switch (flag) {
      case '--socket':
        cfg.socket = v;
        break;
      case '--data-dir':
        if (!path.isAbsolute(v)) throw new ConfigError(`--data-dir must be an absolute path, got ${JSON.stringify(v)}`);
        cfg.dataDir = path.resolve(v);
        break;
      case '--max-frame': {
        const n = positiveInt(flag, v);
        if (n < MIN_MAX_FRAME || n > MAX_MAX_FRAME) throw new ConfigError(`--max-frame must be between ${MIN_MAX_FRAME} and ${MAX_MAX_FRAME} bytes, got ${n}`);
        cfg.maxFrame = n;
        break;
      }
      case '--index':
        cfg.index = v;
        break;
      case '--file-size-limit':
        cfg.fileSizeLimit = positiveInt(flag, v);
        break;
      case '--sync-interval-ms':
        cfg.syncIntervalMs = positiveInt(flag, v, 0);
        break;
      case '--durability':
        cfg.durability = durability(flag, v);
        break;
      case '--write-sync-interval-ms':
        cfg.writeSyncIntervalMs = positiveInt(flag, v);
        break;
      case '--metrics-port': {
        const n = positiveInt(flag, v);
        if (n > 65535) throw new ConfigError(`--metrics-port must be a TCP port (1-65535), got ${n}`);
        cfg.metricsPort = n;
        break;
      }
      case '--max-open-journals':
        cfg.maxOpenJournals = positiveInt(flag, v);
        break;
      case '--queue-window':
        cfg.queue = { ...cfg.queue, window: positiveInt(flag, v) };
        break;
      case '--queue-segment-entries':
        cfg.queue = { ...cfg.queue, segmentEntries: positiveInt(flag, v) };
        break;
      case '--queue-journal-entries':
        cfg.queue = { ...cfg.queue, journalEntries: positiveInt(flag, v) };
        break;
      case '--log-level':
        if (!['debug', 'info', 'warn', 'error'].includes(v)) throw new ConfigError(`--log-level must be debug, info, warn or error`);
        cfg.logLevel = v as Level;
        break;
      default:
        throw new ConfigError(`unknown flag ${flag}`);
    }
  }
  if (!cfg.socket) throw new ConfigError('--socket PATH is required');
  if (!cfg.dataDir) throw new ConfigError('--data-dir DIR is required');
  return cfg;
}
