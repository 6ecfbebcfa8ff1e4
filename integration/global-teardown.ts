import * as fs from 'fs';
import { Broker } from '../src/cli/broker';
import { TestState } from './harness';

export default async function globalTeardown(): Promise<void> {
  const file = process.env.WARREN_IT_STATE; // set by global-setup in this process
  if (!file || !fs.existsSync(file)) return;
  const state = JSON.parse(fs.readFileSync(file, 'utf8')) as TestState;
  const broker = new Broker(state);
  await broker.stop();
  const errors = broker.errorEntries();
  if (errors.length) {
    // Errors are not failures by themselves (a test may provoke them), but a
    // failed run on a machine whose data dir is gone is explained by them.
    process.stdout.write(`\n--- error entries of ${broker.logFile} (${errors.length} lines) ---\n${errors.join('\n')}\n`);
  }
  fs.rmSync(file, { force: true });
  if (!process.env.WARREN_KEEP_DATA) fs.rmSync(state.dataDir, { recursive: true, force: true });
}
