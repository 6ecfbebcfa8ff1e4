/** The one logger shape every layer takes: the sidecar prefixes what it is told with the vhost or queue and writes it (src/sidecar/log.ts). */
export type LogLevel = 'info' | 'warn' | 'error';
export type Logger = (level: LogLevel, msg: string) => void;
