/**
 * The sidecar's socket server: decodes frames, routes per-queue requests to
 * their session (in order), answers synchronous ones and pushes confirms.
 */
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { scanQueueIndex } from '../queue/queue-index';
import { SidecarConfig } from './config';
import { FrameDecoder, ProtocolError, Writer } from './frames';
import { log } from './log';
import { Entry, Frame, Op, RecoverMode, Request, decodeRequest, encodeConfirm, encodeError, encodeReply, writeEntries } from './protocol';
import { Session, openQueue } from './session';
import { Vhosts } from './vhosts';

export class UnknownHandleError extends Error {
  readonly code = 'EHANDLE';
  constructor(handle: number) {
    super(`unknown queue handle ${handle}`);
    this.name = 'UnknownHandleError';
  }
}

class Connection {
  readonly handles = new Set<number>();
  private decoder = new FrameDecoder();
  closed = false;

  constructor(
    readonly id: number,
    readonly sock: net.Socket,
  ) {}

  send(frame: Buffer): void {
    if (this.closed) return;
    if (!this.sock.write(frame)) {
      // Erlang is not reading: stop taking requests until it does.
      this.sock.pause();
      this.sock.once('drain', () => this.sock.resume());
    }
  }

  frames(chunk: Buffer): Buffer[] {
    return this.decoder.push(chunk);
  }
}

export class SidecarServer {
  private readonly vhosts: Vhosts;
  private readonly sessions = new Map<number, { session: Session; conn: Connection }>();
  private readonly byKey = new Map<string, number>();
  private nextHandle = 1;
  private nextConn = 1;
  private server: net.Server | null = null;
  private shuttingDown = false;

  constructor(
    private readonly cfg: SidecarConfig,
    private readonly onShutdown: () => void,
  ) {
    this.vhosts = new Vhosts({ index: cfg.index, fileSizeLimit: cfg.fileSizeLimit, syncIntervalMs: cfg.syncIntervalMs });
  }

  listen(): Promise<void> {
    const sockPath = this.cfg.socket;
    fs.mkdirSync(path.dirname(sockPath), { recursive: true });
    fs.rmSync(sockPath, { force: true });
    return new Promise((resolve, reject) => {
      const server = net.createServer((sock) => this.accept(sock));
      server.once('error', reject);
      server.listen(sockPath, () => {
        server.off('error', reject);
        server.on('error', (e) => log('error', `socket server: ${e.message}`));
        this.server = server;
        resolve();
      });
    });
  }

