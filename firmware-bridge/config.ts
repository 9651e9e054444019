/**
 * The bridge's YAML config, shared by `qis bridge modbus` and `qis bridge sparkplug`: where the
 * outcomes go, the data directory, and per machine its source (a Modbus device, or a Sparkplug
 * edge node / device), its named readings, and the mapping from readings to a template's
 * situation, context and outcome with triggers. Every error is ERR_CONFIG_INVALID naming the
 * file, the key path and what was expected.
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { QisError, canon, loadTemplate, type Template, type TlsOptions } from '../src/index.js';
import { BYTE_ORDERS, MAX_READ, registerCount, type ByteOrder, type RegisterType, type Table } from './modbus.js';

export type Scalar = string | number | boolean;
/** A value in the mapping: a constant, or the current value of a named reading. */
export type ValueSpec = { readonly const: Scalar } | { readonly reading: string };

export type Trigger =
  | { readonly kind: 'change'; readonly reading: string; readonly from?: Scalar; readonly to?: Scalar }
  | {
      readonly kind: 'threshold';
      readonly reading: string;
      readonly above?: number;
      readonly below?: number;
      /** Re-armed only once the reading is back past the limit by this much (default 0). */
      readonly hysteresis: number;
      /** Fires only once the limit has been passed for this long, ms (default 0: at once). */
      readonly debounceMs: number;
    }
  | { readonly kind: 'every'; readonly everyMs: number };

export interface Rule {
  /** `machines[i].outcomes[j]`, for messages. */
  readonly key: string;
  readonly when: Trigger;
  readonly template: Template;
  readonly outcome: ValueSpec;
  readonly conf?: number;
  readonly n?: number;
}

export interface ModbusReading {
  readonly table: Table;
  /** The 0-based protocol address (register 40001 is holding address 0). */
  readonly address: number;
  readonly type: RegisterType;
  readonly byteOrder: ByteOrder;
  readonly scale: number;
  readonly offset: number;
  /** Registers read: the type's size, or a string's length. */
  readonly count: number;
  /** A bit within a holding or input register (0 = least significant): the reading is true/false. */
  readonly bit?: number;
}

export interface SparkplugReading {
  readonly metric: string;
  readonly scale: number;
  readonly offset: number;
}

export interface SerialLine {
  readonly path: string;
  readonly baudRate: number;
  readonly parity: 'none' | 'even' | 'odd';
  readonly dataBits: 7 | 8;
  readonly stopBits: 1 | 2;
}

export interface ModbusDevice {
  /** tcp: Modbus TCP; rtu-over-tcp: RTU frames through a serial gateway's TCP port; rtu: a serial line. */
  readonly protocol: 'tcp' | 'rtu-over-tcp' | 'rtu';
  /** Host and port (tcp, rtu-over-tcp; empty and 0 for rtu). */
  readonly host: string;
  readonly port: number;
  readonly serial?: SerialLine;
  readonly unitId: number;
  readonly pollMs: number;
  readonly timeoutMs: number;
  /** Block reads: neighbouring readings are read together across gaps of at most maxGap items, up to maxBlock items a request. */
  readonly maxGap: number;
  readonly maxBlock: number;
}

export interface Machine<R> {
  readonly name: string;
  readonly template: Template;
  readonly readings: ReadonlyMap<string, R>;
  readonly situation: ReadonlyMap<string, ValueSpec>;
  readonly context: ReadonlyMap<string, ValueSpec>;
  readonly rules: readonly Rule[];
}

export interface ModbusMachine extends Machine<ModbusReading> {
  readonly device: ModbusDevice;
}

export interface SparkplugMachine extends Machine<SparkplugReading> {
  readonly edgeNode: string;
  readonly device?: string;
}

export interface BrokerTarget {
  readonly url: string;
  readonly username?: string;
  readonly password?: string;
  /** PEM contents read from the config's ca, cert and key files, and rejectUnauthorized. */
  readonly tls?: TlsOptions;
}

/** The bridge's /healthz and /metrics listener (off unless configured). */
export interface HttpListen {
  readonly host: string;
  readonly port: number;
}

