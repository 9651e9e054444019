/**
 * The broker's configuration: a YAML (or JSON) file and/or flags, merged over
 * {@link BROKER_DEFAULTS} once and validated once, here at the boundary (ARCHITECTURE, house
 * style 3 and 5). Every refusal is `ERR_CONFIG_INVALID` and names the file or flag, the key
 * path and what was expected.
 */
import { isIP } from 'node:net';
import { accessSync, constants as fsConstants } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { QisError, isNodeId, isTplId, parseOperatorRef } from '../src/index.js';
import { BROKER_DEFAULTS, type BrokerConfig, type BrokerOptions } from './options.js';

// ---------------------------------------------------------------------------------------------
// Where a config layer came from, so that messages name the file or the flag.

type Origin =
  | { readonly kind: 'file'; readonly source: string }
  /** Key path prefix (`listeners[1]`, `admission.maxSkewMs`) → the flag that set it. */
  | { readonly kind: 'flags'; readonly flags: ReadonlyMap<string, string> };

// Kept beside the objects rather than on them, so that a config stays a plain BrokerConfig.
const origins = new WeakMap<object, Origin>();

class Ctx {
  constructor(
    readonly origin: Origin | undefined,
    /** Used when the origin is unknown (a config built in code). */
    readonly label: string,
  ) {}

  /** `x.yaml: listeners[1].port`, or `--listen tcp://h:88x (listeners[0].port)`. */
  where(path: string): string {
    const o = this.origin;
    if (o?.kind === 'flags') {
      let best = '';
      for (const p of o.flags.keys()) {
        const covers = path === p || path.startsWith(`${p}.`) || path.startsWith(`${p}[`);
        if (covers && p.length > best.length) best = p;
      }
      const flag = o.flags.get(best);
      if (flag !== undefined) return path === '' ? flag : `${flag} (${path})`;
      return path === '' ? 'flags' : `flags (${path})`;
    }
    const source = o?.kind === 'file' ? o.source : this.label;
    return path === '' ? source : `${source}: ${path}`;
  }

  fail(path: string, expected: string, got: unknown): never {
    throw new QisError('ERR_CONFIG_INVALID', `${this.where(path)}: expected ${expected}, got ${describe(got)}`);
  }

