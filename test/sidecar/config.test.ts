import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ConfigError, parseArgs } from '../../src/sidecar/config';
import { checkValue, flagOf, MANIFEST, settings } from '../../src/sidecar/settings';
import { DEFAULT_WINDOW } from '../../src/queue/backing-queue';
import { DEFAULT_MAX_OPEN_JOURNALS } from '../../src/queue/journal-files';
import { DEFAULT_JOURNAL_ENTRIES } from '../../src/queue/queue-index';
import { DEFAULT_SEGMENT_ENTRIES } from '../../src/queue/queue-dir';
import { DEFAULT_WRITE_SYNC_INTERVAL_MS } from '../../src/queue/group-commit';
import { DEFAULT_FILE_SIZE_LIMIT } from '../../src/store/options';

const base = ['--socket', '/tmp/s.sock', '--data-dir', '/tmp/d'];

describe('sidecar flags: durability and the sync intervals', () => {
  it('defaults: confirm after fsync, no wait for company, 200 ms write-mode fsyncs', () => {
    const c = parseArgs(base);
    expect(c.durability).toBe('fsync');
    expect(c.syncIntervalMs).toBe(0);
    expect(c.writeSyncIntervalMs).toBe(200);
  });

  it('takes --durability write, --write-sync-interval-ms and a --sync-interval-ms of 0 or more', () => {
    const c = parseArgs([...base, '--durability', 'write', '--write-sync-interval-ms', '50', '--sync-interval-ms', '3']);
    expect(c).toMatchObject({ durability: 'write', writeSyncIntervalMs: 50, syncIntervalMs: 3 });
    expect(parseArgs([...base, '--sync-interval-ms', '0']).syncIntervalMs).toBe(0);
  });

  it('refuses a durability it does not know, and intervals that are not integers in range', () => {
    expect(() => parseArgs([...base, '--durability', 'none'])).toThrow(new ConfigError('--durability (setting durability) must be one of fsync, write, got "none"'));
    expect(() => parseArgs([...base, '--write-sync-interval-ms', '0'])).toThrow(/--write-sync-interval-ms \(setting write_sync_interval_ms\) must be an integer from 1 to 2147483647, got "0"/);
    expect(() => parseArgs([...base, '--sync-interval-ms', '-1'])).toThrow(/--sync-interval-ms .* from 0 to 2147483647, got "-1"/);
    expect(() => parseArgs([...base, '--sync-interval-ms', ''])).toThrow(/from 0 to 2147483647, got ""/);
    expect(() => parseArgs([...base, '--sync-interval-ms', '1.5'])).toThrow(/from 0 to 2147483647, got "1.5"/);
  });
});

