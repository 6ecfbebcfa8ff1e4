import { LoopDelayMonitor } from '../../src/sidecar/loop-delay';

it('reports the garbage-collection pauses of each period: the longest and their sum', async () => {
  const m = new LoopDelayMonitor();
  try {
    m.read();
    let total = 0;
    let longest = 0;
    let keep: Array<{ i: number; s: string }> = [];
    // Allocate over many turns until V8 has collected (its observer reports in a later turn).
    for (let turn = 0; turn < 2000 && total === 0; turn++) {
      for (let i = 0; i < 20_000; i++) keep.push({ i, s: `x${i}` });
      keep = keep.slice(-1000);
      await new Promise((res) => setImmediate(res));
      const r = m.read();
      expect(r.gcMaxMs).toBeLessThanOrEqual(r.gcTotalMs);
      total += r.gcTotalMs;
      longest = Math.max(longest, r.gcMaxMs);
    }
    expect(total).toBeGreaterThan(0);
    expect(longest).toBeGreaterThan(0);
    expect(keep).toHaveLength(1000);
  } finally {
    m.stop();
  }
});
