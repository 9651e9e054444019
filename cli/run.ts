/**
 * The small framework under `qis`: flag parsing, `--help`, `--json`, and one way to report
 * errors (a stable code, a non-zero exit status).
 */
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { QisError, isQisError, type Outcome } from '../src/index.js';

/** Parsed flags: a string, true, or for `multiple` flags every value given. */
export type Flags = Record<string, string | boolean | string[] | undefined>;

/** A string flag's value (the command declared it a single string flag). */
export const str = (v: Flags[string]): string => (Array.isArray(v) ? (v[v.length - 1] ?? '') : (v as string));

export type FlagSpec = { type: 'string' | 'boolean'; short?: string; value?: string; help: string; required?: boolean; /** may be given several times (an array of values) */ multiple?: boolean };

export interface Command {
  /** Words after `qis`, e.g. ['packet', 'sign']. */
  readonly path: readonly string[];
  readonly summary: string;
  /** Text after the flag list: examples, notes. */
  readonly details?: string;
  readonly flags: Readonly<Record<string, FlagSpec>>;
  /** Positional arguments (`qis template show ID`), in order; each lands in flags under its name. */
  readonly positionals?: readonly { readonly name: string; readonly help: string }[];
  /** Returns the JSON result; `human` renders it for a person. */
  run(flags: Flags, io: Io): Promise<CommandResult>;
}

export interface CommandResult {
  readonly json: unknown;
  readonly human: string;
  /** Exit status; 0 unless the command itself reports a refusal (e.g. a packet that fails to verify). */
  readonly status?: number;
  /** The command already wrote its output (a stream such as `qis watch`): print nothing more. */
  readonly quiet?: boolean;
}

export interface Io {
  readonly stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/**
 * Aborted when stdout's reader went away (`qis watch | head -1`): long-running commands stop as
 * on Ctrl-C, and print nothing more.
 */
export const stdoutGone = new AbortController();

export const EXIT_OK = 0;
export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;

const COMMON: Record<string, FlagSpec> = {
  json: { type: 'boolean', help: 'machine-readable output on stdout (errors too: {"ok":false,"code":…})' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

export function usage(message: string): QisError {
  return new QisError('ERR_CLI_USAGE', message);
}

export function helpText(cmd: Command): string {
  const flags = { ...cmd.flags, ...COMMON };
  const rows = Object.entries(flags).map(([name, f]) => {
    const left = `  ${f.short ? `-${f.short}, ` : ''}--${name}${f.type === 'string' ? ` ${f.value ?? 'VALUE'}` : ''}`;
    return `${left.padEnd(30)} ${f.help}${f.required ? ' (required)' : ''}`;
  });
  const pos = (cmd.positionals ?? []).map((p) => `  ${p.name.toUpperCase().padEnd(28)} ${p.help} (required)`);
  return [`qis ${cmd.path.join(' ')}${(cmd.positionals ?? []).map((p) => ` ${p.name.toUpperCase()}`).join('')}: ${cmd.summary}`, '', ...(pos.length > 0 ? ['Arguments:', ...pos, ''] : []), 'Options:', ...rows, ...(cmd.details ? ['', cmd.details] : []), ''].join('\n');
}

/** Parses argv for a command; unknown flags, positionals and missing required flags are ERR_CLI_USAGE. */
export function parseFlags(cmd: Command, argv: string[]): Flags {
  const spec = { ...cmd.flags, ...COMMON };
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, f] of Object.entries(spec)) options[name] = { type: f.type, ...(f.short ? { short: f.short } : {}), ...(f.multiple ? { multiple: true } : {}) };
  let values: Flags;
  let positionals: string[];
  const wanted = cmd.positionals ?? [];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: wanted.length > 0 }) as {
      values: Flags;
      positionals: string[];
    });
  } catch (e) {
    throw usage(`${(e as Error).message.replace(/\. To specify a positional.*$/s, '')} (see: qis ${cmd.path.join(' ')} --help)`);
  }
  if (values.help) return values;
  if (positionals.length > wanted.length) throw usage(`unexpected argument "${positionals[wanted.length]}" (see: qis ${cmd.path.join(' ')} --help)`);
  for (const [i, p] of wanted.entries()) {
    const v = positionals[i];
    if (v === undefined) throw usage(`${p.name.toUpperCase()} is required (see: qis ${cmd.path.join(' ')} --help)`);
    values[p.name] = v;
  }
  for (const [name, f] of Object.entries(cmd.flags)) {
    if (f.required && values[name] === undefined) throw usage(`--${name} is required (see: qis ${cmd.path.join(' ')} --help)`);
  }
  return values;
}