describe("plugin.json's settings: the one table of Warren's settings", () => {
  it('gives the sidecar the defaults the library itself has', () => {
    const d = Object.fromEntries(settings().map((s) => [s.key, s.default]));
    expect(d).toMatchObject({
      durability: 'fsync',
      write_sync_interval_ms: DEFAULT_WRITE_SYNC_INTERVAL_MS,
      file_size_limit: DEFAULT_FILE_SIZE_LIMIT,
      queue_window: DEFAULT_WINDOW,
      queue_segment_entries: DEFAULT_SEGMENT_ENTRIES,
      queue_journal_entries: DEFAULT_JOURNAL_ENTRIES,
      max_open_journals: DEFAULT_MAX_OPEN_JOURNALS,
      metrics_port: null,
    });
    expect(parseArgs(base)).toMatchObject({
      index: 'leveldb',
      fileSizeLimit: DEFAULT_FILE_SIZE_LIMIT,
      maxOpenJournals: DEFAULT_MAX_OPEN_JOURNALS,
      logLevel: 'info',
      queue: { window: DEFAULT_WINDOW, segmentEntries: DEFAULT_SEGMENT_ENTRIES, journalEntries: DEFAULT_JOURNAL_ENTRIES },
    });
    expect(parseArgs(base).metricsPort).toBeUndefined();
  });

  it('has a flag for every sidecar setting, taking a valid value and refusing others with the flag and setting named', () => {
    const sidecar = settings().filter((s) => s.side === 'sidecar');
    expect(sidecar.map((s) => s.key).sort()).toEqual(
      ['durability', 'file_size_limit', 'index', 'log_level', 'max_open_journals', 'metrics_port', 'queue_journal_entries', 'queue_segment_entries', 'queue_window', 'sync_interval_ms', 'write_sync_interval_ms'].sort(),
    );
    for (const s of sidecar) {
      const good = s.type === 'enum' ? s.values[s.values.length - 1] : s.type === 'integer' ? String(s.max ?? s.min + 7) : 'x';
      expect(() => parseArgs([...base, flagOf(s.key), good])).not.toThrow();
      const bad = s.type === 'integer' ? String(s.min - 1) : 'nope';
      expect(() => parseArgs([...base, flagOf(s.key), bad])).toThrow(new RegExp(`^${flagOf(s.key)} \\(setting ${s.key}\\) must be .*, got "${bad}"$`));
    }
    expect(parseArgs([...base, '--queue-window', '512', '--metrics-port', '15693', '--index', 'memory'])).toMatchObject({ queue: { window: 512 }, metricsPort: 15693, index: 'memory' });
    expect(() => parseArgs([...base, '--read-ahead', '3'])).toThrow(/unknown flag --read-ahead \(the sidecar settings are --durability, /);
  });

  it('checks values as the plugin does: integers in range, enum words, non-empty paths', () => {
    const s = (k: string) => settings().find((x) => x.key === k)!;
    expect(checkValue(s('metrics_port'), 65535)).toBeUndefined();
    expect(checkValue(s('metrics_port'), 65536)).toBe('must be an integer from 1 to 65535');
    expect(checkValue(s('read_ahead'), 0)).toBeUndefined();
    expect(checkValue(s('read_ahead'), '12')).toBeUndefined();
    expect(checkValue(s('read_ahead'), 1.5)).toBe('must be an integer of at least 0');
    // timers take at most 2^31 - 1 ms (Node's, and the plugin's call timeouts); a segment file at most 1 GiB
    expect(checkValue(s('call_timeout'), 2 ** 31)).toBe('must be an integer from 1 to 2147483647');
    expect(checkValue(s('sync_interval_ms'), 2 ** 31 - 1)).toBeUndefined();
    expect(checkValue(s('file_size_limit'), 2 ** 30 + 1)).toBe('must be an integer from 65536 to 1073741824');
    expect(checkValue(s('index'), 'memory')).toBeUndefined();
    expect(checkValue(s('index'), 'sqlite')).toBe('must be one of leveldb, memory');
    expect(checkValue(s('sidecar_entry'), '')).toBe('must be a file path');
  });

  describe('a malformed manifest stops the sidecar with the file and key named, never defaults', () => {
    let dir: string;
    beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-manifest-'))));
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));
    const withManifest = (text: string) => {
      const p = path.join(dir, 'plugin.json');
      fs.writeFileSync(p, text);
      return () => parseArgs(base, p);
    };
    const mutated = (f: (m: { settings: Record<string, Record<string, unknown>> }) => void) => {
      const m = JSON.parse(fs.readFileSync(MANIFEST, 'utf8')) as { settings: Record<string, Record<string, unknown>> };
      f(m);
      return JSON.stringify(m);
    };

    it('refuses text that is not JSON', () => {
      expect(withManifest('{"settings": {')).toThrow(/plugin\.json is not valid JSON/);
    });
    it('refuses a manifest without settings', () => {
      expect(withManifest('{"name": "rabbitmq_warren"}')).toThrow(/"settings" must be an object of settings/);
    });
    it('refuses a default its own type refuses', () => {
      expect(withManifest(mutated((m) => (m.settings.file_size_limit.default = 'big')))).toThrow(/settings\.file_size_limit: default "big" must be an integer from 65536 to 1073741824/);
      expect(withManifest(mutated((m) => (m.settings.durability.default = 'never')))).toThrow(/settings\.durability: default "never" must be one of fsync, write/);
    });
    it('refuses an unknown type or side, and a plugin setting without a default', () => {
      expect(withManifest(mutated((m) => (m.settings.index.type = 'text')))).toThrow(/settings\.index: type must be integer, enum, path or flags, got "text"/);
      expect(withManifest(mutated((m) => (m.settings.index.side = 'broker')))).toThrow(/settings\.index: side must be plugin, sidecar or build/);
      expect(withManifest(mutated((m) => (m.settings.read_ahead.default = null)))).toThrow(/settings\.read_ahead: a plugin setting needs a default/);
    });
    it('refuses a sidecar setting the sidecar does not know, and a missing one', () => {
      expect(withManifest(mutated((m) => (m.settings.turbo = { side: 'sidecar', type: 'integer', min: 0, default: 1, doc: 'x' })))).toThrow(/sidecar setting turbo is not one the sidecar knows/);
      expect(withManifest(mutated((m) => delete m.settings.queue_window))).toThrow(/sidecar setting queue_window is missing/);
    });
  });
});
