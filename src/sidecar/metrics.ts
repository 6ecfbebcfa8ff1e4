/**
 * Prometheus metrics of the sidecar (prom-client), served on
 * http://127.0.0.1:<--metrics-port>/metrics when that flag is set (off by
 * default; `warren start` turns it on). Read-only figures: per queue its
 * ready and unacknowledged messages and bytes; per vhost store its messages,
 * files, valid and file bytes, garbage ratio, compactions and bytes
 * reclaimed, fsyncs (with a latency histogram), checksum failures, where
 * reads found their bodies (the cache hit ratio), the message index's own
 * counters and how the last start opened it; the publish→confirm latency
 * histogram; the queue indexes' segment cache. Gauges and counters are read
 * from the live objects at each scrape; only the two histograms are observed
 * as things happen.
 */
import * as http from 'http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueueFigures } from '../queue/messages';
import { sharedSegmentCache } from '../queue/segment-cache';
import type { StoreStats } from '../store';
import { log } from './log';

export interface VhostFigures {
  vhost: string;
  storeClean: boolean;
  openedMs: number;
  store: StoreStats;
  transient: StoreStats;
  queues: Array<{ name: string; figures: QueueFigures }>;
}

/** Publish→confirm waits in the sidecar: 100 µs (durability `write`, a quiet queue) to 5 s. */
const CONFIRM_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** fsync durations: 50 µs (page cache, a quiet SSD) to 2.5 s (a stalled disk). */
const FSYNC_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

type Source = () => VhostFigures[];

export class Metrics {
  readonly registry = new Registry();
  private readonly fsync: Histogram<'vhost'>;
  private readonly confirm: Histogram<'vhost'>;
  private server: http.Server | undefined;

