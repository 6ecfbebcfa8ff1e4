import { ConfigError, parseArgs } from '../../src/sidecar/config';

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
    expect(() => parseArgs([...base, '--durability', 'none'])).toThrow(new ConfigError('--durability must be fsync or write, got "none"'));
    expect(() => parseArgs([...base, '--write-sync-interval-ms', '0'])).toThrow(/--write-sync-interval-ms must be a positive integer/);
    expect(() => parseArgs([...base, '--sync-interval-ms', '-1'])).toThrow(/--sync-interval-ms must be a non-negative integer/);
    expect(() => parseArgs([...base, '--sync-interval-ms', ''])).toThrow(/non-negative integer/);
  });
});