  unknownKey(path: string, what: string, keys: readonly string[]): never {
    throw new QisError('ERR_CONFIG_INVALID', `${this.where(path)}: unknown key ${what}(expected one of: ${keys.join(', ')})`);
  }
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 77)}...` : v);
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return v instanceof Uint8Array ? 'binary data' : 'a mapping';
  return String(v);
}

// ---------------------------------------------------------------------------------------------
// Validation of one layer (a file, flags, or a config built in code): every key it has must be
// known and hold a good value; keys it lacks come from the layer below.

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

const join = (path: string, key: string): string => (path === '' ? key : `${path}.${key}`);

/** A mapping with only `keys`; `what` qualifies the unknown-key message ("for a tcp listener "). */
function mapping(c: Ctx, v: unknown, path: string, keys: readonly string[], expected = 'a mapping', what = ''): Obj {
  if (!isObj(v)) return c.fail(path, expected, v);
  for (const k of Object.keys(v)) if (!keys.includes(k)) c.unknownKey(join(path, k), what, keys);
  return v;
}

function list(c: Ctx, v: unknown, path: string, expected: string): readonly unknown[] {
  return Array.isArray(v) ? v : c.fail(path, expected, v);
}

function int(c: Ctx, v: unknown, path: string, min: number, max: number, expected: string): number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max ? v : c.fail(path, expected, v);
}

function text(c: Ctx, v: unknown, path: string, expected = 'a non-empty string'): string {
  return typeof v === 'string' && v.length > 0 ? v : c.fail(path, expected, v);
}

function oneOf<T extends string>(c: Ctx, v: unknown, path: string, values: readonly T[]): T {
  return typeof v === 'string' && (values as readonly string[]).includes(v) ? (v as T) : c.fail(path, `one of ${values.join(', ')}`, v);
}

const PORT = 'an integer port 0..65535 (0: chosen by the OS)';
const HOST = 'a host name or address';

const LISTENER_KEYS = {
  tcp: ['type', 'host', 'port'],
  tls: ['type', 'host', 'port', 'cert', 'key', 'ca', 'requestCert'],
  ws: ['type', 'host', 'port', 'path'],
} as const;

function listener(c: Ctx, v: unknown, path: string): Obj {
  const shape = 'a listener mapping {type: tcp|tls|ws, host, port, …}';
  if (!isObj(v)) return c.fail(path, shape, v);
  const type = oneOf(c, v.type, `${path}.type`, ['tcp', 'tls', 'ws'] as const);
  mapping(c, v, path, LISTENER_KEYS[type], shape, `for a ${type} listener `);
  const out: Obj = { type, host: text(c, v.host, `${path}.host`, HOST), port: int(c, v.port, `${path}.port`, 0, 65535, PORT) };
  if (type === 'ws') {
    const p = v.path;
    out.path = typeof p === 'string' && p.startsWith('/') ? p : c.fail(`${path}.path`, "a URL path starting with '/' (e.g. /mqtt)", p);
  }
  if (type === 'tls') {
    out.cert = text(c, v.cert, `${path}.cert`, 'a PEM certificate file path');
    out.key = text(c, v.key, `${path}.key`, 'a PEM private key file path');
    if (v.ca !== undefined) out.ca = text(c, v.ca, `${path}.ca`, 'a PEM CA certificate file path');
    if (v.requestCert !== undefined) {
      out.requestCert = typeof v.requestCert === 'boolean' ? v.requestCert : c.fail(`${path}.requestCert`, 'true or false', v.requestCert);
      // Without its own CA, mTLS would accept any client certificate a public CA signed.
      if (out.requestCert === true && out.ca === undefined) c.fail(`${path}.ca`, 'a CA file when requestCert is true', undefined);
    }
  }
  return out;
}

function listeners(c: Ctx, v: unknown, path: string): Obj[] {
  const items = list(c, v, path, 'a list of listeners');
  if (items.length === 0) c.fail(path, 'at least one listener', v);
  const out = items.map((item, i) => listener(c, item, `${path}[${i}]`));
  const seen = new Map<string, number>();
  out.forEach((l, i) => {
    if (l.port === 0) return;
    const at = `${String(l.host)}:${String(l.port)}`;
    const j = seen.get(at);
    if (j !== undefined) c.fail(`${path}[${i}]`, `a host:port not already taken by ${path}[${j}]`, at);
    seen.set(at, i);
  });
  return out;
}

/** Why `f` is not a valid MQTT topic filter (MQTT 3.1.1 §4.7), or undefined. */
function filterProblem(f: string): string | undefined {
  if (f.length === 0) return 'it is empty';
  if (f.includes('\u0000')) return 'it contains U+0000';
  if (Buffer.byteLength(f) > 65535) return 'it is longer than 65535 bytes';
  const levels = f.split('/');
  for (const [i, l] of levels.entries()) {
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return "'#' must be the whole last level";
    if (l.includes('+') && l !== '+') return "'+' must be a whole level";
  }
  return undefined;
}

function aclRules(c: Ctx, v: unknown, path: string): Obj[] {
  return list(c, v, path, 'a list of rules {allow, topic, clients?, users?}').map((item, i) => {
    const p = `${path}[${i}]`;
    const r = mapping(c, item, p, ['allow', 'topic', 'clients', 'users'], 'a rule {allow: true|false, topic: FILTER (%u: the user, %c: the client id), clients?: [ID, …], users?: [USER, …]}');
    const allow = typeof r.allow === 'boolean' ? r.allow : c.fail(`${p}.allow`, 'true or false', r.allow);
    const topic = r.topic;
    const problem = typeof topic === 'string' ? filterProblem(topic) : 'it is not a string';
    if (problem !== undefined) c.fail(`${p}.topic`, `an MQTT topic filter ('#' only as the whole last level, '+' only as a whole level; here ${problem})`, topic);
    const out: Obj = { allow, topic };
    if (r.clients !== undefined) {
      out.clients = list(c, r.clients, `${p}.clients`, 'a list of client ids').map((id, k) => text(c, id, `${p}.clients[${k}]`, 'a client id (non-empty string)'));
    }
    if (r.users !== undefined) {
      out.users = list(c, r.users, `${p}.users`, 'a list of user names').map((u, k) => text(c, u, `${p}.users[${k}]`, 'a user name (non-empty string)'));
    }
    return out;
  });
}

type Check = (c: Ctx, v: unknown, path: string) => unknown;

const ADMISSION: Record<keyof BrokerOptions['admission'], Check> = {
  maxSkewMs: (c, v, p) => int(c, v, p, 0, Number.MAX_SAFE_INTEGER, 'an integer >= 0 (milliseconds)'),
  registry: (c, v, p) => oneOf(c, v, p, ['open', 'closed'] as const),
  templates: (c, v, p) =>
    list(c, v, p, 'a list of template ids').map((id, i) =>
      typeof id === 'string' && isTplId(id) ? id : c.fail(`${p}[${i}]`, 'a template id (26 lowercase base32 characters)', id),
    ),
  curators: (c, v, p) =>
    list(c, v, p, 'a list of curator keys').map((k, i) =>
      typeof k === 'string' && (isNodeId(k) || /^[0-9a-fA-F]{64}$/.test(k)) ? k.toLowerCase() : c.fail(`${p}[${i}]`, 'a curator key: a node id (26 lowercase base32 characters) or an Ed25519 public key (64 hex characters)', k),
    ),
  ratePerSecond: (c, v, p) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : c.fail(p, 'a number >= 0 (publishes per second; 0: no limit)', v)),
  burst: (c, v, p) => int(c, v, p, 1, Number.MAX_SAFE_INTEGER, 'an integer >= 1'),
  enrolment: (c, v, p) => oneOf(c, v, p, ['off', 'required'] as const),
  operators: (c, v, p) =>
    list(c, v, p, 'a list of operators').map((k, i) => {
      try {
        return typeof k === 'string' ? parseOperatorRef(k) : c.fail(`${p}[${i}]`, OPERATOR, k);
      } catch {
        return c.fail(`${p}[${i}]`, OPERATOR, k);
      }
    }),
};
const OPERATOR = 'an operator: its id (26 lowercase base32 characters) or its Ed25519 public key (64 hex characters)';

const HTTP: Record<keyof NonNullable<BrokerOptions['http']>, Check> = {
  host: (c, v, p) => text(c, v, p, HOST),
  port: (c, v, p) => int(c, v, p, 0, 65535, PORT),
};

/** A nested mapping whose keys each have a check; in one layer every key is optional. */
function section(checks: Record<string, Check>, expected = 'a mapping'): Check {
  const keys = Object.keys(checks);
  return (c, v, path) => {
    const m = mapping(c, v, path, keys, expected);
    const out: Obj = {};
    for (const [k, check] of Object.entries(checks)) if (m[k] !== undefined) out[k] = check(c, m[k], join(path, k));
    return out;
  };
}

const AUTH: Record<keyof NonNullable<BrokerOptions['auth']>, Check> = {
  allowAnonymous: (c, v, p) => (typeof v === 'boolean' ? v : v === 'true' || v === 'false' ? v === 'true' : c.fail(p, 'true or false', v)),
  passwordFile: (c, v, p) => text(c, v, p, 'a password file path (qis broker passwd FILE USER writes one)'),
  nodeLogin: (c, v, p) => (typeof v === 'boolean' ? v : v === 'true' || v === 'false' ? v === 'true' : c.fail(p, 'true or false', v)),
  loginSkewMs: (c, v, p) => int(c, v, p, 0, Number.MAX_SAFE_INTEGER, 'an integer >= 0 (milliseconds)'),
  peers: (c, v, p) => list(c, v, p, 'a list of peer identities').map((u, i) => text(c, u, `${p}[${i}]`, 'a peer identity (user name, certificate CN or node id)')),
  clientIds: (c, v, p) =>
    list(c, v, p, 'a list of client id patterns').map((x, i) =>
      typeof x === 'string' && x !== '' && !x.slice(0, -1).includes('*') ? x : c.fail(`${p}[${i}]`, "a client id pattern (%u: the user; '*' only as the last character)", x),
    ),
};

const positiveMs = (c: Ctx, v: unknown, p: string): number => int(c, v, p, 1, Number.MAX_SAFE_INTEGER, 'a positive integer (milliseconds)');

const PEER_KEYS = ['url', 'name', 'identity', 'ca', 'cert', 'key', 'rejectUnauthorized', 'username', 'passwordFile', 'share', 'accept', 'rateLimit'] as const;

function templateList(c: Ctx, v: unknown, p: string): string[] {
  const items = list(c, v, p, "a list of template ids or ['*']");
  if (items.length === 0) c.fail(p, "at least one template id, or '*' for all", v);
  return items.map((id, i) => (id === '*' || (typeof id === 'string' && isTplId(id)) ? id : c.fail(`${p}[${i}]`, "a template id (26 lowercase base32 characters) or '*'", id)));
}

function peer(c: Ctx, v: unknown, path: string): Obj {
  const r = mapping(c, v, path, PEER_KEYS, 'a peer mapping {url, share?, accept?, rateLimit?, ca?, cert?, key?, …}', 'for a federation peer ');
  let url: URL | undefined;
  try {
    url = typeof r.url === 'string' ? new URL(r.url) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || !['mqtt:', 'mqtts:', 'tcp:', 'tls:'].includes(url.protocol) || url.hostname === '') c.fail(`${path}.url`, 'an mqtt:// or mqtts:// URL with a host', r.url);
  const out: Obj = { url: r.url, share: ['*'], accept: ['*'], rateLimit: 0 };
  if (r.name !== undefined) out.name = text(c, r.name, `${path}.name`, 'a peer name (non-empty string)');
  for (const k of ['ca', 'cert', 'key', 'passwordFile'] as const) {
    const f = r[k];
    if (f === undefined) continue;
    out[k] = text(c, f, `${path}.${k}`, 'a readable file path');
    try {
      accessSync(f as string, fsConstants.R_OK);
    } catch (e) {
      c.fail(`${path}.${k}`, `a readable file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, f);
    }
  }
  if ((r.cert === undefined) !== (r.key === undefined)) c.fail(`${path}.${r.cert === undefined ? 'cert' : 'key'}`, 'cert and key together (client certificate for mTLS)', undefined);
  if (r.rejectUnauthorized !== undefined) out.rejectUnauthorized = typeof r.rejectUnauthorized === 'boolean' ? r.rejectUnauthorized : c.fail(`${path}.rejectUnauthorized`, 'true or false', r.rejectUnauthorized);
  if (r.username !== undefined) out.username = text(c, r.username, `${path}.username`, 'a user name (non-empty string)');
  if (r.identity !== undefined) out.identity = text(c, r.identity, `${path}.identity`, "the peer's identity (its broker key id, certificate CN or user name)");
  if (r.share !== undefined) out.share = templateList(c, r.share, `${path}.share`);
  if (r.accept !== undefined) out.accept = templateList(c, r.accept, `${path}.accept`);
  if (r.rateLimit !== undefined) out.rateLimit = typeof r.rateLimit === 'number' && Number.isFinite(r.rateLimit) && r.rateLimit >= 0 ? r.rateLimit : c.fail(`${path}.rateLimit`, 'a number >= 0 (packets per second from this peer; 0: no limit)', r.rateLimit);
  return out;
}