/** A JSON flag value: inline JSON, or `@path` to read it from a file. */
export async function jsonFlag(name: string, value: string): Promise<unknown> {
  let text = value;
  if (value.startsWith('@')) {
    try {
      text = await readFile(value.slice(1), 'utf8');
    } catch (e) {
      throw new QisError('ERR_FILE_IO', `--${name} ${value}: ${(e as Error).message}`, { cause: e });
    }
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new QisError('ERR_INVALID_JSON', `--${name} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
}

/** A JSON object flag (a situation, a context map). */
export async function objectFlag(name: string, value: string): Promise<Record<string, unknown>> {
  const v = await jsonFlag(name, value);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw usage(`--${name} must be a JSON object, e.g. '{"field": "value"}'`);
  return v as Record<string, unknown>;
}

/** An outcome flag: a bare label, JSON (a number, a map), or `@path` to a JSON file. */
export async function outcomeFlag(value: string): Promise<Outcome> {
  if (value.startsWith('@')) return (await jsonFlag('outcome', value)) as Outcome;
  try {
    return JSON.parse(value) as Outcome;
  } catch {
    return value;
  }
}

/** A numeric flag; `integer` demands a safe non-negative integer. */
export function numberFlag(name: string, value: string, integer: boolean): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || (integer && (!Number.isSafeInteger(n) || n < 0))) {
    throw usage(`--${name} must be ${integer ? 'a non-negative integer' : 'a number'}, not "${value}"`);
  }
  return n;
}

/** Reads raw bytes from stdin (at most `limit`). */
export async function readStdin(io: Io, limit = 1 << 20): Promise<Uint8Array> {
  if (io.stdin.isTTY) throw usage('expected raw packet bytes on stdin (e.g. mosquitto_sub -C 1 -N -t TOPIC | qis …) or --hex');
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of io.stdin as AsyncIterable<Buffer | string>) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    n += b.length;
    if (n > limit) throw usage(`stdin holds more than ${limit} bytes; a packet is at most 512`);
    chunks.push(b);
  }
  if (n === 0) throw usage('stdin is empty: pipe a raw packet (e.g. mosquitto_sub -C 1 -N -t TOPIC | qis …) or give --hex');
  return new Uint8Array(Buffer.concat(chunks));
}

function writeJson(stream: NodeJS.WritableStream, value: unknown): void {
  stream.write(
    JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v)) + '\n',
  );
}

/** Runs one command with its argv; returns the exit status. Never throws. */
export async function runCommand(cmd: Command, argv: string[], io: Io): Promise<number> {
  const json = argv.includes('--json');
  try {
    const flags = parseFlags(cmd, argv);
    if (flags.help) {
      io.stdout.write(helpText(cmd));
      return EXIT_OK;
    }
    const result = await cmd.run(flags, io);
    if (result.quiet) return result.status ?? EXIT_OK;
    if (json) writeJson(io.stdout, result.json);
    else io.stdout.write(result.human.endsWith('\n') ? result.human : result.human + '\n');
    return result.status ?? EXIT_OK;
  } catch (e) {
    return reportError(e, json, io);
  }
}

export function reportError(e: unknown, json: boolean, io: Io): number {
  const err = isQisError(e) ? e : new QisError('ERR_INTERNAL', (e as Error)?.message ?? String(e), { cause: e });
  if (!isQisError(e)) io.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
  if (json) writeJson(io.stdout, { ok: false, code: err.code, message: err.message });
  else io.stderr.write(`qis: ${err.code}: ${err.message}\n`);
  return err.code === 'ERR_CLI_USAGE' ? EXIT_USAGE : EXIT_REFUSED;
}
