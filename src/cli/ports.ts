/**
 * TCP ports on 127.0.0.1, where every node of ours listens: a free one for a
 * node's listeners (tests and benchmarks run several side by side), and
 * whether one accepts connections yet (a node or its epmd is up).
 */
import * as net from 'net';

/** A TCP port on 127.0.0.1 that is free right now (for a node's listeners in tests and benchmarks). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** True if something accepts a connection on `host`:`port` (default 127.0.0.1) within a second. */
export function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}