function federation(c: Ctx, v: unknown, path: string): Obj {
  const m = mapping(c, v, path, ['region', 'peers', 'keyFile', 'reconnect', 'followUpMs', 'putTimeoutMs', 'linksFrom'], 'a mapping {region: NAME, peers: [{url, …}, …], keyFile?, reconnect?: {baseMs, capMs}, followUpMs?, putTimeoutMs?, linksFrom?: [IP, …]}');
  const region = typeof m.region === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(m.region) ? m.region : c.fail(`${path}.region`, "a region name (1-64 letters, digits, '.', '_' or '-')", m.region);
  const peers = m.peers === undefined ? [] : list(c, m.peers, `${path}.peers`, 'a list of peers {url, …}').map((x, i) => peer(c, x, `${path}.peers[${i}]`));
  const out: Obj = { region, peers };
  if (m.keyFile !== undefined) out.keyFile = text(c, m.keyFile, `${path}.keyFile`, "a key file path (made at first start when missing)");
  if (m.reconnect !== undefined) {
    const r = mapping(c, m.reconnect, `${path}.reconnect`, ['baseMs', 'capMs'], 'a mapping {baseMs, capMs}');
    const baseMs = r.baseMs === undefined ? 500 : positiveMs(c, r.baseMs, `${path}.reconnect.baseMs`);
    const capMs = r.capMs === undefined ? Math.max(30_000, baseMs) : positiveMs(c, r.capMs, `${path}.reconnect.capMs`);
    if (capMs < baseMs) c.fail(`${path}.reconnect.capMs`, `at least baseMs (${baseMs})`, capMs);
    out.reconnect = { baseMs, capMs };
  }
  if (m.linksFrom !== undefined) {
    out.linksFrom = list(c, m.linksFrom, `${path}.linksFrom`, 'a list of IP addresses').map((a, i) => (typeof a === 'string' && isIP(a) !== 0 ? a : c.fail(`${path}.linksFrom[${i}]`, 'an IP address', a)));
  }
  if (m.followUpMs !== undefined) {
    out.followUpMs = typeof m.followUpMs === 'number' && Number.isFinite(m.followUpMs) && m.followUpMs >= 0 ? m.followUpMs : c.fail(`${path}.followUpMs`, 'a number of ms >= 0 (0: no follow-up catch-up)', m.followUpMs);
  }
  // At most an hour: a timer past 2^31 ms would fire at once.
  if (m.putTimeoutMs !== undefined) out.putTimeoutMs = int(c, m.putTimeoutMs, `${path}.putTimeoutMs`, 1, 3_600_000, 'a positive integer of milliseconds, at most 3600000');
  return out;
}


