/** A seeded pseudo-random generator (mulberry32) for replayable randomized tests: values in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A second stream for the same seed, independent of the first: a consumer
 * whose draws depend on timing (the crash recorder draws once per mutating
 * file operation, and how writes coalesce varies with load) must not shift
 * the workload's draws, or a seed would not replay.
 */
export function rngBeside(seed: number): () => number {
  return rng((seed ^ 0x9e3779b9) >>> 0);
}
