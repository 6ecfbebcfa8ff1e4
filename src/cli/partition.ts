/**
 * Cuts a cluster's node off from the others and heals it: an nftables table of
 * our own (root; Debian's nftables) drops every packet on the loopback
 * interface between the isolated node's address and the others', both ways.
 * Only those address pairs are touched: clients and rabbitmqctl, which come
 * from 127.0.0.1, still reach every node, as an operator's console would.
 */
import { spawnSync } from 'child_process';
import { BrokerError } from './broker-error';

export class LoopbackPartition {
  /** `table`: the nftables table's name, unique to this cluster (a letter, then letters, digits, _). */
  constructor(readonly table: string) {
    if (!/^[a-z][a-z0-9_]*$/.test(table)) throw new BrokerError(`nftables table name ${JSON.stringify(table)} is not valid`, 'ESTART');
  }

  /** Drops traffic between `isolated` and each of `others` (replacing any cut this table made before). */
  cut(isolated: string, others: readonly string[]): void {
    this.heal();
    const set = `{ ${others.join(', ')} }`;
    nft(
      ['-f', '-'],
      [
        `table inet ${this.table} {`,
        '  chain input {',
        '    type filter hook input priority 0; policy accept;',
        `    ip saddr ${isolated} ip daddr ${set} drop`,
        `    ip saddr ${set} ip daddr ${isolated} drop`,
        '  }',
        '}',
        '',
      ].join('\n'),
    );
  }

  /** Removes the table (no cut in place: nothing to do). */
  heal(): void {
    const listed = spawnSync('nft', ['list', 'table', 'inet', this.table], { encoding: 'utf8' });
    if (listed.status === 0) nft(['delete', 'table', 'inet', this.table]);
  }
}

function nft(args: string[], input?: string): void {
  const r = spawnSync('nft', args, { input, encoding: 'utf8' });
  if (r.error) throw new BrokerError(`nft ${args.join(' ')}: ${r.error.message} (is Debian's nftables installed? npm run setup installs it)`, 'ECTL');
  if (r.status !== 0) throw new BrokerError(`nft ${args.join(' ')} failed: ${r.stderr.trim()}`, 'ECTL');
}
