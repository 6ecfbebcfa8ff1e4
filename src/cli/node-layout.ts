/**
 * Where a node of ours keeps its files, all under its data dir and named as
 * RabbitMQ names them, so that a Broker, a test or a benchmark finds a
 * node's logs and Warren's files without asking the node:
 *   etc/       rabbitmq.conf, advanced.config, enabled_plugins, rabbitmq-env.conf (empty)
 *   home/      HOME of the node and of rabbitmqctl, with its own .erlang.cookie (0400)
 *   mnesia/    RABBITMQ_MNESIA_BASE (the node's dir is mnesia/<nodeName>)
 *   log/       RABBITMQ_LOG_BASE; the node log is log/<nodeName>.log, the
 *              server script's own output log/<nodeName>-console.log
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { vhostLayout, vhostsDirOf } from '../sidecar/data-layout';

/** base36 of md5(vhost), upper case: RabbitMQ's per-vhost directory name. */
export function vhostDirName(vhost: string): string {
  const hex = crypto.createHash('md5').update(vhost, 'utf8').digest('hex');
  return BigInt('0x' + hex).toString(36).toUpperCase();
}

export class NodeLayout {
  /** Where the node keeps everything (absolute). */
  readonly dataDir: string;

  constructor(
    dataDir: string,
    readonly nodeName: string,
  ) {
    this.dataDir = path.resolve(dataDir);
  }

  get etcDir(): string {
    return path.join(this.dataDir, 'etc');
  }
  get homeDir(): string {
    return path.join(this.dataDir, 'home');
  }
  get logDir(): string {
    return path.join(this.dataDir, 'log');
  }
  /** The node's own log file (RABBITMQ_LOGS); Warren's and the sidecar's lines are in it. */
  get logFile(): string {
    return path.join(this.logDir, `${this.nodeName}.log`);
  }
  /**
   * The node log's error entries (an entry is a timestamped line and the
   * untimestamped lines after it), at most `maxLines` lines in all: what a
   * test run prints so that a failure on a machine whose data dir is gone can
   * still be explained.
   */
  errorEntries(maxLines = 200): string[] {
    let text: string;
    try {
      text = fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return [];
    }
    const out: string[] = [];
    let inError = false;
    for (const line of text.split('\n')) {
      if (/^\d{4}-\d\d-\d\d[ T]/.test(line)) inError = / \[error\] /.test(line);
      if (inError && line.length) out.push(line);
      if (out.length >= maxLines) break;
    }
    return out;
  }
  /** stdout/stderr of the server script (early boot failures land here). */
  get consoleLogFile(): string {
    return path.join(this.logDir, `${this.nodeName}-console.log`);
  }
  get mnesiaBase(): string {
    return path.join(this.dataDir, 'mnesia');
  }
  /** The node's data dir (RABBITMQ_MNESIA_DIR). */
  get nodeDir(): string {
    return path.join(this.mnesiaBase, this.nodeName);
  }
  get pidFile(): string {
    return path.join(this.dataDir, `${this.nodeName}.pid`);
  }
  /** rabbit_vhost:msg_store_dir_path(VHost): Warren keeps the vhost's files in <this>/warren. */
  msgStoreDir(vhost = '/'): string {
    return path.join(vhostsDirOf(this.nodeDir), vhostDirName(vhost));
  }
  /** Warren's directory for a vhost (segment files, index, queue journals). */
  warrenDir(vhost = '/'): string {
    return vhostLayout(this.msgStoreDir(vhost)).warren;
  }
}