  constructor(source: Source) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'warren_sidecar_' });
    this.fsync = new Histogram({ name: 'warren_store_fsync_seconds', help: 'Duration of the group-commit fsyncs of a vhost store', labelNames: ['vhost'], buckets: FSYNC_BUCKETS, registers });
    this.confirm = new Histogram({
      name: 'warren_confirm_latency_seconds',
      help: "A persistent message's wait in the sidecar, from its publish reaching the queue to its confirm being sent (the group commit and its fsync)",
      labelNames: ['vhost'],
      buckets: CONFIRM_BUCKETS,
      registers,
    });

    const queueGauge = (name: string, help: string, pick: (f: QueueFigures) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['vhost', 'queue'],
        registers,
        collect() {
          this.reset();
          for (const v of source()) for (const q of v.queues) this.set({ vhost: v.vhost, queue: q.name }, pick(q.figures));
        },
      });
    };
    queueGauge('warren_queue_messages_ready', 'Ready messages of a queue', (f) => f.len);
    queueGauge('warren_queue_messages_unacked', 'Delivered, unacknowledged messages of a queue', (f) => f.unacked);
    queueGauge('warren_queue_ready_bytes', 'Body bytes of the ready messages of a queue', (f) => f.readyBytes);
    queueGauge('warren_queue_unacked_bytes', 'Body bytes of the unacknowledged messages of a queue', (f) => f.unackedBytes);
    queueGauge('warren_queue_messages_persistent', 'Persistent messages of a queue (ready and unacknowledged)', (f) => f.persistentCount);
    queueGauge('warren_queue_persistent_bytes', 'Body bytes of the persistent messages of a queue', (f) => f.persistentBytes);

    const storeMetric = (kind: 'gauge' | 'counter', name: string, help: string, pick: (s: StoreStats) => number, which: 'store' | 'transient' = 'store'): void => {
      const collect = function (this: Gauge<'vhost'> | Counter<'vhost'>): void {
        this.reset();
        for (const v of source()) {
          const n = pick(v[which]);
          if (this instanceof Gauge) this.set({ vhost: v.vhost }, n);
          else this.inc({ vhost: v.vhost }, n); // the store's own running total
        }
      };
      if (kind === 'gauge') new Gauge({ name, help, labelNames: ['vhost'], registers, collect });
      else new Counter({ name, help, labelNames: ['vhost'], registers, collect });
    };
    storeMetric('gauge', 'warren_store_messages', 'Messages (index entries) in a vhost store', (s) => s.messages);
    storeMetric('gauge', 'warren_store_files', 'Segment files of a vhost store', (s) => s.files);
    storeMetric('gauge', 'warren_store_valid_bytes', 'Bytes of live records in the segment files of a vhost store', (s) => s.validBytes);
    storeMetric('gauge', 'warren_store_file_bytes', 'Bytes of the segment files of a vhost store', (s) => s.fileBytes);
    storeMetric('gauge', 'warren_store_garbage_ratio', 'Share of the segment file bytes that is garbage (compaction starts above 0.5 with more than two files)', (s) => s.garbageRatio);
    storeMetric('counter', 'warren_store_compactions_total', 'Compactions of a vhost store since it opened', (s) => s.compactions);
    storeMetric('counter', 'warren_store_reclaimed_bytes_total', 'Bytes reclaimed by compaction since the store opened', (s) => s.reclaimedBytes);
    storeMetric('counter', 'warren_store_fsyncs_total', 'Group-commit fsyncs of a vhost store since it opened', (s) => s.syncs);
    storeMetric('counter', 'warren_store_checksum_failures_total', 'Records read back that failed their CRC32C (never returned)', (s) => s.checksumFailures);
    storeMetric('counter', 'warren_store_writes_total', 'Records written to a vhost store', (s) => s.writes);
    storeMetric('counter', 'warren_store_reads_total', 'Records read from a vhost store', (s) => s.reads);
    storeMetric('counter', 'warren_store_removes_total', 'Removes applied to a vhost store', (s) => s.removes);
    storeMetric('gauge', 'warren_transient_store_messages', 'Transient message bodies paged out to the vhost transient store', (s) => s.messages, 'transient');
    storeMetric('gauge', 'warren_transient_store_file_bytes', 'Bytes of the vhost transient store files', (s) => s.fileBytes, 'transient');

    new Counter({
      name: 'warren_store_read_source_total',
      help: 'Reads of a vhost store by where they found the body: dedup (a body shared by queues), write_cache (the current file, not yet read back) or file',
      labelNames: ['vhost', 'source'],
      registers,
      collect() {
        this.reset();
        for (const v of source()) {
          const r = v.store.readSources;
          this.inc({ vhost: v.vhost, source: 'dedup' }, r.dedup);
          this.inc({ vhost: v.vhost, source: 'write_cache' }, r.writeCache);
          this.inc({ vhost: v.vhost, source: 'file' }, r.file);
        }
      },
    });
    new Gauge({
      name: 'warren_store_cache_hit_ratio',
      help: "Share of a vhost store's reads answered from its caches (dedup and write cache) rather than the segment files; 0 before any read",
      labelNames: ['vhost'],
      registers,
      collect() {
        this.reset();
        for (const v of source()) {
          const r = v.store.readSources;
          const all = r.dedup + r.writeCache + r.file;
          this.set({ vhost: v.vhost }, all ? (r.dedup + r.writeCache) / all : 0);
        }
      },
    });
    new Counter({
      name: 'warren_queue_segment_cache_lookups_total',
      help: "Lookups of the queue indexes' decoded-segment cache (shared by every queue of the sidecar), by result",
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        this.inc({ result: 'hit' }, sharedSegmentCache.hits);
        this.inc({ result: 'miss' }, sharedSegmentCache.misses);
      },
    });
    new Gauge({
      name: 'warren_store_open_seconds',
      help: 'How long the last start took to open a vhost store; recovery is "clean" (trusted the clean-shutdown state) or "rebuilt" (from the queue indexes)',
      labelNames: ['vhost', 'recovery'],
      registers,
      collect() {
        this.reset();
        for (const v of source()) this.set({ vhost: v.vhost, recovery: v.storeClean ? 'clean' : 'rebuilt' }, v.openedMs / 1000);
      },
    });
    new Gauge({
      name: 'warren_index_counter',
      help: "The message index's own figures (LevelDB: batches, batchOps, diskReads, readBatches, cacheEntries, bloomBytes, ...)",
      labelNames: ['vhost', 'kind', 'figure'],
      registers,
      collect() {
        this.reset();
        for (const v of source()) {
          for (const [figure, n] of Object.entries(v.store.index ?? {})) this.set({ vhost: v.vhost, kind: v.store.indexKind, figure }, typeof n === 'boolean' ? Number(n) : n);
        }
      },
    });
  }

  /** A message of a queue in `vhost` was confirmed `seconds` after its publish reached the queue. */
  observeConfirm(vhost: string, seconds: number): void {
    this.confirm.observe({ vhost }, seconds);
  }

  /** A group-commit fsync of `vhost`'s store took `seconds`. */
  observeFsync(vhost: string, seconds: number): void {
    this.fsync.observe({ vhost }, seconds);
  }

  /** Serves GET /metrics on 127.0.0.1:`port`; resolves once listening (rejects if the port cannot be had). */
  listen(port: number): Promise<number> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('warren sidecar: only GET /metrics is served here\n');
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (e: Error) => {
          log('error', `metrics: scrape failed: ${e.message}`);
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`);
        },
      );
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        server.on('error', (e) => log('error', `metrics server: ${e.message}`));
        this.server = server;
        resolve((server.address() as { port: number }).port);
      });
    });
  }

  close(): void {
    this.server?.close();
    this.server?.closeAllConnections();
  }
}
