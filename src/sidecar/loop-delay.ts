/**
 * How long the sidecar's event loop was late, for operators and the
 * benchmarks: a stall here delays every queue's confirms and deliveries at
 * once. Each read covers the time since the previous read (the histogram is
 * reset by it), so a benchmark reads once before a load and once after.
 */
import { IntervalHistogram, monitorEventLoopDelay } from 'perf_hooks';

export interface LoopDelay {
  /** Milliseconds, over the period since the previous read. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** How long that period was. */
  sinceMs: number;
}

export class LoopDelayMonitor {
  private readonly h: IntervalHistogram;
  private since = process.hrtime.bigint();

  /** `resolutionMs`: the sampling timer's period (Node's default is 10 ms; 1 ms sees shorter stalls). */
  constructor(resolutionMs = 1) {
    this.h = monitorEventLoopDelay({ resolution: resolutionMs });
    this.h.enable();
  }

  /** The delays since the previous read; starts a new period. */
  read(): LoopDelay {
    const now = process.hrtime.bigint();
    const ms = (ns: number): number => Math.round(ns / 1e4) / 100;
    const out = {
      p50Ms: this.h.count ? ms(this.h.percentile(50)) : 0,
      p99Ms: this.h.count ? ms(this.h.percentile(99)) : 0,
      maxMs: this.h.count ? ms(this.h.max) : 0,
      sinceMs: Number(now - this.since) / 1e6,
    };
    this.h.reset();
    this.since = now;
    return out;
  }

  stop(): void {
    this.h.disable();
  }
}
