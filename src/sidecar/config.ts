/**
 * Sidecar settings: defaults from plugin.json, overridden by command-line
 * flags (`--socket PATH --index leveldb --file-size-limit N --sync-interval-ms N`,
 * and the queue-index sizes `--queue-window N --queue-segment-entries N
 * --queue-journal-entries N`).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Level } from './log';

/** Queue-index and window sizes (sidecar flags); unset = the queue module's defaults. */
export interface QueueLayout {
  segmentEntries?: number;
  journalEntries?: number;
  window?: number;
}

export interface SidecarConfig {
  socket: string;
  index: string;
  fileSizeLimit: number;
  syncIntervalMs: number;
  logLevel: Level;
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

function positiveInt(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${flag} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

export function parseArgs(argv: readonly string[]): SidecarConfig {
  const d = pluginDefaults();
  const cfg: SidecarConfig = {
    socket: '',
    index: d.index ?? 'leveldb',
    fileSizeLimit: d.fileSizeLimit ?? 16 * 1024 * 1024,
    syncIntervalMs: d.syncIntervalMs ?? 5,
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
      case '--index':
        cfg.index = v;
        break;
      case '--file-size-limit':
        cfg.fileSizeLimit = positiveInt(flag, v);
        break;
      case '--sync-interval-ms':
        cfg.syncIntervalMs = positiveInt(flag, v);
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
  return cfg;
}