export interface ModbusBridgeConfig {
  readonly file: string;
  readonly broker: BrokerTarget;
  readonly dataDir: string;
  readonly reconnect: { readonly baseMs: number; readonly capMs: number };
  readonly http?: HttpListen;
  readonly machines: readonly ModbusMachine[];
}

export interface SparkplugBridgeConfig {
  readonly file: string;
  readonly broker: BrokerTarget;
  readonly dataDir: string;
  readonly sparkplug: { readonly url: string; readonly group: string; readonly hostId?: string; readonly clientId?: string; readonly username?: string; readonly password?: string; readonly tls?: TlsOptions; readonly rebirthIntervalMs: number };
  readonly http?: HttpListen;
  readonly machines: readonly SparkplugMachine[];
}

type Obj = Record<string, unknown>;

/** Error helper bound to one file. */
class Check {
  constructor(readonly file: string) {}
  fail(key: string, expected: string, got?: unknown): never {
    const shown = got === undefined ? 'nothing' : JSON.stringify(got);
    throw new QisError('ERR_CONFIG_INVALID', `${this.file}: ${key}: expected ${expected}, got ${shown}`);
  }
  obj(v: unknown, key: string, allowed: readonly string[]): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(key, 'a mapping', v);
    for (const k of Object.keys(v)) if (!allowed.includes(k)) this.fail(`${key}.${k}`, `one of the keys ${allowed.join(', ')} (unknown key)`, (v as Obj)[k]);
    return v as Obj;
  }
  str(v: unknown, key: string, pattern?: RegExp, what = 'a non-empty string'): string {
    if (typeof v !== 'string' || v === '' || (pattern && !pattern.test(v))) this.fail(key, what, v);
    return v;
  }
  num(v: unknown, key: string, o: { min?: number; max?: number; int?: boolean; def?: number } = {}): number {
    if (v === undefined && o.def !== undefined) return o.def;
    const what = `${o.int ? 'an integer' : 'a number'}${o.min !== undefined ? ` ≥ ${o.min}` : ''}${o.max !== undefined ? ` ≤ ${o.max}` : ''}`;
    if (typeof v !== 'number' || !Number.isFinite(v) || (o.int && !Number.isInteger(v)) || (o.min !== undefined && v < o.min) || (o.max !== undefined && v > o.max)) this.fail(key, what, v);
    return v;
  }
  oneOf<T extends string>(v: unknown, key: string, values: readonly T[], def?: T): T {
    if (v === undefined && def !== undefined) return def;
    if (typeof v !== 'string' || !values.includes(v as T)) this.fail(key, `one of ${values.join(', ')}`, v);
    return v as T;
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/;

/** `500ms`, `30s`, `10m`, `2h`, or a number of seconds, in ms. */
function duration(c: Check, v: unknown, key: string): number {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v * 1000;
  const m = typeof v === 'string' ? DURATION.exec(v.trim()) : null;
  if (!m) c.fail(key, 'a duration such as 30s, 10m or 2h (or a number of seconds)', v);
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  if (!(ms >= 100)) c.fail(key, 'a duration of at least 100ms', v);
  return ms;
}

function scalar(c: Check, v: unknown, key: string): Scalar {
  if (typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))) return v;
  return c.fail(key, 'a string, number or boolean', v);
}

function valueSpec(c: Check, v: unknown, key: string, readings: ReadonlyMap<string, unknown>): ValueSpec {
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const o = c.obj(v, key, ['reading']);
    const r = c.str(o['reading'], `${key}.reading`);
    if (!readings.has(r)) c.fail(`${key}.reading`, `the name of a reading of this machine (${[...readings.keys()].join(', ') || 'none declared'})`, r);
    return { reading: r };
  }
  return { const: scalar(c, v, key) };
}

async function readConfig(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new QisError('ERR_CONFIG_INVALID', `${file}: cannot read the config: ${(e as Error).message}`, { cause: e });
  }
}

