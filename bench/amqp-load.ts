/**
 * AMQP loads the broker benchmarks share: a publisher that keeps a window of
 * confirms outstanding, and the clock they are timed with.
 */
import * as amqp from 'amqplib';

/** Seconds since `t` (process.hrtime.bigint()). */
export const seconds = (t: bigint): number => Number(process.hrtime.bigint() - t) / 1e9;

/** Publishes n persistent messages keeping exactly `window` confirms outstanding; resolves with the seconds taken. */
export function publishWindow(ch: amqp.ConfirmChannel, exchange: string, key: string, content: Buffer, n: number, window: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let confirmed = 0;
    let failed = false;
    const t0 = process.hrtime.bigint();
    const onConfirm = (err: unknown) => {
      if (failed) return;
      if (err) {
        failed = true;
        reject(new Error(`a message was nacked (${String(err)})`));
        return;
      }
      confirmed++;
      if (sent < n) send();
      else if (confirmed === n) resolve(seconds(t0));
    };
    const send = () => {
      sent++;
      ch.publish(exchange, key, content, { persistent: true }, onConfirm);
    };
    ch.once('error', (e: Error) => {
      failed = true;
      reject(e);
    });
    for (let i = 0; i < Math.min(window, n); i++) send();
  });
}
