/**
 * The sidecar's configuration: `--socket PATH --data-dir DIR --max-frame N`
 * from the plugin, and a flag for each sidecar setting of plugin.json
 * (settings.ts: `--durability write`, `--file-size-limit N`, ...) over the
 * defaults there. The connection token is not a flag: it comes on stdin
 * (see main.ts).
 */
import * as path from 'path';
import { DEFAULT_MAX_FRAME, MAX_MAX_FRAME, MIN_MAX_FRAME } from './frames';
import { DEFAULT_WRITE_SYNC_INTERVAL_MS, Durability } from '../queue/group-commit';
import { DEFAULT_FILE_SIZE_LIMIT } from '../store/options';
import { Level } from './log';
import { checkValue, flagOf, Setting, settings } from './settings';

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

/** Where each sidecar setting of plugin.json goes in the config (the value is already checked). */
const APPLY: Record<string, (cfg: SidecarConfig, v: string) => void> = {
  durability: (c, v) => (c.durability = v as Durability),
  write_sync_interval_ms: (c, v) => (c.writeSyncIntervalMs = Number(v)),
  sync_interval_ms: (c, v) => (c.syncIntervalMs = Number(v)),
  index: (c, v) => (c.index = v),
  file_size_limit: (c, v) => (c.fileSizeLimit = Number(v)),
  queue_window: (c, v) => (c.queue = { ...c.queue, window: Number(v) }),
  queue_segment_entries: (c, v) => (c.queue = { ...c.queue, segmentEntries: Number(v) }),
  queue_journal_entries: (c, v) => (c.queue = { ...c.queue, journalEntries: Number(v) }),
  max_open_journals: (c, v) => (c.maxOpenJournals = Number(v)),
  metrics_port: (c, v) => (c.metricsPort = Number(v)),
  log_level: (c, v) => (c.logLevel = v as Level),
};

/** The sidecar settings of the manifest; each must have a place in the config, and each place a setting. */
function sidecarSettings(table: readonly Setting[]): Setting[] {
  const ours = table.filter((s) => s.side === 'sidecar');
  for (const s of ours) if (!APPLY[s.key]) throw new ConfigError(`plugin.json: sidecar setting ${s.key} is not one the sidecar knows`);
  for (const k of Object.keys(APPLY)) if (!ours.some((s) => s.key === k)) throw new ConfigError(`plugin.json: sidecar setting ${k} is missing`);
  return ours;
}

function positiveInt(flag: string, v: string): number {
  const n = Number(v);
  if (!/^[0-9]+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new ConfigError(`${flag} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

/**
 * The sidecar's command line: the plugin's own flags (--socket, --data-dir,
 * --max-frame) and one flag per sidecar setting of plugin.json, over the
 * defaults there. A malformed manifest throws, as does a bad flag or value.
 */
export function parseArgs(argv: readonly string[], manifest?: string): SidecarConfig {
  let table: readonly Setting[];
  try {
    table = settings(manifest);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const ours = sidecarSettings(table);
  const cfg: SidecarConfig = {
    socket: '',
    dataDir: '',
    maxFrame: DEFAULT_MAX_FRAME,
    index: 'leveldb',
    fileSizeLimit: DEFAULT_FILE_SIZE_LIMIT,
    syncIntervalMs: 0,
    durability: 'fsync',
    writeSyncIntervalMs: DEFAULT_WRITE_SYNC_INTERVAL_MS,
    logLevel: 'info',
  };
  for (const s of ours) if (s.default !== null) APPLY[s.key](cfg, String(s.default));
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
      default: {
        const s = ours.find((x) => flagOf(x.key) === flag);
        if (!s) throw new ConfigError(`unknown flag ${flag} (the sidecar settings are ${ours.map((x) => flagOf(x.key)).join(', ')})`);
        const why = checkValue(s, v);
        if (why) throw new ConfigError(`${flag} (setting ${s.key}) ${why}, got ${JSON.stringify(v)}`);
        APPLY[s.key](cfg, v);
      }
    }
  }
  if (!cfg.socket) throw new ConfigError('--socket PATH is required');
  if (!cfg.dataDir) throw new ConfigError('--data-dir DIR is required');
  return cfg;
}