/** Parses YAML (or JSON) config text into a mapping; ERR_CONFIG_INVALID otherwise. */
export function parseConfigText(text: string, file: string): Obj {
  let doc: unknown;
  try {
    doc = parseYaml(text, { uniqueKeys: true, prettyErrors: true });
  } catch (e) {
    throw new QisError('ERR_CONFIG_INVALID', `${file}: not valid YAML: ${(e as Error).message}`, { cause: e });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new QisError('ERR_CONFIG_INVALID', `${file}: (top level): expected a mapping, got ${JSON.stringify(doc ?? null)}`);
  return doc as Obj;
}

/** Loads each template once; a template that does not load is a config error at the key naming it. */
class Templates {
  private cache = new Map<string, Promise<Template>>();
  constructor(private readonly c: Check, private readonly base: string) {}
  async get(v: unknown, key: string): Promise<Template> {
    const rel = this.c.str(v, key, undefined, 'the path of a template file (YAML or JSON)');
    const path = resolve(this.base, rel);
    let p = this.cache.get(path);
    if (!p) this.cache.set(path, (p = loadTemplate(path)));
    try {
      return await p;
    } catch (e) {
      return this.c.fail(key, `a loadable template (${(e as Error).message})`, rel);
    }
  }
}

async function password(c: Check, base: string, o: Obj, key: string): Promise<string | undefined> {
  if (o['passwordFile'] === undefined) return undefined;
  const f = resolve(base, c.str(o['passwordFile'], `${key}.passwordFile`));
  try {
    return (await readFile(f, 'utf8')).replace(/\r?\n$/, '');
  } catch (e) {
    return c.fail(`${key}.passwordFile`, `a readable file (${(e as Error).message})`, o['passwordFile']);
  }
}

const TLS_KEYS = ['ca', 'cert', 'key', 'rejectUnauthorized'] as const;

/** `ca`, `cert`, `key` (PEM files, relative to the config) and `rejectUnauthorized` of a broker mapping. */
async function tlsOptions(c: Check, base: string, o: Obj, key: string): Promise<TlsOptions | undefined> {
  const out: { -readonly [K in keyof TlsOptions]: TlsOptions[K] } = {};
  for (const k of ['ca', 'cert', 'key'] as const) {
    if (o[k] === undefined) continue;
    const f = resolve(base, c.str(o[k], `${key}.${k}`, undefined, 'the path of a PEM file'));
    try {
      out[k] = await readFile(f, 'utf8');
    } catch (e) {
      c.fail(`${key}.${k}`, `a readable PEM file (${(e as Error).message})`, o[k]);
    }
  }
  if ((o['cert'] === undefined) !== (o['key'] === undefined)) c.fail(`${key}.${o['cert'] === undefined ? 'cert' : 'key'}`, 'cert and key together (a client certificate for mTLS)');
  if (o['rejectUnauthorized'] !== undefined) {
    if (typeof o['rejectUnauthorized'] !== 'boolean') c.fail(`${key}.rejectUnauthorized`, 'true or false (false accepts any broker certificate: for tests only)', o['rejectUnauthorized']);
    out.rejectUnauthorized = o['rejectUnauthorized'];
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

/** `http: { host, port }`: the /healthz and /metrics listener; host defaults to 127.0.0.1. */
function httpListen(c: Check, v: unknown): HttpListen | undefined {
  if (v === undefined) return undefined;
  const o = c.obj(v, 'http', ['host', 'port']);
  return { host: o['host'] === undefined ? '127.0.0.1' : c.str(o['host'], 'http.host', undefined, 'a host name or IP address to listen on'), port: c.num(o['port'], 'http.port', { min: 0, max: 65535, int: true }) };
}

async function brokerTarget(c: Check, base: string, v: unknown): Promise<BrokerTarget> {
  if (typeof v === 'string') return { url: c.str(v, 'broker', /^(mqtts?|wss?):\/\/./, 'an mqtt://, mqtts://, ws:// or wss:// URL') };
  const o = c.obj(v, 'broker', ['url', 'username', 'passwordFile', ...TLS_KEYS]);
  const url = c.str(o['url'], 'broker.url', /^(mqtts?|wss?):\/\/./, 'an mqtt://, mqtts://, ws:// or wss:// URL');
  const pw = await password(c, base, o, 'broker');
  const tls = await tlsOptions(c, base, o, 'broker');
  return { url, ...(o['username'] === undefined ? {} : { username: c.str(o['username'], 'broker.username') }), ...(pw === undefined ? {} : { password: pw }), ...(tls === undefined ? {} : { tls }) };
}

type Common<R> = Omit<Machine<R>, 'readings'> & { readings: ReadonlyMap<string, R> };

/** The parts of a machine both bridges share: name, template, situation, context, outcome rules. */
async function machineCommon<R>(c: Check, tpl: Templates, m: Obj, key: string, readings: ReadonlyMap<string, R>): Promise<Common<R>> {
  const name = c.str(m['name'], `${key}.name`, NAME, 'a name of letters, digits, "_", "." or "-" (at most 64; it names the data directory)');
  const template = await tpl.get(m['template'], `${key}.template`);
  const sit = c.obj(m['situation'] ?? {}, `${key}.situation`, template.fields.map((f) => f.name));
  const situation = new Map<string, ValueSpec>();
  for (const f of template.fields) {
    const k = `${key}.situation.${f.name}`;
    if (sit[f.name] === undefined) c.fail(k, `a value for the template's field "${f.name}" (a constant or { reading: NAME })`);
    const spec = valueSpec(c, sit[f.name], k, readings);
    if ('const' in spec) {
      try {
        canon(f, spec.const);
      } catch (e) {
        c.fail(k, `a value that fits the field (${(e as Error).message})`, spec.const);
      }
    }
    situation.set(f.name, spec);
  }
  const allowedCtx = template.doc.context ?? [];
  const ctxObj = c.obj(m['context'] ?? {}, `${key}.context`, allowedCtx);
  const context = new Map<string, ValueSpec>();
  for (const [k, v] of Object.entries(ctxObj)) {
    const spec = valueSpec(c, v, `${key}.context.${k}`, readings);
    if ('const' in spec && typeof spec.const !== 'number') c.fail(`${key}.context.${k}`, 'a number or { reading: NAME } (context values are numbers)', spec.const);
    context.set(k, spec);
  }
  const list = m['outcomes'];
  if (!Array.isArray(list) || list.length === 0) c.fail(`${key}.outcomes`, 'a non-empty list of outcome rules ({ when, outcome, … })', list);
  const rules: Rule[] = [];
  for (const [j, r] of list.entries()) {
    const rk = `${key}.outcomes[${j}]`;
    const o = c.obj(r, rk, ['when', 'outcome', 'template', 'conf', 'n']);
    const w = c.obj(o['when'], `${rk}.when`, ['change', 'from', 'to', 'threshold', 'above', 'below', 'hysteresis', 'debounce', 'every']);
    let when: Trigger;
    const reading = (v: unknown, k: string): string => {
      const s = c.str(v, k);
      if (!readings.has(s)) c.fail(k, `the name of a reading of this machine (${[...readings.keys()].join(', ') || 'none declared'})`, s);
      return s;
    };
    if (w['change'] !== undefined) {
      if (w['threshold'] !== undefined || w['every'] !== undefined || w['above'] !== undefined || w['below'] !== undefined || w['hysteresis'] !== undefined || w['debounce'] !== undefined) c.fail(`${rk}.when`, 'exactly one trigger: change (with from/to), threshold (with above/below) or every', w);
      when = {
        kind: 'change',
        reading: reading(w['change'], `${rk}.when.change`),
        ...(w['from'] === undefined ? {} : { from: scalar(c, w['from'], `${rk}.when.from`) }),
        ...(w['to'] === undefined ? {} : { to: scalar(c, w['to'], `${rk}.when.to`) }),
      };
    } else if (w['threshold'] !== undefined) {
      if (w['every'] !== undefined || w['from'] !== undefined || w['to'] !== undefined) c.fail(`${rk}.when`, 'exactly one trigger: change (with from/to), threshold (with above/below) or every', w);
      if ((w['above'] === undefined) === (w['below'] === undefined)) c.fail(`${rk}.when`, 'a threshold with exactly one of above or below', w);
      when = {
        kind: 'threshold',
        reading: reading(w['threshold'], `${rk}.when.threshold`),
        ...(w['above'] === undefined ? {} : { above: c.num(w['above'], `${rk}.when.above`) }),
        ...(w['below'] === undefined ? {} : { below: c.num(w['below'], `${rk}.when.below`) }),
        hysteresis: c.num(w['hysteresis'], `${rk}.when.hysteresis`, { min: 0, def: 0 }),
        debounceMs: w['debounce'] === undefined || w['debounce'] === 0 ? 0 : duration(c, w['debounce'], `${rk}.when.debounce`),
      };
    } else if (w['every'] !== undefined) {
      if (Object.keys(w).length !== 1) c.fail(`${rk}.when`, 'exactly one trigger: change (with from/to), threshold (with above/below) or every', w);
      when = { kind: 'every', everyMs: duration(c, w['every'], `${rk}.when.every`) };
    } else {
      c.fail(`${rk}.when`, 'a trigger: { change: READING, from?, to? }, { threshold: READING, above | below: N } or { every: 10m }', w);
    }
    const rt = o['template'] === undefined ? template : await tpl.get(o['template'], `${rk}.template`);
    if (rt !== template) {
      for (const f of rt.fields) if (!situation.has(f.name)) c.fail(`${rk}.template`, `a template whose fields the machine's situation gives (it lacks "${f.name}")`, o['template']);
    }
    if (o['outcome'] === undefined) c.fail(`${rk}.outcome`, 'an outcome: a label, a number, or { reading: NAME }');
    const outcome = valueSpec(c, o['outcome'], `${rk}.outcome`, readings);
    if ('const' in outcome) {
      const oc = rt.doc.outcome;
      if (oc.kind === 'category' && !(typeof outcome.const === 'string' && (oc.labels as readonly string[]).includes(outcome.const))) c.fail(`${rk}.outcome`, `one of the template's labels (${oc.labels.join(', ')})`, outcome.const);
      if (oc.kind === 'number' && typeof outcome.const !== 'number') c.fail(`${rk}.outcome`, 'a number (the template has a numeric outcome)', outcome.const);
    }
    rules.push({
      key: rk,
      when,
      template: rt,
      outcome,
      ...(o['conf'] === undefined ? {} : { conf: c.num(o['conf'], `${rk}.conf`, { min: 0, max: 1 }) }),
      ...(o['n'] === undefined ? {} : { n: c.num(o['n'], `${rk}.n`, { min: 1, int: true }) }),
    });
  }
  return { name, template, situation, context, rules, readings };
}

function machineList(c: Check, v: unknown): Obj[] {
  if (!Array.isArray(v) || v.length === 0) c.fail('machines', 'a non-empty list of machines');
  return v as Obj[];
}

function uniqueNames(c: Check, machines: readonly { name: string }[]): void {
  const seen = new Set<string>();
  for (const [i, m] of machines.entries()) {
    if (seen.has(m.name)) c.fail(`machines[${i}].name`, 'a name no other machine has (each machine is its own node)', m.name);
    seen.add(m.name);
  }
}

const TABLE_OF_PREFIX: Readonly<Record<string, Table>> = { '0': 'coil', '1': 'discrete', '3': 'input', '4': 'holding' };

/**
 * A reading's table and 0-based protocol address: `address: 12` with a `table`, or the
 * traditional 1-based register notation as a string (`"40013"`, `"400013"`: holding 12;
 * `"30001"`: input 0; `"00001"`: coil 0; `"10001"`: discrete 0), whose first digit names the table.
 */
function tableAndAddress(c: Check, r: Obj, rk: string): { table: Table; address: number } {
  const tables = ['holding', 'input', 'coil', 'discrete'] as const;
  const a = r['address'];
  if (typeof a === 'string') {
    const m = /^([0134])(\d{4,5})$/.exec(a.trim());
    const n = m ? Number(m[2]) : 0;
    if (!m || n < 1 || n > 65536) c.fail(`${rk}.address`, 'a 0-based protocol address, or register notation such as "40001" or "300010" (first digit 0 coil, 1 discrete, 3 input, 4 holding)', a);
    const table = TABLE_OF_PREFIX[m[1]!]!;
    if (r['table'] !== undefined && r['table'] !== table) c.fail(`${rk}.table`, `${table} (the address "${a}" names that table) or no table`, r['table']);
    return { table, address: n - 1 };
  }
  return { table: c.oneOf(r['table'], `${rk}.table`, tables), address: c.num(a, `${rk}.address`, { min: 0, max: 65535, int: true }) };
}

function modbusReading(c: Check, spec: unknown, rk: string): ModbusReading {
  const r = c.obj(spec, rk, ['table', 'address', 'type', 'byteOrder', 'wordOrder', 'scale', 'offset', 'bit', 'length']);
  const { table, address } = tableAndAddress(c, r, rk);
  const bits = table === 'coil' || table === 'discrete';
  if (bits) {
    for (const k of ['type', 'byteOrder', 'wordOrder', 'scale', 'offset', 'bit', 'length']) if (r[k] !== undefined) c.fail(`${rk}.${k}`, `nothing: a ${table} reads as true/false (no type, byteOrder, scale, offset, bit or length)`, r[k]);
    return { table, address, type: 'uint16', byteOrder: 'ABCD', scale: 1, offset: 0, count: 1 };
  }
  const type = c.oneOf(r['type'], `${rk}.type`, ['int16', 'uint16', 'int32', 'uint32', 'float32', 'int64', 'uint64', 'float64', 'string'] as const, 'uint16');
  if (r['byteOrder'] !== undefined && r['wordOrder'] !== undefined) c.fail(rk, 'byteOrder or wordOrder, not both', r);
  const byteOrder: ByteOrder = r['wordOrder'] !== undefined ? (c.oneOf(r['wordOrder'], `${rk}.wordOrder`, ['big', 'little'] as const) === 'big' ? 'ABCD' : 'CDAB') : c.oneOf(r['byteOrder'], `${rk}.byteOrder`, BYTE_ORDERS, 'ABCD');
  if (r['bit'] !== undefined && type !== 'uint16' && type !== 'int16') c.fail(`${rk}.bit`, 'a bit only on a 16-bit register (type uint16 or no type)', r['bit']);
  if (r['length'] !== undefined && type !== 'string') c.fail(`${rk}.length`, 'a length only with type string', r['length']);
  const count = type === 'string' ? c.num(r['length'], `${rk}.length`, { min: 1, max: MAX_READ[table], int: true }) : registerCount(type);
  if (address + count > 65536) c.fail(`${rk}.address`, `an address whose ${count} registers end by 65535`, r['address']);
  const bit = r['bit'] === undefined ? undefined : c.num(r['bit'], `${rk}.bit`, { min: 0, max: 15, int: true });
  if ((type === 'string' || bit !== undefined) && (r['scale'] !== undefined || r['offset'] !== undefined)) c.fail(rk, `no scale or offset on a ${type === 'string' ? 'string' : 'bit'}`, r);
  return { table, address, type, byteOrder, scale: c.num(r['scale'], `${rk}.scale`, { def: 1 }), offset: c.num(r['offset'], `${rk}.offset`, { def: 0 }), count, ...(bit === undefined ? {} : { bit }) };
}

const MACHINE_KEYS = ['name', 'template', 'readings', 'situation', 'context', 'outcomes'];

/** Parses a `qis bridge modbus` config (already read as text). */
export async function parseModbusConfig(text: string, file: string): Promise<ModbusBridgeConfig> {
  const c = new Check(file);
  const base = dirname(resolve(file));
  const top = c.obj(parseConfigText(text, file), '(top level)', ['broker', 'dataDir', 'reconnect', 'http', 'machines']);
  const broker = await brokerTarget(c, base, top['broker']);
  const dataDir = resolve(base, c.str(top['dataDir'], 'dataDir', undefined, 'a directory path (one key and outbox per machine below it)'));
  const rc = c.obj(top['reconnect'] ?? {}, 'reconnect', ['baseMs', 'capMs']);
  const baseMs = c.num(rc['baseMs'], 'reconnect.baseMs', { min: 1, def: 500 });
  const reconnect = { baseMs, capMs: c.num(rc['capMs'], 'reconnect.capMs', { min: baseMs, def: 30_000 }) };
  const http = httpListen(c, top['http']);
  const tpl = new Templates(c, base);
  const machines: ModbusMachine[] = [];
  for (const [i, raw] of machineList(c, top['machines']).entries()) {
    const key = `machines[${i}]`;
    const m = c.obj(raw, key, [...MACHINE_KEYS, 'device']);
    const d = c.obj(m['device'], `${key}.device`, ['protocol', 'host', 'port', 'serial', 'unitId', 'pollMs', 'timeoutMs', 'maxGap', 'maxBlock']);
    const protocol = c.oneOf(d['protocol'], `${key}.device.protocol`, ['tcp', 'rtu-over-tcp', 'rtu'] as const, d['serial'] === undefined ? 'tcp' : 'rtu');
    let serial: SerialLine | undefined;
    if (protocol === 'rtu') {
      if (d['host'] !== undefined || d['port'] !== undefined) c.fail(`${key}.device`, 'serial for protocol rtu, not host or port', d);
      const sl = c.obj(d['serial'], `${key}.device.serial`, ['path', 'baudRate', 'parity', 'dataBits', 'stopBits']);
      serial = {
        path: c.str(sl['path'], `${key}.device.serial.path`, undefined, 'a serial device path such as /dev/ttyUSB0'),
        baudRate: c.num(sl['baudRate'], `${key}.device.serial.baudRate`, { min: 50, max: 4_000_000, int: true, def: 9600 }),
        parity: c.oneOf(sl['parity'], `${key}.device.serial.parity`, ['none', 'even', 'odd'] as const, 'none'),
        dataBits: c.oneOf(String(sl['dataBits'] ?? 8), `${key}.device.serial.dataBits`, ['7', '8'] as const) === '7' ? 7 : 8,
        stopBits: c.oneOf(String(sl['stopBits'] ?? 1), `${key}.device.serial.stopBits`, ['1', '2'] as const) === '2' ? 2 : 1,
      };
    } else if (d['serial'] !== undefined) c.fail(`${key}.device.serial`, `nothing for protocol ${protocol} (a serial line is protocol rtu)`, d['serial']);
    const device: ModbusDevice = {
      protocol,
      host: protocol === 'rtu' ? '' : c.str(d['host'], `${key}.device.host`, undefined, 'a host name or IP address'),
      port: protocol === 'rtu' ? 0 : c.num(d['port'], `${key}.device.port`, { min: 1, max: 65535, int: true, def: 502 }),
      ...(serial ? { serial } : {}),
      unitId: c.num(d['unitId'], `${key}.device.unitId`, { min: 0, max: 255, int: true, def: 1 }),
      pollMs: c.num(d['pollMs'], `${key}.device.pollMs`, { min: 50, def: 1000 }),
      timeoutMs: c.num(d['timeoutMs'], `${key}.device.timeoutMs`, { min: 10, def: 1000 }),
      maxGap: c.num(d['maxGap'], `${key}.device.maxGap`, { min: 0, max: 100, int: true, def: 10 }),
      maxBlock: c.num(d['maxBlock'], `${key}.device.maxBlock`, { min: 1, max: 2000, int: true, def: 100 }),
    };
    const rs = c.obj(m['readings'], `${key}.readings`, Object.keys((m['readings'] as Obj | undefined) ?? {}));
    const readings = new Map<string, ModbusReading>();
    for (const [name, spec] of Object.entries(rs)) readings.set(name, modbusReading(c, spec, `${key}.readings.${name}`));
    const common = await machineCommon(c, tpl, m, key, readings);
    machines.push({ ...common, device });
  }
  uniqueNames(c, machines);
  return { file, broker, dataDir, reconnect, ...(http ? { http } : {}), machines };
}

/** Parses a `qis bridge sparkplug` config (already read as text). */
export async function parseSparkplugConfig(text: string, file: string): Promise<SparkplugBridgeConfig> {
  const c = new Check(file);
  const base = dirname(resolve(file));
  const top = c.obj(parseConfigText(text, file), '(top level)', ['broker', 'dataDir', 'sparkplug', 'http', 'machines']);
  const broker = await brokerTarget(c, base, top['broker']);
  const dataDir = resolve(base, c.str(top['dataDir'], 'dataDir', undefined, 'a directory path (one key and outbox per machine below it)'));
  const s = c.obj(top['sparkplug'], 'sparkplug', ['url', 'group', 'hostId', 'clientId', 'username', 'passwordFile', ...TLS_KEYS, 'rebirthIntervalMs']);
  const TOKEN = /^[^/+#]+$/;
  const pw = await password(c, base, s, 'sparkplug');
  const spTls = await tlsOptions(c, base, s, 'sparkplug');
  const sparkplug = {
    url: c.str(s['url'], 'sparkplug.url', /^(mqtts?|wss?):\/\/./, "the factory broker's mqtt://, mqtts://, ws:// or wss:// URL"),
    group: c.str(s['group'], 'sparkplug.group', TOKEN, 'a Sparkplug group id (no "/", "+" or "#")'),
    rebirthIntervalMs: c.num(s['rebirthIntervalMs'], 'sparkplug.rebirthIntervalMs', { min: 0, def: 5000 }),
    ...(s['hostId'] === undefined ? {} : { hostId: c.str(s['hostId'], 'sparkplug.hostId', TOKEN, 'a Sparkplug host id (no "/", "+" or "#")') }),
    ...(s['clientId'] === undefined ? {} : { clientId: c.str(s['clientId'], 'sparkplug.clientId') }),
    ...(s['username'] === undefined ? {} : { username: c.str(s['username'], 'sparkplug.username') }),
    ...(pw === undefined ? {} : { password: pw }),
    ...(spTls === undefined ? {} : { tls: spTls }),
  };
  const http = httpListen(c, top['http']);
  const tpl = new Templates(c, base);
  const machines: SparkplugMachine[] = [];
  for (const [i, raw] of machineList(c, top['machines']).entries()) {
    const key = `machines[${i}]`;
    const m = c.obj(raw, key, [...MACHINE_KEYS, 'source']);
    const src = c.obj(m['source'], `${key}.source`, ['edgeNode', 'device']);
    const edgeNode = c.str(src['edgeNode'], `${key}.source.edgeNode`, TOKEN, 'a Sparkplug edge node id (no "/", "+" or "#")');
    const device = src['device'] === undefined ? undefined : c.str(src['device'], `${key}.source.device`, TOKEN, 'a Sparkplug device id (no "/", "+" or "#")');
    const rs = c.obj(m['readings'], `${key}.readings`, Object.keys((m['readings'] as Obj | undefined) ?? {}));
    const readings = new Map<string, SparkplugReading>();
    for (const [name, spec] of Object.entries(rs)) {
      const rk = `${key}.readings.${name}`;
      if (typeof spec === 'string') {
        readings.set(name, { metric: c.str(spec, rk), scale: 1, offset: 0 });
        continue;
      }
      const r = c.obj(spec, rk, ['metric', 'scale', 'offset']);
      readings.set(name, { metric: c.str(r['metric'], `${rk}.metric`, undefined, 'a metric name as in the NBIRTH/DBIRTH'), scale: c.num(r['scale'], `${rk}.scale`, { def: 1 }), offset: c.num(r['offset'], `${rk}.offset`, { def: 0 }) });
    }
    const common = await machineCommon(c, tpl, m, key, readings);
    machines.push({ ...common, edgeNode, ...(device === undefined ? {} : { device }) });
  }
  uniqueNames(c, machines);
  return { file, broker, dataDir, sparkplug, ...(http ? { http } : {}), machines };
}

export async function loadModbusConfig(file: string): Promise<ModbusBridgeConfig> {
  return parseModbusConfig(await readConfig(file), file);
}

export async function loadSparkplugConfig(file: string): Promise<SparkplugBridgeConfig> {
  return parseSparkplugConfig(await readConfig(file), file);
}