  private accept(sock: net.Socket): void {
    const conn = new Connection(this.nextConn++, sock);
    log('info', `connection ${conn.id} from the broker`);
    sock.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = conn.frames(chunk);
      } catch (e) {
        this.protocolFailure(conn, e as Error);
        return;
      }
      for (const payload of frames) {
        let frame: Frame;
        try {
          frame = decodeRequest(payload);
        } catch (e) {
          this.protocolFailure(conn, e as Error);
          return;
        }
        this.handle(conn, frame);
      }
    });
    sock.on('error', (e) => log('warn', `connection ${conn.id}: ${e.message}`));
    sock.on('close', () => {
      conn.closed = true;
      log('info', `connection ${conn.id} closed; ${conn.handles.size} open queue sessions are dropped as crashed`);
      void this.dropSessions([...conn.handles]);
    });
  }

  private protocolFailure(conn: Connection, e: Error): void {
    log('error', `connection ${conn.id}: protocol error: ${e.message}; closing the connection`);
    conn.closed = true;
    conn.sock.destroy();
  }

  private handle(conn: Connection, { reqId, req }: Frame): void {
    let result: Promise<Buffer | undefined>;
    try {
      result = this.dispatch(conn, req);
    } catch (e) {
      result = Promise.reject(e);
    }
    result.then(
      (body) => {
        if (reqId !== 0) conn.send(encodeReply(reqId, body ?? Buffer.alloc(0)));
        if (req.op === Op.SHUTDOWN) conn.sock.end(() => this.onShutdown());
      },
      (e: Error) => {
        const msg = e instanceof Error ? e.message : String(e);
        if (reqId !== 0) conn.send(encodeError(reqId, msg));
        else log('error', `async op ${req.op} failed: ${msg}`);
        if (e instanceof ProtocolError) this.protocolFailure(conn, e);
      },
    );
  }

  private session(handle: number): Session {
    const s = this.sessions.get(handle);
    if (!s) throw new UnknownHandleError(handle);
    return s.session;
  }

  private dispatch(conn: Connection, req: Request): Promise<Buffer | undefined> {
    switch (req.op) {
      case Op.START:
        return this.vhosts.serial(req.vhost, async () => {
          await this.resetVhost(req.vhost);
          const clean = await this.vhosts.start(req.vhost, req.dir, req.keys);
          const w = new Writer().u32(clean.length);
          for (const c of clean) w.u8(c ? 1 : 0);
          return w.finish();
        });
      case Op.INIT:
        return this.vhosts.serial(req.vhost, () => this.init(conn, req));
      case Op.DELETE_CRASHED:
        return this.vhosts.serial(req.vhost, () => this.deleteCrashed(req.vhost, req.dir, req.key));
      case Op.SHUTDOWN:
        return this.shutdown().then(() => undefined);
      case Op.STATS:
        return Promise.resolve(Buffer.from(JSON.stringify(this.stats())));
      default:
        break;
    }
    const s = this.session(req.handle);
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
        return s.exec.run(async () => entries(await q.fetch(req.max, req.mode, req.withBody)));
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
        return s.exec.run(async () => entries(await q.fold(req.afterSeq, req.max)));
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
    const old = this.byKey.get(keyId);
    if (old !== undefined) {
      log('warn', `queue ${req.name}: init while a session is open (the queue process restarted); the old session is dropped as crashed`);
      await this.dropSessions([old]);
    }
    const vh = await this.vhosts.ensure(req.vhost, req.dir);
    const handle = this.nextHandle++;
    const queue = await openQueue({
      vh,
      key: req.key,
      name: `'${req.name}' in vhost '${req.vhost}'`,
      durable: req.durable,
      fresh: req.recover === RecoverMode.New,
      syncIntervalMs: this.cfg.syncIntervalMs,
      layout: this.cfg.queue,
      onConfirm: (ids) => conn.send(encodeConfirm(handle, ids)),
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
        await s.session.exec.run(() => s.session.queue.abandon()).catch((e: Error) => log('error', `dropping session ${h}: ${e.message}`));
      }),
    );
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
    const qdir = path.join(dir, 'warren', 'queues', key);
    if (vh) {
      const client = vh.store.client(key);
      for await (const entries of scanQueueIndex(qdir)) if (entries.length) client.remove(entries.map((e) => e.id));
      await client.deleteAndTerminate();
    }
    await fs.promises.rm(qdir, { recursive: true, force: true });
    log('info', `queue ${key} in vhost ${vhost}: crashed queue deleted`);
    return undefined;
  }

  /** Figures for operators and tests: per vhost, the store's stats and each open queue's figures. */
  stats(): Record<string, unknown> {
    const vhosts: Record<string, unknown> = {};
    for (const vh of this.vhosts.all()) {
      const queues: Record<string, unknown> = {};
      for (const { session } of this.sessions.values()) {
        if (session.info.vhost === vh.vhost) queues[session.info.name] = { ...session.queue.figures(), memory: session.queue.memory() };
      }
      vhosts[vh.vhost] = { dir: vh.dir, storeClean: vh.storeClean, store: vh.store.stats(), transientStore: vh.transient.stats(), queues };
    }
    return { pid: process.pid, vhosts };
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
    this.server?.close();
  }
}

function entries(list: Entry[]): Buffer {
  return writeEntries(new Writer(), list).finish();
}
