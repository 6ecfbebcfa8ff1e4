/**
 * The sidecar's socket server: decodes frames, routes per-queue requests to
 * their session (in order), answers synchronous ones and pushes confirms.
 *
 * The link is the broker's alone (docs/RELIABILITY.md, "Security"): the socket
 * lives in a directory only the broker's user can enter; a connection's first
 * frame must be AUTH with the token the plugin handed this process on stdin
 * (until then frames are limited to a few bytes); a session handle is valid
 * only on the connection that opened it; and every directory a request names
 * must be a vhost directory under the broker's data directory.
 *
 * A connection's state is connection.ts's, a vhost's stores vhosts.ts's, a
 * queue's requests session.ts's. What stays here, at about 430 lines, is the
 * routing: `dispatch` is one case per op of the protocol, kept in one switch
 * so that which ops are serialised, per session or per vhost, reads in one
 * place.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { scanQueueIndex } from '../queue/queue-dir';
import { queueLabel, readQueueName } from '../queue/queue-name';
import { sharedJournalFiles } from '../queue/queue-index';
import { pathExists } from '../store/fs-util';
import { SidecarConfig } from './config';
import { Payload, ProtocolError, Writer } from './frames';
import { log } from './log';
import { Entry, FetchMode, Frame, Op, RecoverMode, Request, TOKEN_BYTES, decodeRequest, encodeConfirm, encodeError, encodeFailed, encodeReply, writeEntries } from './protocol';
import { Session, openQueue } from './session';
import { Vhosts } from './vhosts';
import { AUTH_TIMEOUT_MS, Connection, privateDir } from './connection';
import { queueDirOf, vhostsDirOf } from './data-layout';
import type { Metrics, VhostFigures } from './metrics';
import { RefusedError, UnknownHandleError } from './errors';
import { LoopDelayMonitor } from './loop-delay';
import { turnBudget } from '../util/turn-budget';

export class SidecarServer {
  private readonly vhosts: Vhosts;
  private readonly sessions = new Map<number, { session: Session; conn: Connection }>();
  private readonly byKey = new Map<string, number>();
  private nextHandle = 1;
  private nextConn = 1;
  private server: net.Server | null = null;
  /** Prometheus metrics, with --metrics-port. */
  private readonly metrics: Metrics | undefined;
  private shuttingDown = false;
  private readonly loopDelay = new LoopDelayMonitor();

  /** Vhost directories must be `<vhostsDir>/<name>` (rabbit_vhost:msg_store_dir_path/1). */
  private readonly vhostsDir: string;

  constructor(
    private readonly cfg: SidecarConfig,
    private readonly token: Buffer,
    private readonly onShutdown: () => void,
  ) {
    if (token.length !== TOKEN_BYTES) throw new RangeError(`the connection token must be ${TOKEN_BYTES} bytes`);
    this.vhostsDir = vhostsDirOf(path.resolve(cfg.dataDir));
    this.vhosts = new Vhosts({
      index: cfg.index,
      fileSizeLimit: cfg.fileSizeLimit,
      syncIntervalMs: cfg.syncIntervalMs,
      backgroundSyncMs: cfg.durability === 'write' ? cfg.writeSyncIntervalMs : 0,
      segmentEntries: cfg.queue?.segmentEntries,
      onSync: (vhost, seconds) => this.metrics?.observeFsync(vhost, seconds),
    });
    if (cfg.metricsPort !== undefined) {
      // Loaded only when asked for: prom-client is a fifth of the sidecar's start (~20 ms), which is on the broker's boot path.
      const { Metrics: MetricsOf } = require('./metrics') as typeof import('./metrics');
      this.metrics = new MetricsOf(() => this.vhostFigures());
    }
    if (cfg.maxOpenJournals !== undefined) sharedJournalFiles.limit = cfg.maxOpenJournals;
  }

  async listen(): Promise<void> {
    await this.listenSocket();
    if (this.metrics && this.cfg.metricsPort !== undefined) {
      const port = this.cfg.metricsPort;
      // Figures only: a port that cannot be had is logged, and the store runs on without them.
      await this.metrics.listen(port).then(
        () => log('info', `metrics: Prometheus figures on http://127.0.0.1:${port}/metrics`),
        (e: Error) => log('error', `metrics: cannot listen on 127.0.0.1:${port} (${e.message}); the sidecar runs without metrics`),
      );
    }
  }

  private listenSocket(): Promise<void> {
    const sockPath = this.cfg.socket;
    privateDir(path.dirname(sockPath));
    fs.rmSync(sockPath, { force: true });
    return new Promise((resolve, reject) => {
      const server = net.createServer((sock) => this.accept(sock));
      server.once('error', reject);
      server.listen(sockPath, () => {
        server.off('error', reject);
        server.on('error', (e) => log('error', `socket server: ${e.message}`));
        fs.chmodSync(sockPath, 0o600);
        this.server = server;
        resolve();
      });
    });
  }

  private accept(sock: net.Socket): void {
    const conn = new Connection(this.nextConn++, sock);
    log('info', `connection ${conn.id} opened; waiting for its token`);
    conn.authTimer = setTimeout(() => this.refuse(conn, `no token within ${AUTH_TIMEOUT_MS} ms`), AUTH_TIMEOUT_MS);
    sock.on('data', (chunk: Buffer) => {
      conn.decoder.feed(chunk);
      this.takeFrames(conn);
    });
    sock.on('error', (e) => log('warn', `connection ${conn.id}: ${e.message}`));
    sock.on('close', () => {
      conn.closed = true;
      if (conn.authTimer) clearTimeout(conn.authTimer);
      if (!conn.authenticated) return;
      log('info', `connection ${conn.id} closed; ${conn.handles.size} open queue sessions are dropped as crashed`);
      void this.dropSessions([...conn.handles]);
    });
  }

  /**
   * Handles the frames buffered, in order, until the turn's budget is spent:
   * the socket then stops being read and the rest is taken in the next turn
   * (turn-budget.ts), so a burst of frames does not hold up every other queue.
   */
  private takeFrames(conn: Connection): void {
    for (;;) {
      if (conn.closed) return;
      if (turnBudget.spent()) {
        conn.hold('budget');
        setImmediate(() => this.takeFrames(conn));
        return;
      }
      let frame: Frame;
      try {
        const payload = conn.decoder.next();
        if (payload === undefined) {
          conn.release('budget');
          return;
        }
        frame = decodeRequest(payload);
      } catch (e) {
        if (conn.authenticated) this.protocolFailure(conn, e as Error);
        else this.refuse(conn, (e as Error).message);
        return;
      }
      if (conn.authenticated) this.handle(conn, frame);
      else this.authenticate(conn, frame);
    }
  }

  /** The first frame of a connection: AUTH with this boot's token, or the connection is refused. */
  private authenticate(conn: Connection, { reqId, req }: Frame): void {
    if (req.op !== Op.AUTH) return this.refuse(conn, `first frame is op ${req.op}, not AUTH`);
    if (!crypto.timingSafeEqual(req.token, this.token)) return this.refuse(conn, 'wrong token');
    conn.authenticated = true;
    if (conn.authTimer) clearTimeout(conn.authTimer);
    conn.authTimer = null;
    conn.decoder.limit = this.cfg.maxFrame;
    log('info', `connection ${conn.id} from the broker authenticated`);
    if (reqId !== 0) conn.send(encodeReply(reqId, Buffer.alloc(0)));
  }

  private refuse(conn: Connection, why: string): void {
    if (conn.closed) return;
    log('warn', `connection ${conn.id} refused: ${why}`);
    conn.closed = true;
    conn.sock.destroy();
  }

  private protocolFailure(conn: Connection, e: Error): void {
    log('error', `connection ${conn.id}: protocol error: ${e.message}; closing the connection`);
    conn.closed = true;
    conn.sock.destroy();
  }

  private handle(conn: Connection, { reqId, req }: Frame): void {
    let result: Promise<Buffer | Payload | undefined>;
    try {
      result = this.dispatch(conn, req);
    } catch (e) {
      result = Promise.reject(e);
    }
    result.then(
      (body) => {
        if (reqId !== 0) {
          const b = body ?? Buffer.alloc(0);
          // The plugin refuses frames over the limit (packet_size): answer with an error it can read instead.
          if (b.length + 6 > this.cfg.maxFrame) conn.send(encodeError(reqId, `reply of ${b.length} bytes exceeds the ${this.cfg.maxFrame}-byte frame limit`));
          else conn.send(encodeReply(reqId, b));
        }
        if (req.op === Op.SHUTDOWN) conn.sock.end(() => this.onShutdown());
      },
      (e: Error) => {
        const msg = e instanceof Error ? e.message : String(e);
        if (reqId !== 0) conn.send(encodeError(reqId, msg));
        else if ('handle' in req) this.asyncFailed(conn, req.handle, req.op, e);
        else log('error', `async op ${req.op} failed: ${msg}`);
        if (e instanceof ProtocolError) this.protocolFailure(conn, e);
      },
    );
  }

  /**
   * An asynchronous request of a queue failed (a store write after the disk
   * filled, an ack the queue cannot apply): the queue process has counted on
   * it and nobody will answer, so its queue fails and the owner is told
   * (FAILED), which ends the process: RabbitMQ nacks what is unconfirmed and
   * restarts it.
   */
  private asyncFailed(conn: Connection, handle: number, op: number, e: Error): void {
    const s = this.sessions.get(handle);
    if (s && s.conn === conn) {
      s.session.queue.fail(new Error(`op ${op} failed: ${e.message}`));
    } else {
      log('error', `async op ${op} for unknown queue handle ${handle} on connection ${conn.id}: ${e.message}`);
      conn.send(encodeFailed(handle, `queue handle ${handle}: op ${op} failed: ${e.message}`));
    }
  }

  /** A session of this connection: handles of other connections are unknown here. */
  private session(conn: Connection, handle: number): Session {
    const s = this.sessions.get(handle);
    if (!s || s.conn !== conn) {
      if (s) log('warn', `connection ${conn.id} used queue handle ${handle} of connection ${s.conn.id}; refused`);
      throw new UnknownHandleError(handle);
    }
    return s.session;
  }

  /** `dir` as a vhost directory under the broker's data dir, or a RefusedError. */
  private vhostDir(dir: string): string {
    const resolved = path.resolve(dir);
    if (!path.isAbsolute(dir) || path.dirname(resolved) !== this.vhostsDir || !/^[A-Za-z0-9]+$/.test(path.basename(resolved))) {
      log('warn', `refused a request for directory ${JSON.stringify(dir)}: not a vhost directory under ${this.vhostsDir}`);
      throw new RefusedError(`directory ${JSON.stringify(dir)} is not a vhost directory under ${this.vhostsDir}`);
    }
    return resolved;
  }

  /** Bytes of message sizes one reply may carry when it can stop early (FOLD, read-ahead FETCH); half the frame limit leaves room for properties. */
  private get replyBudget(): number {
    return Math.floor(this.cfg.maxFrame / 2);
  }

  private dispatch(conn: Connection, req: Request): Promise<Buffer | Payload | undefined> {
    switch (req.op) {
      case Op.AUTH:
        return Promise.reject(new ProtocolError('AUTH on a connection already authenticated'));
      case Op.START: {
        const dir = this.vhostDir(req.dir);
        return this.vhosts.serial(req.vhost, async () => {
          await this.resetVhost(req.vhost);
          const clean = await this.vhosts.start(req.vhost, dir, req.keys, req.legacyKeys);
          const w = new Writer().u32(clean.length);
          for (const c of clean) w.u8(c ? 1 : 0);
          return w.finish();
        });
      }
      case Op.INIT: {
        const dir = this.vhostDir(req.dir);
        return this.vhosts.serial(req.vhost, () => this.init(conn, { ...req, dir }));
      }
      case Op.DELETE_CRASHED: {
        const dir = this.vhostDir(req.dir);
        return this.vhosts.serial(req.vhost, () => this.deleteCrashed(req.vhost, dir, req.key));
      }
      case Op.SHUTDOWN:
        return this.shutdown().then(() => undefined);
      case Op.STATS:
        return Promise.resolve(Buffer.from(JSON.stringify(this.stats())));
      default:
        break;
    }
    const s = this.session(conn, req.handle);
    const q = s.queue;
    switch (req.op) {
      case Op.PUBLISH:
        return s.exec.run(() => {
          for (const p of req.publishes) q.publish(p);
          return undefined;
        });
      case Op.ACK:
        return s.exec.run(() => {
          q.ack(req.seqs);
          return undefined;
        });
      case Op.REQUEUE:
        return s.exec.run(() => {
          q.requeue(req.seqs);
          return undefined;
        });
      case Op.FETCH:
        // A read-ahead reservation may come back short; every other FETCH takes exactly what the plugin asked for.
        return s.exec.run(async () => entries(await q.fetch(req.max, req.mode, req.withBody, req.mode === FetchMode.Reserve ? this.replyBudget : Infinity)));
      case Op.DELIVER:
        return s.exec.run(() => {
          q.markDelivered(req.seqs);
          return undefined;
        });
      case Op.RELEASE:
        return s.exec.run(() => {
          q.requeue(req.seqs);
          return undefined;
        });
      case Op.FAIL_DELIVERY:
        return s.exec.run(() => {
          q.failDelivery(req.seqs);
          return undefined;
        });
      case Op.PEEK:
        return s.exec.run(async () => {
          const props = await q.peek(req.max);
          const w = new Writer().u32(props.length);
          for (const p of props) w.i64(p.expiry).u32(p.size).u8(p.flags);
          return w.finish();
        });
      case Op.READ:
        return s.exec.run(async () => entries(await q.read(req.seqs)));
      case Op.FOLD:
        return s.exec.run(async () => entries(await q.fold(req.afterSeq, req.max, this.replyBudget)));
      case Op.PURGE:
        return s.exec.run(async () => {
          const r = await q.purge();
          return new Writer().u32(r.count).u32(r.persistentCount).u64(r.persistentBytes).finish();
        });
      case Op.PURGE_ACKS:
        return s.exec.run(() => {
          q.purgeAcks();
          return undefined;
        });
      case Op.SYNC:
        return s.exec.run(async () => {
          await q.commit();
          return undefined;
        });
      case Op.TERMINATE:
        return s.exec.run(async () => {
          await q.terminate();
          this.forget(req.handle);
          return undefined;
        });
      case Op.DELETE_AND_TERMINATE:
        return s.exec.run(async () => {
          await q.deleteAndTerminate();
          this.forget(req.handle);
          return undefined;
        });
    }
  }

  private async init(conn: Connection, req: Extract<Request, { op: typeof Op.INIT }>): Promise<Buffer> {
    const keyId = `${req.vhost}\0${req.key}`;
    const qdir = queueDirOf(req.dir, req.key);
    if (req.durable && req.recover === RecoverMode.New && (await pathExists(qdir))) {
      // As RabbitMQ's own queue index asserts: a new queue never takes over state that is there
      // (another queue's, or a leftover). Refused before any session is touched.
      log('error', `queue '${req.name}' in vhost '${req.vhost}': refusing to create it, its index directory ${qdir} already exists (left untouched)`);
      throw new RefusedError(`queue '${req.name}' in vhost '${req.vhost}': its index directory ${qdir} already exists; a new queue never takes over existing state`);
    }
    const old = this.byKey.get(keyId);
    if (old !== undefined) {
      log('warn', `queue '${req.name}' in vhost '${req.vhost}': init while a session is open (the queue process restarted); the old session is dropped as crashed`);
      await this.dropSessions([old]);
    }
    await this.reopenFailedStore(req.vhost);
    const vh = await this.vhosts.ensure(req.vhost, req.dir);
    const handle = this.nextHandle++;
    const queue = await openQueue({
      vh,
      key: req.key,
      name: `'${req.name}' in vhost '${req.vhost}'`,
      queueName: req.name,
      durable: req.durable,
      fresh: req.recover === RecoverMode.New,
      syncIntervalMs: this.cfg.syncIntervalMs,
      durability: this.cfg.durability,
      writeSyncIntervalMs: this.cfg.writeSyncIntervalMs,
      layout: this.cfg.queue,
      onConfirm: (ids) => conn.send(encodeConfirm(handle, ids)),
      onConfirmLatency: this.metrics ? (seconds) => this.metrics?.observeConfirm(req.vhost, seconds) : undefined,
      onFailure: (e) => conn.send(encodeFailed(handle, e.message)),
    });
    const session = new Session({ handle, vhost: req.vhost, key: req.key, name: req.name }, queue);
    this.sessions.set(handle, { session, conn });
    this.byKey.set(keyId, handle);
    conn.handles.add(handle);
    const f = queue.figures();
    return new Writer().u32(handle).u32(f.len).u64(f.readyBytes).u32(f.persistentCount).u64(f.persistentBytes).u64(f.nextSeq).u32(f.readyExpiring).finish();
  }

  private forget(handle: number): void {
    const s = this.sessions.get(handle);
    if (!s) return;
    this.sessions.delete(handle);
    s.conn.handles.delete(handle);
    const keyId = `${s.session.info.vhost}\0${s.session.info.key}`;
    if (this.byKey.get(keyId) === handle) this.byKey.delete(keyId);
  }

  /** Sessions whose queue process is gone without terminate: keep their journal, nothing else. */
  private async dropSessions(handles: number[]): Promise<void> {
    await Promise.all(
      handles.map(async (h) => {
        const s = this.sessions.get(h);
        if (!s) return;
        this.forget(h);
        await s.session.exec.run(() => s.session.queue.abandon()).catch((e: Error) => log('error', `queue '${s.session.info.name}' in vhost '${s.session.info.vhost}': dropping its session ${h}: ${e.message}`));
      }),
    );
  }

  /**
   * A vhost store that failed (a write or fsync error: a full disk, EIO)
   * accepts no writes until it is reopened. At the first INIT after it failed
   * (a failed queue restarting), every queue of the vhost fails (their
   * processes restart too), the store is closed without clean state and is
   * opened again, non-clean, from the queue indexes on disk: once there is
   * space again, the queues work without a broker restart.
   */
  private async reopenFailedStore(vhost: string): Promise<void> {
    const vh = this.vhosts.get(vhost);
    const why = vh?.store.failed ?? vh?.transient.failed;
    if (!vh || !why) return;
    const handles = [...this.sessions.entries()].filter(([, s]) => s.session.info.vhost === vhost).map(([h]) => h);
    log('error', `vhost ${vhost}: its store failed (${why.message}); ending its ${handles.length} queue sessions and reopening the store from the queue indexes`);
    for (const h of handles) this.sessions.get(h)?.session.queue.fail(new Error(`the store of vhost '${vhost}' failed: ${why.message}`));
    await this.dropSessions(handles);
    await this.vhosts.close(vhost);
  }

  /** A vhost START while its store is open (vhost restarted): its old sessions crashed with it. */
  private async resetVhost(vhost: string): Promise<void> {
    if (!this.vhosts.get(vhost)) return;
    const handles = [...this.sessions.entries()].filter(([, s]) => s.session.info.vhost === vhost).map(([h]) => h);
    await this.dropSessions(handles);
    await this.vhosts.close(vhost);
  }

  private async deleteCrashed(vhost: string, dir: string, key: string): Promise<undefined> {
    const keyId = `${vhost}\0${key}`;
    const h = this.byKey.get(keyId);
    if (h !== undefined) await this.dropSessions([h]);
    const vh = this.vhosts.get(vhost);
    const qdir = queueDirOf(dir, key);
    const label = `queue ${queueLabel({ key, name: await readQueueName(qdir) })} in vhost '${vhost}'`;
    vh?.walk?.digests.delete(key);
    if (vh) {
      const client = vh.store.client(key);
      for await (const { entries } of scanQueueIndex(qdir, this.cfg.queue?.segmentEntries, (level, msg) => log(level, `${label}: ${msg}`))) if (entries.length) client.remove(entries.map((e) => e.id));
      await client.deleteAndTerminate();
    }
    await fs.promises.rm(qdir, { recursive: true, force: true });
    log('info', `${label}: crashed queue deleted`);
    return undefined;
  }

  /** What the metrics read at each scrape. */
  private vhostFigures(): VhostFigures[] {
    const sessions = [...this.sessions.values()].map((s) => s.session);
    return this.vhosts.all().map((vh) => ({
      vhost: vh.vhost,
      storeClean: vh.storeClean,
      openedMs: vh.openedMs,
      store: vh.store.stats(),
      transient: vh.transient.stats(),
      queues: sessions.filter((s) => s.info.vhost === vh.vhost).map((s) => ({ name: s.info.name, figures: s.queue.figures() })),
    }));
  }

  /**
   * Figures for operators and tests: per vhost, the store's stats and each
   * open queue's figures; the event loop's delay since the previous read.
   */
  stats(): Record<string, unknown> {
    const vhosts: Record<string, unknown> = {};
    for (const vh of this.vhosts.all()) {
      const queues: Record<string, unknown> = {};
      for (const { session } of this.sessions.values()) {
        if (session.info.vhost === vh.vhost) queues[session.info.name] = { ...session.queue.figures(), memory: session.queue.memory() };
      }
      vhosts[vh.vhost] = { dir: vh.dir, storeClean: vh.storeClean, openedMs: vh.openedMs, store: vh.store.stats(), transientStore: vh.transient.stats(), queues };
    }
    return { pid: process.pid, eventLoopDelay: this.loopDelay.read(), journalFiles: sharedJournalFiles.stats(), vhosts };
  }

  /** Clean shutdown of every store. Sessions still open are left non-clean. */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    const open = [...this.sessions.keys()];
    if (open.length) log('warn', `shutdown with ${open.length} queue sessions still open; they will recover as after a crash`);
    await this.dropSessions(open);
    for (const vh of this.vhosts.all()) {
      await this.vhosts.close(vh.vhost);
      log('info', `vhost ${vh.vhost}: store closed cleanly`);
    }
    this.loopDelay.stop();
    this.metrics?.close();
    this.server?.close();
  }
}

/** Entries as a payload in pieces: message bodies go to the socket as they were read, uncopied. */
function entries(list: Entry[]): Payload {
  return writeEntries(new Writer(), list).pieces();
}
