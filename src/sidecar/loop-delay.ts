/**
 * How long the sidecar's event loop was late, for operators and the
 * benchmarks: a stall here delays every queue's confirms and deliveries at
 * once. Each read covers the time since the previous read (the histogram is
 * reset by it), so a benchmark reads once before a load and once after.
 */
import { IntervalHistogram, PerformanceObserver, monitorEventLoopDelay } from 'perf_hooks';

export interface LoopDelay {
  /** Milliseconds, over the period since the previous read. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** How long that period was. */
  sinceMs: number;
  /** V8's garbage-collection pauses of the main thread in the period: the longest and their sum (what of a stall was GC). */
  gcMaxMs: number;
  gcTotalMs: number;
}

export class LoopDelayMonitor {
  private readonly h: IntervalHistogram;
  private since = process.hrtime.bigint();
  private gcMax = 0;
  private gcTotal = 0;
  private readonly gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      this.gcTotal += e.duration;
      if (e.duration > this.gcMax) this.gcMax = e.duration;
    }
  });

  /** `resolutionMs`: the sampling timer's period (Node's default is 10 ms; 1 ms sees shorter stalls). */
  constructor(resolutionMs = 1) {
    this.h = monitorEventLoopDelay({ resolution: resolutionMs });
    this.h.enable();
    this.gc.observe({ entryTypes: ['gc'] });
  }

  /** The delays since the previous read; starts a new period. */
  read(): LoopDelay {
    const now = process.hrtime.bigint();
    const ms = (ns: number): number => Math.round(ns / 1e4) / 100;
    const out: LoopDelay = {
      p50Ms: this.h.count ? ms(this.h.percentile(50)) : 0,
      p99Ms: this.h.count ? ms(this.h.percentile(99)) : 0,
      maxMs: this.h.count ? ms(this.h.max) : 0,
      sinceMs: Number(now - this.since) / 1e6,
      gcMaxMs: ms(this.gcMax * 1e6),
      gcTotalMs: ms(this.gcTotal * 1e6),
    };
    this.gcMax = 0;
    this.gcTotal = 0;
    this.h.reset();
    this.since = now;
    return out;
  }

  stop(): void {
    this.h.disable();
    this.gc.disconnect();
  }
}
