/**
 * The broker's log: one format per stream. Piped or redirected (a service, a container, a log
 * shipper) it writes pino's JSON lines and nothing else; on a terminal it writes readable lines
 * (time, level, message, then the fields as key=value). pino-pretty is not a dependency: its
 * transport runs in a worker thread and pulls a dozen packages for what fits in the formatter
 * below.
 */
import { pino, type Logger } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface LogOptions {
  readonly level: LogLevel;
  /** Fields on every line (the broker id). */
  readonly base?: Record<string, unknown>;
  /** Where the lines go; default stdout. */
  readonly stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Readable lines instead of JSON; default: whether `stream` is a terminal. */
  readonly pretty?: boolean;
}

/** A pino logger writing JSON lines, or readable ones on a terminal. */
export function createLogger(o: LogOptions): Logger {
  const out = o.stream ?? process.stdout;
  const pretty = o.pretty ?? out.isTTY === true;
  const opts = { level: o.level, base: o.base ?? null };
  if (!pretty) return o.stream === undefined ? pino(opts) : pino(opts, { write: (line: string) => void out.write(line) });
  return pino(opts, { write: (line: string) => void out.write(prettyLine(line)) });
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const HIDDEN = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/** One JSON line of pino as `HH:MM:SS.mmm LEVEL message key=value …` (a line that is not JSON passes as it is). */
export function prettyLine(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const time = typeof rec.time === 'number' ? new Date(rec.time).toISOString().slice(11, 23) : '';
  const level = (LEVELS[rec.level as number] ?? String(rec.level)).padEnd(5);
  const fields = Object.entries(rec)
    .filter(([k]) => !HIDDEN.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v)}`);
  return `${time} ${level} ${typeof rec.msg === 'string' ? rec.msg : ''}${fields.length ? `  ${fields.join(' ')}` : ''}\n`;
}
