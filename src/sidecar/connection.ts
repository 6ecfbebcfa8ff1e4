/**
 * One connection from the plugin: its state (handles it opened, whether it
 * authenticated) and its back-pressure (stop reading while Erlang is not),
 * and the privacy of the socket's directory. The protocol over it is
 * server.ts's.
 */
import * as fs from 'fs';
import * as net from 'net';
import { RefusedError } from './errors';
import { FrameDecoder } from './frames';

/** Frames before AUTH: AUTH itself is 37 bytes; nothing larger is buffered for an unauthenticated peer. */
const PRE_AUTH_MAX_FRAME = 64;
/** An unauthenticated connection is closed after this long. */
export const AUTH_TIMEOUT_MS = 10_000;

export class Connection {
  readonly handles = new Set<number>();
  readonly decoder = new FrameDecoder(PRE_AUTH_MAX_FRAME);
  authenticated = false;
  authTimer: NodeJS.Timeout | null = null;
  closed = false;

  constructor(
    readonly id: number,
    readonly sock: net.Socket,
  ) {}

  /** Why the socket is not being read: Erlang is not reading our writes, or this turn's budget is spent (server.ts). */
  private readonly holds = new Set<'drain' | 'budget'>();

  /** Stops reading the socket for `why` until released for it (no more 'data' meanwhile). */
  hold(why: 'drain' | 'budget'): void {
    if (this.holds.size === 0) this.sock.pause();
    this.holds.add(why);
  }

  /** Reading resumes once nothing holds it. */
  release(why: 'drain' | 'budget'): void {
    if (!this.holds.delete(why) || this.holds.size > 0 || this.closed) return;
    this.sock.resume();
  }

  /** Writes a frame, whole or in pieces (gathered into one writev, nothing copied). */
  send(frame: Buffer | Buffer[]): void {
    if (this.closed) return;
    let flowing: boolean;
    if (Buffer.isBuffer(frame)) flowing = this.sock.write(frame);
    else {
      this.sock.cork();
      flowing = true;
      for (const piece of frame) flowing = this.sock.write(piece);
      this.sock.uncork();
    }
    if (!flowing && !this.holds.has('drain')) {
      // Erlang is not reading: stop taking requests until it does (one
      // listener however many frames are sent meanwhile).
      this.hold('drain');
      this.sock.once('drain', () => this.release('drain'));
    }
  }
}

/**
 * Makes `dir` (the socket's directory) private: created 0700 if missing, and
 * refused unless it is a real directory owned by this process's user; its
 * mode is then forced to 0700.
 */
export function privateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory()) throw new RefusedError(`socket directory ${dir} is not a directory`);
  if (uid !== undefined && st.uid !== uid) throw new RefusedError(`socket directory ${dir} belongs to uid ${st.uid}, not to this process (uid ${uid})`);
  fs.chmodSync(dir, 0o700);
}