const count = (what: string, min = 0): Check => (c, v, p) => int(c, v, p, min, Number.MAX_SAFE_INTEGER, `an integer >= ${min} (${what})`);

const LIMITS: Record<keyof BrokerOptions['limits'], Check> = {
  maxPacketSize: count('bytes', 64),
  maxConnectPacketSize: count('bytes', 64),
  maxConnections: count('connections', 1),
  maxConnectionsPerAddress: count('connections', 1),
  maxKeepalive: (c, v, p) => int(c, v, p, 1, 65535, 'an integer 1..65535 (seconds)'),
  connectTimeoutMs: positiveMs,
  maxSubscriptionsPerClient: count('subscriptions', 1),
  maxRetained: count('retained messages; 0: no retained messages outside qis/1/'),
  maxRetainedBytes: count('bytes'),
  drainTimeoutMs: positiveMs,
  queueLimit: count('packets', 1),
  connectRatePerSecond: (c, v, p) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : c.fail(p, 'a number >= 0 (connections per second per address; 0: no limit)', v)),
  connectBurst: count('connections', 1),
  shutdownGraceMs: positiveMs,
  maxColdFloors: count('tombstones of keys never held'),
};

/** One check per key of BrokerOptions: the Record type makes the compiler demand each. */
const TOP: Record<keyof BrokerOptions, Check> = {
  listeners,
  dataDir: (c, v, p) => text(c, v, p, 'a directory path (non-empty string)'),
  fsync: (c, v, p) => oneOf(c, v, p, ['always', 'interval', 'never'] as const),
  fsyncIntervalMs: positiveMs,
  admission: section(ADMISSION),
  acl: section({ publish: aclRules, subscribe: aclRules, refusedPublish: (c, v, p) => oneOf(c, v, p, ['drop', 'disconnect'] as const) }),
  limits: section(LIMITS),
  // `off` (or false): no HTTP endpoint, also where `qis broker` would open its default one.
  http: (c, v, p) => (v === false || v === 'off' ? 'off' : section(HTTP)(c, v, p)),
  log: section({ level: (c, v, p) => oneOf(c, v, p, ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const) }),
  cluster: (c, v, p) => {
    let url: URL | undefined;
    try {
      url = typeof v === 'string' ? new URL(v) : undefined;
    } catch {
      url = undefined;
    }
    return url && (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== '' ? v : c.fail(p, 'a redis:// or rediss:// URL with a host', v);
  },
  verifyWorkers: (c, v, p) => int(c, v, p, 0, 64, 'an integer 0..64 (0: verify on the main thread)'),
  verifyNice: (c, v, p) => int(c, v, p, 0, 19, 'an integer 0..19 (the niceness of the verify threads)'),
  verifyInline: (c, v, p) => int(c, v, p, 0, 100_000, 'an integer 0..100000 (verifications a second on the main thread while the verify threads are idle; 0: never)'),
  sweepIntervalMs: positiveMs,
  id: (c, v, p) => text(c, v, p, 'a broker id (non-empty string)'),
  federation,
  auth: section(AUTH),
};

const checkLayer = section(TOP, 'a mapping of broker options (listeners, dataDir, fsync, admission, …)') as (c: Ctx, v: unknown, path: string) => Obj;

function ctxOf(layer: object, label: string): Ctx {
  return new Ctx(origins.get(layer), label);
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** Objects merge key by key; lists and scalars replace. */
function merge(base: Obj, over: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isObj(v) && isObj(b) ? merge(b, v) : v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Parses a broker config file's text (YAML 1.2; JSON is YAML) and checks every key and value in
 * it. TLS files are checked later, by {@link resolveBrokerOptions}.
 *
 * @example
 * const config = parseBrokerConfig('fsync: interval\nfsyncIntervalMs: 50\n', 'broker.yaml');
 * resolveBrokerOptions(config).fsyncIntervalMs; // 50
 * @throws QisError ERR_CONFIG_INVALID (the message names `source`, the key path and what was expected)
 */
export function parseBrokerConfig(text: string, source: string): BrokerConfig {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  const err = doc.errors[0];
  if (err) {
    const at = err.linePos?.[0];
    let message = err.message.split('\n')[0]?.replace(/ at line \d+, column \d+:?$/, '') ?? err.code;
    if (err.code === 'DUPLICATE_KEY' && at) {
      const key = /^("(?:[^"\\]|\\.)*"|'[^']*'|[^:,}\s]+)/.exec((text.split(/\r?\n/)[at.line - 1] ?? '').slice(at.col - 1))?.[1];
      message = `duplicate key${key ? ` ${key}` : ''} (${message})`;
    }
    throw new QisError('ERR_CONFIG_INVALID', `${source}${at ? `:${at.line}:${at.col}` : ''}: ${message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (e) {
    throw new QisError('ERR_CONFIG_INVALID', `${source}: ${(e as Error).message}`, { cause: e });
  }
  const origin: Origin = { kind: 'file', source };
  // An empty file (or only comments) is an empty config: all defaults.
  const config = deepFreeze(checkLayer(new Ctx(origin, source), value ?? {}, '')) as BrokerConfig;
  origins.set(config, origin);
  return config;
}

/**
 * Reads and parses a broker config file (see {@link parseBrokerConfig}).
 *
 * @example
 * const options = resolveBrokerOptions(await loadBrokerConfig('examples/broker.yaml'));
 * @throws QisError ERR_FILE_IO | ERR_CONFIG_INVALID
 */
export async function loadBrokerConfig(path: string): Promise<BrokerConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new QisError('ERR_FILE_IO', `${path}: ${(e as Error).message}`, { cause: e });
  }
  return parseBrokerConfig(text, path);
}

/**
 * Merges `config` and then `overrides` (typically {@link configFromFlags}) over
 * {@link BROKER_DEFAULTS} (mappings merge key by key; lists such as `listeners` replace) and
 * validates the result: every key, every value, and that TLS certificate, key and CA files are
 * readable. Returns deeply frozen options.
 *
 * @example
 * const options = resolveBrokerOptions(await loadBrokerConfig('broker.yaml'), configFromFlags(['--fsync', 'never']));
 * @throws QisError ERR_CONFIG_INVALID (the message names the file or flag, the key path and what was expected)
 */
export function resolveBrokerOptions(config: BrokerConfig, overrides: BrokerConfig = {}, defaults: BrokerConfig = {}): BrokerOptions {
  const base = ctxOf(config, 'config');
  const over = ctxOf(overrides, 'overrides');
  const a = checkLayer(base, config, '');
  const b = checkLayer(over, overrides, '');
  // `defaults`: a caller's own defaults over BROKER_DEFAULTS (`qis broker`'s HTTP endpoint), trusted.
  const merged = merge(merge(merge(BROKER_DEFAULTS as unknown as Obj, defaults as Obj), a), b);
  if (merged.http === 'off') delete merged.http;

  const httpCtx = b.http !== undefined ? over : base;
  if (isObj(merged.http)) for (const k of ['host', 'port'] as const) HTTP[k](httpCtx, merged.http[k], `http.${k}`);

  if (merged.federation !== undefined && merged.cluster !== undefined) {
    (b.federation !== undefined ? over : base).fail('federation', 'no federation together with cluster (a clustered region federates through one of its brokers without cluster: not supported yet)', 'both');
  }

  const listenCtx = b.listeners !== undefined ? over : base;
  (merged.listeners as readonly Obj[]).forEach((l, i) => {
    if (l.type !== 'tls') return;
    for (const k of ['cert', 'key', 'ca'] as const) {
      const file = l[k];
      if (typeof file !== 'string') continue;
      try {
        accessSync(file, fsConstants.R_OK);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
        listenCtx.fail(`listeners[${i}].${k}`, `a readable PEM file (${code})`, file);
      }
    }
  });
  return deepFreeze(merged) as unknown as BrokerOptions;
}

/** One command-line flag for a config key. */
export interface BrokerFlag {
  /** Without the leading `--`. */
  readonly name: string;
  /** The key path in {@link BrokerOptions} it sets. */
  readonly key: string;
  /** Placeholder for the value in help text. */
  readonly value: string;
  readonly help: string;
  /** Given again, a `list` flag adds to its list (the first one replaces the file's list). */
  readonly list?: boolean;
}

/**
 * Every config key as a flag: the dotted path of its key, in kebab case (`--admission.max-skew-ms`),
 * except the list and pair forms `--listen`, `--http`, `--log-level`, `--admission.template` and
 * `--acl.publish` / `--acl.subscribe`.
 */
export const BROKER_FLAGS: readonly BrokerFlag[] = Object.freeze([
  { name: 'listen', key: 'listeners', value: 'URL', list: true, help: 'tcp://HOST:PORT, ws://HOST:PORT/PATH or tls://HOST:PORT?cert=F&key=F[&ca=F&requestCert=true]; replaces the listeners of the file' },
  { name: 'data-dir', key: 'dataDir', value: 'DIR', help: 'durable store directory' },
  { name: 'fsync', key: 'fsync', value: 'MODE', help: 'always | interval | never' },
  { name: 'fsync-interval-ms', key: 'fsyncIntervalMs', value: 'MS', help: 'fsync period with --fsync interval' },
  { name: 'admission.max-skew-ms', key: 'admission.maxSkewMs', value: 'MS', help: 'how far a packet ts may lie in the future' },
  { name: 'admission.registry', key: 'admission.registry', value: 'MODE', help: 'open (any template) | closed (only --admission.template ids and --admission.curator templates)' },
  { name: 'admission.template', key: 'admission.templates', value: 'ID', list: true, help: 'a template id admitted by a closed registry; replaces the list of the file' },
  { name: 'admission.curator', key: 'admission.curators', value: 'KEY', list: true, help: 'a curator (node id or public key hex) whose signed template documents a closed registry admits; replaces the list of the file' },
  { name: 'admission.rate-per-second', key: 'admission.ratePerSecond', value: 'N', help: 'sustained qis/1/ publishes per second per authenticated identity (anonymous: per address), 0: no limit' },
  { name: 'admission.burst', key: 'admission.burst', value: 'N', help: 'token bucket size for --admission.rate-per-second' },
  { name: 'admission.enrolment', key: 'admission.enrolment', value: 'MODE', help: 'off (any key) | required (outcome and score packets need a valid enrolment by an --admission.operator, PROTOCOL §10)' },
  { name: 'admission.operator', key: 'admission.operators', value: 'OPERATOR', list: true, help: 'a trusted operator (id or public key hex) for --admission.enrolment required; replaces the list of the file' },
  { name: 'acl.publish', key: 'acl.publish', value: 'RULE', list: true, help: 'allow:FILTER or deny:FILTER for ordinary topics; replaces the rules of the file' },
  { name: 'acl.subscribe', key: 'acl.subscribe', value: 'RULE', list: true, help: 'allow:FILTER or deny:FILTER; replaces the rules of the file' },
  { name: 'acl.refused-publish', key: 'acl.refusedPublish', value: 'MODE', help: 'a refused publish on an ordinary topic: drop (acknowledged, delivered to nobody) | disconnect' },
  { name: 'limits.max-packet-size', key: 'limits.maxPacketSize', value: 'BYTES', help: 'largest MQTT packet once connected (checked before buffering)' },
  { name: 'limits.max-connect-packet-size', key: 'limits.maxConnectPacketSize', value: 'BYTES', help: 'largest packet before CONNECT is answered' },
  { name: 'limits.max-connections', key: 'limits.maxConnections', value: 'N', help: 'open MQTT connections in all' },
  { name: 'limits.max-connections-per-address', key: 'limits.maxConnectionsPerAddress', value: 'N', help: 'open MQTT connections from one remote address' },
  { name: 'limits.max-keepalive', key: 'limits.maxKeepalive', value: 'S', help: 'keepalive 0 or above this is capped to it (seconds)' },
  { name: 'limits.connect-timeout-ms', key: 'limits.connectTimeoutMs', value: 'MS', help: 'a connection without CONNECT is closed after this' },
  { name: 'limits.max-subscriptions-per-client', key: 'limits.maxSubscriptionsPerClient', value: 'N', help: 'subscriptions one client may hold' },
  { name: 'limits.max-retained', key: 'limits.maxRetained', value: 'N', help: 'retained messages kept outside qis/1/ (0: retain off there)' },
  { name: 'limits.max-retained-bytes', key: 'limits.maxRetainedBytes', value: 'BYTES', help: 'payload bytes of the retained messages kept outside qis/1/' },
  { name: 'limits.drain-timeout-ms', key: 'limits.drainTimeoutMs', value: 'MS', help: 'a client that does not read for this long is disconnected' },
  { name: 'limits.queue-limit', key: 'limits.queueLimit', value: 'N', help: 'packets queued per client before its CONNECT is answered' },
  { name: 'limits.connect-rate-per-second', key: 'limits.connectRatePerSecond', value: 'N', help: 'new connections per second per remote address, 0: no limit' },
  { name: 'limits.connect-burst', key: 'limits.connectBurst', value: 'N', help: 'token bucket size for --limits.connect-rate-per-second' },
  { name: 'limits.shutdown-grace-ms', key: 'limits.shutdownGraceMs', value: 'MS', help: 'on SIGTERM, exit anyway when the close takes longer' },
  { name: 'limits.max-cold-floors', key: 'limits.maxColdFloors', value: 'N', help: 'tombstones kept for keys the broker never held (beyond: ERR_TOMBSTONE_LIMIT)' },
  { name: 'http', key: 'http', value: 'HOST:PORT', help: "/healthz, /metrics and the console; qis broker's default 127.0.0.1:9100 (createBroker: none); off: none" },
  { name: 'log-level', key: 'log.level', value: 'LEVEL', help: 'fatal | error | warn | info | debug | trace | silent' },
  { name: 'cluster', key: 'cluster', value: 'URL', help: 'redis://HOST:PORT shared by the brokers of one region' },
  { name: 'verify-workers', key: 'verifyWorkers', value: 'N', help: 'signature verification threads, 0..64 (default: the cores minus one, at least 1)' },
  { name: 'verify-nice', key: 'verifyNice', value: 'N', help: 'niceness of the verification threads, 0..19 (default 0; 19: MQTT goes first when the cores are short; Linux)' },
  { name: 'verify-inline', key: 'verifyInline', value: 'N', help: 'verifications a second the main thread runs itself while the verify threads are idle (default 2000; 0: never)' },
  { name: 'sweep-interval-ms', key: 'sweepIntervalMs', value: 'MS', help: 'how often expired packets are swept' },
  { name: 'id', key: 'id', value: 'ID', help: 'broker id (default: random)' },
  { name: 'auth.allow-anonymous', key: 'auth.allowAnonymous', value: 'BOOL', help: 'true | false: anonymous clients on every listener (default: allowed on loopback listeners only)' },
  { name: 'auth.password-file', key: 'auth.passwordFile', value: 'FILE', help: 'user:scrypt$… lines (qis broker passwd FILE USER)' },
  { name: 'auth.node-login', key: 'auth.nodeLogin', value: 'BOOL', help: 'accept node logins (PROTOCOL §11; default true)' },
  { name: 'auth.login-skew-ms', key: 'auth.loginSkewMs', value: 'MS', help: 'largest |clock − login ts| (default 300000)' },
  { name: 'auth.client-id', key: 'auth.clientIds', value: 'PATTERN', list: true, help: "a client id pattern for password and certificate users (%u: the user, trailing '*'); default %u and %u:*" },
  { name: 'auth.peer', key: 'auth.peers', value: 'USER', list: true, help: 'an identity (user, certificate CN or node id) that may connect as a federation link; default: any client' },
  { name: 'federation.region', key: 'federation.region', value: 'NAME', help: 'this region\'s name (enables federation with --federation.peer)' },
  { name: 'federation.peer', key: 'federation.peers', value: 'URL', list: true, help: 'mqtt[s]://HOST:PORT[?share=ID,…&accept=ID,…&rateLimit=N&name=N&identity=ID&ca=F&cert=F&key=F] a peer region\'s broker; replaces the peers of the file' },
  { name: 'federation.key-file', key: 'federation.keyFile', value: 'FILE', help: "this broker's key, made at first start (default <data-dir>/broker-key.json); its links log in with it" },
  { name: 'federation.reconnect.base-ms', key: 'federation.reconnect.baseMs', value: 'MS', help: 'first reconnect delay bound of a link (backoff with full jitter; default 500)' },
  { name: 'federation.reconnect.cap-ms', key: 'federation.reconnect.capMs', value: 'MS', help: 'largest reconnect delay bound of a link (default 30000)' },
  { name: 'federation.follow-up-ms', key: 'federation.followUpMs', value: 'MS', help: 'another catch-up this long after one that moved packets (0: none, the default)' },
  { name: 'federation.put-timeout-ms', key: 'federation.putTimeoutMs', value: 'MS', help: "how long a forwarded batch waits for the peer's answer before the link reconnects and catches up (default 10000)" },
].map((f) => Object.freeze(f)));

const NUMERIC = new Set([
  ...BROKER_FLAGS.filter((f) => f.key.startsWith('limits.')).map((f) => f.key),
  'auth.loginSkewMs', 'fsyncIntervalMs', 'admission.maxSkewMs', 'admission.ratePerSecond', 'admission.burst', 'verifyWorkers', 'verifyNice', 'verifyInline', 'sweepIntervalMs', 'federation.reconnect.baseMs', 'federation.reconnect.capMs', 'federation.followUpMs', 'federation.putTimeoutMs']);

/** A number if `s` reads as one; otherwise `s` itself, for the validator to refuse by name. */
function num(s: string): number | string {
  const n = Number(s);
  return s.trim() !== '' && Number.isFinite(n) ? n : s;
}

const cliUsage = (message: string): QisError => new QisError('ERR_CLI_USAGE', message);

const LISTEN_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(\[[^\]]*\]|[^:/?#[\]]*)(?::([^/?#]*))?(\/[^?#]*)?(?:\?([^#]*))?$/;

/** `tcp://h:p`, `ws://h:p/path`, `tls://h:p?cert=…`: fields as given, for the validator to judge. */
function listenFlag(value: string): Obj {
  const m = LISTEN_RE.exec(value);
  if (!m) {
    throw cliUsage(`--listen expects tcp://HOST:PORT, ws://HOST:PORT/PATH or tls://HOST:PORT?cert=FILE&key=FILE[&ca=FILE&requestCert=true], not "${value}"`);
  }
  const [, scheme = '', rawHost = '', port, path, query] = m;
  const out: Obj = { type: scheme.toLowerCase(), host: rawHost.replace(/^\[(.*)\]$/, '$1') };
  if (port !== undefined) out.port = num(port);
  if (path !== undefined) out.path = path;
  for (const [k, v] of new URLSearchParams(query ?? '')) {
    if (k in out || k === 'type') throw cliUsage(`--listen ${value}: "${k}" belongs in the URL itself, not in its query`);
    out[k] = k === 'requestCert' && (v === 'true' || v === 'false') ? v === 'true' : v;
  }
  return out;
}

function httpFlag(value: string): Obj {
  const m = /^(\[[^\]]*\]|[^:]*):([^:]*)$/.exec(value);
  if (!m) throw cliUsage(`--http expects HOST:PORT (e.g. 127.0.0.1:9100), not "${value}"`);
  return { host: (m[1] ?? '').replace(/^\[(.*)\]$/, '$1'), port: num(m[2] ?? '') };
}

/** `mqtt://h:p?share=a,b&accept=*&rateLimit=100`: a peer mapping, for the validator to judge. */
function peerFlag(value: string): Obj {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw cliUsage(`--federation.peer expects mqtt://HOST:PORT[?share=ID,…&accept=ID,…&rateLimit=N], not "${value}"`);
  }
  const out: Obj = {};
  for (const [k, v] of u.searchParams) {
    if (k === 'share' || k === 'accept') out[k] = v.split(',');
    else if (k === 'rateLimit') out[k] = num(v);
    else if (k === 'rejectUnauthorized') out[k] = v === 'true' ? true : v === 'false' ? false : v;
    else out[k] = v;
  }
  u.search = '';
  out.url = u.toString().replace(/\/$/, '');
  return out;
}

function aclFlag(name: string, value: string): Obj {
  const m = /^(allow|deny):(.*)$/s.exec(value);
  if (!m) throw cliUsage(`--${name} expects allow:FILTER or deny:FILTER (e.g. allow:sensors/#), not "${value}"`);
  return { allow: m[1] === 'allow', topic: m[2] };
}

/**
 * Turns key flags into a config layer (see {@link BROKER_FLAGS}): `--data-dir DIR` or
 * `--data-dir=DIR`, `--admission.max-skew-ms N`, `--listen URL` (repeatable; replaces the
 * listeners), `--http HOST:PORT`, `--acl.publish allow:TOPIC`, … Values are converted by the
 * key's type; {@link resolveBrokerOptions} validates them and names the flag when it refuses one.
 *
 * @example
 * configFromFlags(['--listen', 'tcp://0.0.0.0:1883', '--listen', 'ws://0.0.0.0:8080/mqtt', '--fsync=never']);
 * // { listeners: [{type:'tcp',host:'0.0.0.0',port:1883}, {type:'ws',host:'0.0.0.0',port:8080,path:'/mqtt'}], fsync: 'never' }
 * @throws QisError ERR_CLI_USAGE (an unknown flag, a missing value, a value of the wrong form)
 */
export function configFromFlags(argv: readonly string[]): BrokerConfig {
  const byName = new Map(BROKER_FLAGS.map((f) => [f.name, f]));
  const out: Obj = {};
  const named = new Map<string, string>();
  const lists = new Map<string, unknown[]>();

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (!arg.startsWith('--') || arg === '--') throw cliUsage(`unexpected argument "${arg}": broker settings are flags such as --data-dir DIR`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const flag = byName.get(name);
    if (!flag) throw cliUsage(`unknown flag --${name} (broker flags: ${BROKER_FLAGS.map((f) => `--${f.name}`).join(', ')})`);
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('-')) {
        throw cliUsage(`--${name} needs a value ${flag.value}${next === undefined ? '' : ` (for one that starts with '-', write --${name}=VALUE)`}`);
      }
      value = next;
      i++;
    }

    const path = flag.key.split('.');
    const leaf = path.pop() ?? flag.key;
    let parent = out;
    for (const p of path) parent = (parent[p] ??= {}) as Obj;

    if (flag.list) {
      let items = lists.get(flag.key);
      if (!items) {
        items = [];
        lists.set(flag.key, items);
        parent[leaf] = items;
        named.set(flag.key, `--${name}`);
      }
      named.set(`${flag.key}[${items.length}]`, `--${name} ${value}`);
      items.push(name === 'listen' ? listenFlag(value) : name.startsWith('acl.') ? aclFlag(name, value) : name === 'federation.peer' ? peerFlag(value) : value);
    } else {
      parent[leaf] = name === 'http' ? (value === 'off' ? 'off' : httpFlag(value)) : NUMERIC.has(flag.key) ? num(value) : value;
      named.set(flag.key, name === 'http' ? `--http ${value}` : `--${name}`);
    }
  }
  origins.set(out, { kind: 'flags', flags: named });
  return out as BrokerConfig;
}
