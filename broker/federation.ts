/**
 * Federation (PROTOCOL §8): links between regional brokers. A link is an mqtt.js connection from
 * this broker to a peer broker; over it both directions carry the forwarded qis/1 prefixes:
 *
 * - peer → here: the link subscribes to the prefixes on the peer; every packet received goes
 *   through this broker's admission (verify, seq check, durable store, then retained delivery to
 *   local subscribers) exactly as a client's publish would. A packet that is not newer than the
 *   stored one is dropped and so never forwarded again: loops die.
 * - here → peer: every packet this broker admits (from a client or another link) is published
 *   on the peer, which admits it in turn.
 *
 * Catch-up on (re)connect exchanges only what differs (docs/protocol-choices.md, "Federation
 * catch-up"): per-range digests of (template, node, seq, deleted) on the reserved topics
 * `qis/1/f/req/<linkClientId>` and `qis/1/f/res/<linkClientId>`; only ranges that differ are
 * listed, then each side sends the newer packets and signed tombstones the other lacks. A peer
 * that does not answer (Mosquitto) gets the full retained exchange instead.
 *
 * Only `../src/index.js` and the broker's own modules are imported (test/boundaries.test.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { QisError, backoffDelay, backoffOptions, decodePacket, parseOutcomeTopic, parseScoreTopic, type ErrorCode } from '../src/index.js';
import { RateLimiter, scoreTopicOfStored } from './admission.js';
import type { FederationOptions, PeerOptions } from './options.js';
import type { Store, StoreKey } from './store.js';

/** The qis/1 prefixes a link forwards (both directions): outcome packets, template documents, score packets (§9). */
export const FORWARDED_PREFIXES: readonly string[] = Object.freeze(['qis/1/o/', 'qis/1/t/', 'qis/1/s/']);
/** Reserved for links: catch-up requests and responses. */
export const FEDERATION_PREFIX = 'qis/1/f/';
export const FED_REQ = 'qis/1/f/req/';
export const FED_RES = 'qis/1/f/res/';
/** Client ids of links start with this; a qis broker sends them no retained outcome packets at subscribe (catch-up does that). */
export const LINK_CLIENT_PREFIX = 'qis-fed-';
/** Digest ranges: a key's range is the first byte of SHA-256(tplId/nodeId). */
export const RANGES = 256;

/** What admission made of a packet received from a peer. */
export type PeerAdmission = { readonly result: 'stored' | 'stale' } | { readonly result: 'refused'; readonly code: ErrorCode; readonly message: string };

/** What a broker gives its federation. */
export interface FederationHost {
  readonly store: Store;
  /** Score packets (qis/1/s/, §9), filed under outcome-shaped keys; caught up as a second store (`store: 's'` in requests). */
  readonly scoreStore?: Store;
  readonly logger: Logger;
  readonly registry: Registry;
  /** Runs a received packet through admission, then delivers it to local subscribers; `origin` is the link it came from. */
  admit(topic: string, payload: Buffer, origin: string): Promise<PeerAdmission>;
  /** Template documents this broker holds (topic qis/1/t/<tplId> → signed bytes). */
  templates(): Iterable<[string, Uint8Array]>;
  now(): number;
}

export interface Federation {
  /** Called by the broker after it admitted and stored a packet (or a tombstone, or a new template document). */
  admitted(topic: string, payload: Uint8Array, origin: string | undefined): void;
  /** A catch-up request from a link client of a peer: returns the response payload. */
  answer(clientId: string, payload: Buffer): Buffer | undefined;
  /** Link states (for tests and /healthz). */
  status(): LinkStatus[];
  /** Starts a catch-up on every connected link now; resolves when they finished. */
  catchUp(): Promise<void>;
  close(): Promise<void>;
}

export interface LinkStatus {
  readonly peer: string;
  readonly connected: boolean;
  /** 'qis' (digest catch-up), 'mqtt' (full retained exchange), or unknown before the first connection. */
  readonly peerKind: 'qis' | 'mqtt' | 'unknown';
  readonly catchUps: number;
  readonly lastCatchUp?: CatchUpReport;
  /** The last 8 catch-ups, oldest first. */
  readonly history: readonly CatchUpReport[];
}

export interface CatchUpReport {
  readonly mode: 'digest' | 'full';
  /** Payload bytes of the catch-up exchange in both directions (digests, lists, packets). */
  readonly bytes: number;
  /** Packets received from the peer, and sent to it. */
  readonly received: number;
  readonly sent: number;
  readonly ms: number;
}

// ------------------------------------------------------------------------------ digests

/** True when `tplId` passes a share/accept list ('*' = every template). */
export function passes(list: readonly string[], tplId: string): boolean {
  return list.includes('*') || list.includes(tplId);
}

type Scope = '*' | readonly string[];
const inScope = (scope: Scope, tplId: string): boolean => scope === '*' || scope.includes(tplId);

function rangeOf(tplId: string, nodeId: string): number {
  return createHash('sha256').update(`${tplId}/${nodeId}`).digest()[0] as number;
}

/** 8 bytes of SHA-256 over one entry: two 32-bit words, XORed into its range (order-free). */
function entryHash(k: StoreKey): [number, number] {
  const d = createHash('sha256').update(`${k.tplId}/${k.nodeId}/${k.seq}/${k.del ? 1 : 0}`).digest();
  return [d.readUInt32LE(0), d.readUInt32LE(4)];
}

/** Per-range digests of a store's keys within `scope`: RANGES × 8 bytes, plus each key's range. */
export function digest(keys: readonly StoreKey[], scope: Scope): { ranges: Buffer; byRange: Map<number, StoreKey[]>; n: number } {
  const words = new Uint32Array(RANGES * 2);
  const byRange = new Map<number, StoreKey[]>();
  let n = 0;
  for (const k of keys) {
    if (!inScope(scope, k.tplId)) continue;
    n++;
    const r = rangeOf(k.tplId, k.nodeId);
    const [a, b] = entryHash(k);
    words[2 * r] = (words[2 * r] as number) ^ a;
    words[2 * r + 1] = (words[2 * r + 1] as number) ^ b;
    let list = byRange.get(r);
    if (!list) byRange.set(r, (list = []));
    list.push(k);
  }
  return { ranges: Buffer.from(words.buffer), byRange, n };
}

const rootOf = (ranges: Buffer, n: number): string => createHash('sha256').update(ranges).update(String(n)).digest('hex').slice(0, 32);

/** Ranges whose 8-byte digests differ. */
export function differingRanges(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  for (let r = 0; r < RANGES; r++) if (a.compare(b, r * 8, r * 8 + 8, r * 8, r * 8 + 8) !== 0) out.push(r);
  return out;
}

/** A digest of a whole store (every key and seq, live or deleted): equal digests, equal stores. */
export function storeDigest(store: Store): string {
  const keys = store.keys?.() ?? [];
  const d = digest(keys, '*');
  return rootOf(d.ranges, d.n);
}

/**
 * Whether a forwarded outcome or score packet's seq is not above the one held (decoded, not
 * verified): loops and echoes end here, before any signature work. Malformed input is "not
 * stale", so admission refuses it with its own code.
 */
export function notNewer(store: Store, scoreStore: Store | undefined, topic: string, payload: Uint8Array): boolean {
  try {
    const isScore = topic.startsWith('qis/1/s/');
    if (!isScore && !topic.startsWith('qis/1/o/')) return false;
    const { tplId, nodeId } = isScore ? parseScoreTopic(topic) : parseOutcomeTopic(topic);
    const held = (isScore ? scoreStore : store)?.seqOf(tplId, nodeId);
    return held !== undefined && decodePacket(payload).seq <= held;
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------------------ catch-up messages

/** Which store a catch-up request is about: 'o' outcome packets (default), 's' score packets. */
export type StoreKind = 'o' | 's';
type Req = { store?: StoreKind } & (
  | { id: string; op: 'root'; scope: Scope }
  | { id: string; op: 'ranges'; scope: Scope }
  | { id: string; op: 'entries'; scope: Scope; ranges: number[] }
  | { id: string; op: 'get'; keys: [string, string][] }
);

/** The answering side of catch-up (pure over the store). */
export function answerRequest(store: Store, req: Req): Record<string, unknown> {
  switch (req.op) {
    case 'root': {
      const d = digest(store.keys?.() ?? [], req.scope);
      return { id: req.id, root: rootOf(d.ranges, d.n), n: d.n };
    }
    case 'ranges': {
      const d = digest(store.keys?.() ?? [], req.scope);
      return { id: req.id, ranges: d.ranges.toString('base64') };
    }
    case 'entries': {
      const d = digest(store.keys?.() ?? [], req.scope);
      const entries: [string, string, number, number][] = [];
      // Each range once, whatever the request repeats: the answer is at most the store's keys.
      for (const r of new Set(req.ranges)) for (const k of d.byRange.get(r) ?? []) entries.push([k.tplId, k.nodeId, k.seq, k.del ? 1 : 0]);
      return { id: req.id, entries };
    }
    case 'get': {
      const items: [string, string][] = [];
      for (const [tplId, nodeId] of req.keys) {
        const p = store.get(tplId, nodeId);
        if (p) {
          // A score is filed under an outcome-shaped topic; it travels on its own (qis/1/s/…).
          items.push([req.store === 's' ? scoreTopicOfStored(p.topic) : p.topic, Buffer.from(p.packet).toString('base64')]);
          continue;
        }
        const t = store.tombstone(tplId, nodeId);
        if (t?.topic && t.packet) items.push([t.topic, Buffer.from(t.packet).toString('base64')]);
      }
      return { id: req.id, items };
    }
  }
}

/** A batch of forwarded packets from a peer's link (op 'put'), or undefined when the payload is not one. */
export function parsePut(payload: Buffer): { id: string; items: [string, Buffer][] } | undefined {
  if (!payload.subarray(0, 64).includes('"op":"put"')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  const r = v as { id?: unknown; op?: unknown; items?: unknown };
  if (typeof r !== 'object' || r === null || r.op !== 'put' || typeof r.id !== 'string' || r.id.length > 64 || !Array.isArray(r.items) || r.items.length > 10_000) return undefined;
  const items: [string, Buffer][] = [];
  for (const it of r.items as unknown[]) {
    if (!Array.isArray(it) || typeof it[0] !== 'string' || typeof it[1] !== 'string') return undefined;
    items.push([it[0], Buffer.from(it[1], 'base64')]);
  }
  return { id: r.id, items };
}

/** A catch-up request's payload → the response payload (undefined for a malformed request, or one about a store this broker has not). */
export function answerPayload(store: Store, payload: Buffer, scoreStore?: Store): Buffer | undefined {
  const req = parseReq(payload);
  if (!req) return undefined;
  const s = req.store === 's' ? scoreStore : store;
  return s ? Buffer.from(JSON.stringify(answerRequest(s, req))) : undefined;
}

function parseReq(payload: Buffer): Req | undefined {
  let v: unknown;
  try {
    v = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const r = v as Record<string, unknown>;
  if (typeof r.id !== 'string' || r.id.length > 64) return undefined;
  if (r.store !== undefined && r.store !== 'o' && r.store !== 's') return undefined;
  const scopeOk = r.scope === '*' || (Array.isArray(r.scope) && r.scope.length <= 10_000 && r.scope.every((x) => typeof x === 'string'));
  switch (r.op) {
    case 'root':
    case 'ranges':
      return scopeOk ? (r as Req) : undefined;
    case 'entries':
      return scopeOk && Array.isArray(r.ranges) && r.ranges.length <= RANGES && r.ranges.every((x) => Number.isInteger(x) && x >= 0 && x < RANGES) ? (r as Req) : undefined;
    case 'get':
      return Array.isArray(r.keys) && r.keys.length <= 10_000 && r.keys.every((k) => Array.isArray(k) && k.length === 2 && k.every((x) => typeof x === 'string')) ? (r as Req) : undefined;
    default:
      return undefined;
  }
}

// ------------------------------------------------------------------------------ metrics

interface FedMetrics {
  up: Gauge<'peer'>;
  forwarded: Counter<'peer' | 'direction'>;
  refused: Counter<'peer' | 'code'>;
  dropped: Counter<'peer' | 'code'>;
  catchUpBytes: Counter<'peer'>;
  catchUps: Counter<'peer' | 'mode'>;
  lag: Gauge<'peer'>;
  pending: Gauge<'peer'>;
}

function fedMetrics(registry: Registry): FedMetrics {
  const r = [registry];
  return {
    up: new Gauge({ name: 'qis_federation_link_up', help: 'federation link connected (1) or not (0), by peer', labelNames: ['peer'] as const, registers: r }),
    forwarded: new Counter({ name: 'qis_federation_forwarded_total', help: 'packets forwarded over a link: out (sent to the peer, acknowledged) and in (received and stored here)', labelNames: ['peer', 'direction'] as const, registers: r }),
    refused: new Counter({ name: 'qis_federation_refused_total', help: 'packets received over a link that admission refused, by error code', labelNames: ['peer', 'code'] as const, registers: r }),
    dropped: new Counter({ name: 'qis_federation_dropped_total', help: 'packets received over a link and dropped: not newer than the stored one (ERR_SEQ_STALE) or over the link rate limit (ERR_RATE_LIMITED)', labelNames: ['peer', 'code'] as const, registers: r }),
    catchUpBytes: new Counter({ name: 'qis_federation_catchup_bytes_total', help: 'payload bytes of catch-up exchanges (digests, lists and packets, both directions)', labelNames: ['peer'] as const, registers: r }),
    catchUps: new Counter({ name: 'qis_federation_catchups_total', help: 'catch-ups completed, by mode (digest, or full retained exchange with a non-qis peer)', labelNames: ['peer', 'mode'] as const, registers: r }),
    lag: new Gauge({ name: 'qis_federation_lag_ms', help: 'time from admission here to the peer acknowledging the last forwarded packet, ms', labelNames: ['peer'] as const, registers: r }),
    pending: new Gauge({ name: 'qis_federation_pending', help: 'packets forwarded to the peer and not yet acknowledged', labelNames: ['peer'] as const, registers: r }),
  };
}

// ------------------------------------------------------------------------------ links

/** Unacknowledged forwards above which a link stops forwarding and catches up once it drained. */
const MAX_PENDING = 10_000;
/** Received packets waiting for admission above which a link drops and catches up later. */
const MAX_INBOX = 20_000;
/** Admissions of received packets in flight at once. */
const ADMIT_CONCURRENCY = 32;
const KEYS_PER_GET = 500;
/** Packets per 'put' batch to a qis peer. */
const BATCH = 256;

function chunks<T>(xs: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}
const RANGES_PER_LIST = 64;

/**
 * Starts the links of `options.peers` (they connect in the background, with backoff and jitter).
 * @example const fed = startFederation(options.federation, host)
 */
export function startFederation(options: FederationOptions, host: FederationHost): Federation {
  const metrics = fedMetrics(host.registry);
  const links = options.peers.map((p, i) => new Link(p, i, options, host, metrics));
  return {
    admitted(topic, payload, origin) {
      for (const l of links) if (l.name !== origin) l.forward(topic, payload);
    },
    answer(clientId, payload) {
      const res = answerPayload(host.store, payload, host.scoreStore);
      if (!res) host.logger.warn({ clientId }, 'malformed federation catch-up request ignored');
      return res;
    },
    status: () => links.map((l) => l.status()),
    async catchUp() {
      await Promise.all(links.map((l) => l.catchUpNow()));
    },
    async close() {
      await Promise.all(links.map((l) => l.close()));
    },
  };
}

/** A peer's display name: its `name`, or the URL without credentials. */
export function peerName(p: PeerOptions, i: number): string {
  if (p.name) return p.name;
  try {
    const u = new URL(p.url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return `peer${i}`;
  }
}

class Link {
  readonly name: string;
  private client: MqttClient | undefined;
  private readonly clientId: string;
  private readonly log: Logger;
  private connected = false;
  private closed = false;
  private attempt = 0;
  private upSince = 0;
  private retry: NodeJS.Timeout | undefined;
  private peerKind: 'qis' | 'mqtt' | 'unknown' = 'unknown';
  private catchUps = 0;
  private lastCatchUp: CatchUpReport | undefined;
  private readonly history: CatchUpReport[] = [];
  private catching: Promise<void> | undefined;
  private catchAgain = false;
  private pending = 0;
  private overflow = false;
  private inbox: { topic: string; payload: Buffer }[] = [];
  private admitting = 0;
  private readonly waiters = new Map<string, (payload: Buffer) => void>();
  private readonly rate: RateLimiter;
  private readonly backoff: ReturnType<typeof backoffOptions>;
  private later: NodeJS.Timeout | undefined;
  private bytes = 0;
  private readonly followUpMs: number;

  constructor(
    private readonly p: PeerOptions,
    i: number,
    o: FederationOptions,
    private readonly host: FederationHost,
    private readonly m: FedMetrics,
  ) {
    this.name = peerName(p, i);
    this.clientId = `${LINK_CLIENT_PREFIX}${o.region}-${i}`;
    this.log = host.logger.child({ peer: this.name });
    this.rate = new RateLimiter(p.rateLimit, Math.max(100, p.rateLimit));
    this.backoff = backoffOptions(o.reconnect ?? {});
    this.followUpMs = o.followUpMs ?? 0;
    this.m.up.set({ peer: this.name }, 0);
    this.connect();
  }

  status(): LinkStatus {
    return { peer: this.name, connected: this.connected, peerKind: this.peerKind, catchUps: this.catchUps, ...(this.lastCatchUp ? { lastCatchUp: this.lastCatchUp } : {}), history: [...this.history] };
  }

  private connect(): void {
    if (this.closed) return;
    const p = this.p;
    const read = (f: string): Buffer => readFileSync(f);
    let opts: IClientOptions;
    try {
      // Read at every attempt (certificates rotate); a missing file is logged and retried, never thrown from a timer.
      opts = {
        clientId: this.clientId,
        clean: true,
        reconnectPeriod: 0, // our own backoff with jitter
        connectTimeout: 10_000,
        keepalive: 30,
        protocolVersion: 4,
        ...(p.username !== undefined ? { username: p.username } : {}),
        ...(p.passwordFile !== undefined ? { password: readFileSync(p.passwordFile, 'utf8').trim() } : {}),
        ...(p.ca !== undefined ? { ca: read(p.ca) } : {}),
        ...(p.cert !== undefined ? { cert: read(p.cert) } : {}),
        ...(p.key !== undefined ? { key: read(p.key) } : {}),
        ...(p.rejectUnauthorized !== undefined ? { rejectUnauthorized: p.rejectUnauthorized } : {}),
      };
    } catch (e) {
      this.log.error({ code: 'ERR_FILE_IO', err: (e as Error).message }, 'federation link cannot read its TLS or password file');
      this.scheduleReconnect();
      return;
    }
    let c: MqttClient;
    try {
      c = mqtt.connect(p.url, opts);
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'federation link cannot connect');
      this.scheduleReconnect();
      return;
    }
    this.client = c;
    c.on('connect', () => void this.onConnect(c));
    c.on('message', (topic, payload) => this.onMessage(topic, payload));
    c.on('error', (e) => this.log.debug({ err: e.message }, 'federation link error'));
    c.on('close', () => {
      if (this.client !== c) return;
      if (this.connected) this.log.warn('federation link down');
      this.connected = false;
      this.m.up.set({ peer: this.name }, 0);
      if (this.upSince > 0 && this.host.now() - this.upSince >= 10_000) this.attempt = 0;
      this.upSince = 0;
      c.removeAllListeners('message');
      c.end(true);
      this.client = undefined;
      this.pending = 0;
      this.m.pending.set({ peer: this.name }, 0);
      for (const w of this.waiters.values()) w(Buffer.alloc(0));
      this.waiters.clear();
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.closed || this.retry) return;
    const delay = backoffDelay(this.attempt++, this.backoff, Math.random);
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.connect();
    }, delay);
    this.retry.unref();
  }

  private async onConnect(c: MqttClient): Promise<void> {
    this.connected = true;
    this.upSince = this.host.now();
    this.m.up.set({ peer: this.name }, 1);
    this.log.info({ clientId: this.clientId }, 'federation link up');
    try {
      this.peerKind = await this.detect(c);
      await subscribe(c, [`${FED_RES}${this.clientId}`, ...FORWARDED_PREFIXES.map((x) => `${x}#`)]);
      // Template documents first: a peer with a closed mind about depth needs them before packets.
      for (const [topic, bytes] of this.host.templates()) if (passes(this.p.share, topic.slice('qis/1/t/'.length))) this.send(topic, bytes);
      await this.catchUpNow();
    } catch (e) {
      if (this.client === c) this.log.warn({ err: (e as Error).message }, 'federation link setup failed; reconnecting');
      c.end(true);
    }
  }

  /** A qis broker keeps qis/1/broker retained; anything else (Mosquitto) gets the full retained exchange. */
  private async detect(c: MqttClient): Promise<'qis' | 'mqtt'> {
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (kind: 'qis' | 'mqtt'): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        c.off('message', on);
        c.unsubscribe('qis/1/broker');
        resolve(kind);
      };
      const on = (topic: string, payload: Buffer): void => {
        if (topic !== 'qis/1/broker') return;
        try {
          finish((JSON.parse(payload.toString()) as { kind?: string }).kind === 'qis' ? 'qis' : 'mqtt');
        } catch {
          finish('mqtt');
        }
      };
      c.on('message', on);
      const timer = setTimeout(() => finish('mqtt'), 2_000);
      c.subscribe('qis/1/broker', { qos: 0 }, (e) => {
        if (e) {
          done = true;
          clearTimeout(timer);
          reject(e);
        }
      });
    });
  }

  /** Runs a catch-up now (or once more after the running one). */
  catchUpNow(): Promise<void> {
    if (!this.connected || !this.client) return Promise.resolve();
    if (this.catching) {
      this.catchAgain = true;
      return this.catching;
    }
    const run = async (): Promise<void> => {
      do {
        this.catchAgain = false;
        const c = this.client;
        if (!c || !this.connected) return;
        const t0 = performance.now();
        this.bytes = 0;
        const r = this.peerKind === 'qis' ? await this.digestCatchUps(c) : await this.fullCatchUp(c);
        const report: CatchUpReport = { ...r, bytes: this.bytes, ms: Math.round(performance.now() - t0) };
        this.catchUps++;
        this.lastCatchUp = report;
        this.history.push(report);
        if (this.history.length > 8) this.history.shift();
        this.m.catchUps.inc({ peer: this.name, mode: report.mode });
        this.m.catchUpBytes.inc({ peer: this.name }, report.bytes);
        this.log.info(report, 'federation catch-up done');
        // What reaches the peer after this catch-up arrives live (the link subscribed first); an
        // optional follow-up (federation.followUpMs, default off) only costs ~120 bytes in sync.
        if ((report.sent > 0 || report.received > 0) && this.followUpMs > 0) this.catchUpSoon(this.followUpMs);
      } while (this.catchAgain);
    };
    this.catching = run()
      .catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'federation catch-up failed (retried at the next connection)'))
      .finally(() => (this.catching = undefined));
    return this.catching;
  }

  /** Digests cover the templates either list names (both sides compute them over the same scope). */
  private scope(): Scope {
    return this.p.share.includes('*') || this.p.accept.includes('*') ? '*' : [...new Set([...this.p.share, ...this.p.accept])].sort();
  }

  private async request(c: MqttClient, body: Record<string, unknown>, count = true): Promise<Record<string, unknown>> {
    // Never queued by mqtt.js while offline: a catch-up at the next connection covers it.
    if (!c.connected) throw new QisError('ERR_CLOSED', 'link not connected');
    const id = randomBytes(6).toString('hex');
    const payload = Buffer.from(JSON.stringify({ id, ...body }));
    if (count) this.bytes += payload.length;
    const answer = new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new QisError('ERR_TIMEOUT', `peer ${this.name} did not answer a catch-up ${String(body.op)} request`));
      }, 30_000);
      timer.unref();
      this.waiters.set(id, (b) => {
        clearTimeout(timer);
        if (b.length === 0) reject(new QisError('ERR_CLOSED', 'link closed during catch-up'));
        else resolve(b);
      });
    });
    c.publish(`${FED_REQ}${this.clientId}`, payload, { qos: 1 });
    const res = await answer;
    if (count) this.bytes += res.length;
    return JSON.parse(res.toString('utf8')) as Record<string, unknown>;
  }

  /** Outcome packets, then score packets (each store its own digests; requests about scores say `store: 's'`). */
  private async digestCatchUps(c: MqttClient): Promise<Omit<CatchUpReport, 'bytes' | 'ms'>> {
    const o = await this.digestCatchUp(c, this.host.store, 'o');
    if (!this.host.scoreStore) return o;
    const sc = await this.digestCatchUp(c, this.host.scoreStore, 's');
    return { mode: 'digest', received: o.received + sc.received, sent: o.sent + sc.sent };
  }

  private async digestCatchUp(c: MqttClient, store: Store, kind: StoreKind): Promise<Omit<CatchUpReport, 'bytes' | 'ms'>> {
    const scope = this.scope();
    const which = kind === 's' ? { store: kind } : {};
    let mine = digest(store.keys?.() ?? [], scope);
    const root = await this.request(c, { ...which, op: 'root', scope });
    if (root.root === rootOf(mine.ranges, mine.n)) return { mode: 'digest', received: 0, sent: 0 };
    const theirs = Buffer.from(String((await this.request(c, { ...which, op: 'ranges', scope })).ranges), 'base64');
    mine = digest(store.keys?.() ?? [], scope);
    if (theirs.length !== RANGES * 8) throw new QisError('ERR_PAYLOAD_INVALID', 'peer sent a digest of the wrong size');
    const diff = differingRanges(mine.ranges, theirs);
    const remote = new Map<string, [number, boolean]>();
    for (let i = 0; i < diff.length; i += RANGES_PER_LIST) {
      const res = await this.request(c, { ...which, op: 'entries', scope, ranges: diff.slice(i, i + RANGES_PER_LIST) });
      for (const e of (res.entries as [string, string, number, number][]) ?? []) remote.set(`${e[0]}/${e[1]}`, [e[2], e[3] === 1]);
    }
    // What they have newer (and we accept): fetch. What we have newer (and share): send.
    const want: [string, string][] = [];
    for (const [key, [seq]] of remote) {
      const [tplId = '', nodeId = ''] = key.split('/');
      if (!passes(this.p.accept, tplId)) continue;
      if ((store.seqOf(tplId, nodeId) ?? -1) < seq) want.push([tplId, nodeId]);
    }
    const push: [string, Uint8Array][] = [];
    for (const r of diff) {
      for (const k of mine.byRange.get(r) ?? []) {
        if (!passes(this.p.share, k.tplId)) continue;
        const theirSeq = remote.get(`${k.tplId}/${k.nodeId}`)?.[0] ?? -1;
        if (theirSeq >= k.seq) continue;
        const bytes = this.packetOf(k, store, kind);
        if (bytes) push.push(bytes);
      }
    }
    const sending = Promise.all(chunks(push, BATCH).map((items) => this.put(c, items, true)));
    let received = 0;
    for (let i = 0; i < want.length; i += KEYS_PER_GET) {
      const res = await this.request(c, { ...which, op: 'get', keys: want.slice(i, i + KEYS_PER_GET) });
      const items = (res.items as [string, string][]) ?? [];
      await Promise.all(
        items.map(async ([topic, b64]) => {
          const r = await this.admitOne(topic, Buffer.from(b64, 'base64'));
          if (r === 'stored') received++;
        }),
      );
    }
    const sent = (await sending).reduce((n, x) => n + x, 0);
    return { mode: 'digest', received, sent };
  }

  /** A peer without digests (Mosquitto): our retained packets go there, theirs arrive by subscription. */
  private async fullCatchUp(c: MqttClient): Promise<Omit<CatchUpReport, 'bytes' | 'ms'>> {
    let sent = 0;
    const stores: [Store, StoreKind][] = [[this.host.store, 'o'], ...(this.host.scoreStore ? [[this.host.scoreStore, 's'] as [Store, StoreKind]] : [])];
    for (const [store, kind] of stores) {
      for (const k of store.keys?.() ?? []) {
        if (!passes(this.p.share, k.tplId)) continue;
        const bytes = this.packetOf(k, store, kind);
        if (!bytes) continue;
        this.bytes += bytes[1].length;
        this.send(bytes[0], bytes[1]);
        sent++;
      }
    }
    // Their retained packets were delivered at our SUBSCRIBE (onMessage admits them); round-trip
    // a marker so they have been received before this catch-up reports.
    await marker(c, `qis/1/sync/${this.clientId}/${randomBytes(4).toString('hex')}`);
    await this.drained();
    while (this.inbox.length > 0 || this.admitting > 0) await new Promise((r) => setTimeout(r, 20));
    return { mode: 'full', received: 0, sent };
  }

  private packetOf(k: StoreKey, store: Store = this.host.store, kind: StoreKind = 'o'): [string, Uint8Array] | undefined {
    if (!k.del) {
      const p = store.get(k.tplId, k.nodeId);
      return p ? [kind === 's' ? scoreTopicOfStored(p.topic) : p.topic, p.packet] : undefined;
    }
    if (kind === 's') return undefined; // scores are never deleted (§9)
    const t = store.tombstone(k.tplId, k.nodeId);
    return t?.topic && t.packet ? [t.topic, t.packet] : undefined;
  }

  /** Forwards a packet this broker admitted. */
  forward(topic: string, payload: Uint8Array): void {
    if (!this.connected || !this.client) return; // catch-up at the next connection carries it
    if (!FORWARDED_PREFIXES.some((x) => topic.startsWith(x))) return;
    const tplId = tplOf(topic);
    if (tplId === undefined || !passes(this.p.share, tplId)) return;
    if (this.pending >= MAX_PENDING) {
      // A slow peer: stop queueing; once it drained, a catch-up sends what differs.
      if (!this.overflow) this.log.warn({ pending: this.pending }, 'federation link is slow; forwarding paused until it catches up');
      this.overflow = true;
      return;
    }
    this.send(topic, payload);
  }

  /** Forwards one packet: to a qis peer in batches (admitted there concurrently, so its disk syncs are shared); otherwise a retained QoS 1 publish. */
  private send(topic: string, payload: Uint8Array): void {
    const c = this.client;
    if (!c) return;
    if (this.peerKind === 'qis') {
      this.batch.push([topic, Uint8Array.from(payload)]);
      if (this.batch.length >= BATCH) this.flushBatch();
      else this.batchTimer ??= setImmediate(() => this.flushBatch());
      return;
    }
    const t0 = performance.now();
    this.pending++;
    this.m.pending.set({ peer: this.name }, this.pending);
    c.publish(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), { qos: 1, retain: true }, (e) => {
      if (this.client !== c) return;
      this.pending = Math.max(0, this.pending - 1);
      this.m.pending.set({ peer: this.name }, this.pending);
      if (!e) {
        this.m.forwarded.inc({ peer: this.name, direction: 'out' });
        this.m.lag.set({ peer: this.name }, performance.now() - t0);
      }
      this.afterAck();
    });
  }

  private batch: [string, Uint8Array][] = [];
  private batchTimer: NodeJS.Immediate | undefined;

  private flushBatch(): void {
    if (this.batchTimer) clearImmediate(this.batchTimer);
    this.batchTimer = undefined;
    const items = this.batch;
    this.batch = [];
    const c = this.client;
    if (items.length === 0 || !c) return;
    void this.put(c, items, false);
  }

  /** One batch of packets to a qis peer (op 'put'); resolves with how many it stored. Failures leave the rest to a catch-up. */
  private async put(c: MqttClient, items: [string, Uint8Array][], count: boolean): Promise<number> {
    const t0 = performance.now();
    this.pending += items.length;
    this.m.pending.set({ peer: this.name }, this.pending);
    let stored = 0;
    try {
      const res = await this.request(c, { op: 'put', items: items.map(([t, b]) => [t, Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64')]) }, count);
      stored = typeof res.stored === 'number' ? res.stored : 0;
      this.m.forwarded.inc({ peer: this.name, direction: 'out' }, items.length);
      this.m.lag.set({ peer: this.name }, performance.now() - t0);
    } catch (e) {
      if (this.client === c) {
        this.log.warn({ err: (e as Error).message, packets: items.length }, 'a batch to the peer failed; a catch-up will send what differs');
        this.catchUpSoon();
      }
    } finally {
      if (this.client === c) {
        this.pending = Math.max(0, this.pending - items.length);
        this.m.pending.set({ peer: this.name }, this.pending);
        this.afterAck();
      }
    }
    return stored;
  }

  private afterAck(): void {
    if (this.pending !== 0) return;
    for (const w of this.drainWaiters.splice(0)) w();
    if (this.overflow) {
      this.overflow = false;
      void this.catchUpNow();
    }
  }

  private readonly drainWaiters: (() => void)[] = [];
  private drained(): Promise<void> {
    if (this.pending === 0 || !this.client) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (topic.startsWith(FED_RES)) {
      try {
        const id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
        const w = typeof id === 'string' ? this.waiters.get(id) : undefined;
        if (w) {
          this.waiters.delete(id as string);
          w(payload);
        }
      } catch {
        this.log.warn('malformed catch-up response ignored');
      }
      return;
    }
    if (!FORWARDED_PREFIXES.some((x) => topic.startsWith(x))) return;
    if (this.inbox.length >= MAX_INBOX) {
      this.m.dropped.inc({ peer: this.name, code: 'ERR_RATE_LIMITED' });
      this.catchUpSoon();
      return;
    }
    this.inbox.push({ topic, payload });
    this.pump();
  }

  private pump(): void {
    while (this.admitting < ADMIT_CONCURRENCY && this.inbox.length > 0) {
      const m = this.inbox.shift() as { topic: string; payload: Buffer };
      this.admitting++;
      void this.admitOne(m.topic, m.payload).finally(() => {
        this.admitting--;
        this.pump();
      });
    }
  }

  /** One received packet through admission; counted per outcome. */
  private async admitOne(topic: string, payload: Buffer): Promise<'stored' | 'stale' | 'refused'> {
    const tplId = tplOf(topic);
    if (tplId !== undefined && !passes(this.p.accept, tplId)) return 'refused';
    if (!this.rate.take(this.name, this.host.now())) {
      this.m.dropped.inc({ peer: this.name, code: 'ERR_RATE_LIMITED' });
      this.catchUpSoon();
      return 'refused';
    }
    // Not newer than what we hold: dropped before any signature work (loops and echoes end here).
    if (notNewer(this.host.store, this.host.scoreStore, topic, payload)) {
      this.m.dropped.inc({ peer: this.name, code: 'ERR_SEQ_STALE' });
      return 'stale';
    }
    let r: PeerAdmission;
    try {
      r = await this.host.admit(topic, payload, this.name);
    } catch (e) {
      r = { result: 'refused', code: e instanceof QisError ? e.code : 'ERR_INTERNAL', message: (e as Error).message };
    }
    if (r.result === 'stored') this.m.forwarded.inc({ peer: this.name, direction: 'in' });
    else if (r.result === 'stale') this.m.dropped.inc({ peer: this.name, code: 'ERR_SEQ_STALE' });
    else if (r.result === 'refused') {
      this.m.refused.inc({ peer: this.name, code: r.code });
      this.log.warn({ code: r.code, topic }, `packet from peer refused: ${r.message}`);
    }
    return r.result;
  }

  /** After dropping received packets: a catch-up a little later fetches them again. */
  private catchUpSoon(delayMs = 5_000): void {
    if (this.later) return;
    this.later = setTimeout(() => {
      this.later = undefined;
      void this.catchUpNow();
    }, delayMs);
    this.later.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.later) clearTimeout(this.later);
    const c = this.client;
    this.client = undefined;
    this.connected = false;
    for (const w of this.waiters.values()) w(Buffer.alloc(0));
    this.waiters.clear();
    for (const w of this.drainWaiters.splice(0)) w();
    if (this.batchTimer) clearImmediate(this.batchTimer);
    this.batchTimer = undefined;
    if (c) await new Promise<void>((r) => c.end(true, {}, () => r()));
    await this.catching;
  }
}

/** The template id of a forwarded topic: qis/1/o/<tplId>/…, qis/1/t/<tplId>, qis/1/s/<tplId>/<nodeId>. */
function tplOf(topic: string): string | undefined {
  if (topic.startsWith('qis/1/o/')) return safeTpl(topic);
  if (topic.startsWith('qis/1/s/')) return topic.split('/')[3];
  return topic.slice('qis/1/t/'.length);
}

function safeTpl(topic: string): string | undefined {
  try {
    return parseOutcomeTopic(topic).tplId;
  } catch {
    return undefined;
  }
}

function subscribe(c: MqttClient, filters: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    c.subscribe(filters, { qos: 1 }, (e, granted) => {
      if (e) return reject(e);
      const bad = granted?.find((g) => g.qos === 128);
      if (bad) return reject(new QisError('ERR_SUBSCRIBE_DENIED', `peer refused the subscription to ${bad.topic}`));
      resolve();
    }),
  );
}

/** Publishes a marker to ourselves and waits until it comes back (after the retained messages of earlier subscriptions). */
function marker(c: MqttClient, topic: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      c.off('message', on);
      c.off('end', gone);
      reject(new QisError('ERR_TIMEOUT', 'the peer did not return the sync marker'));
    }, 30_000);
    timer.unref();
    // A link closed meanwhile (broker shutting down) ends the wait at once.
    const gone = (): void => {
      clearTimeout(timer);
      c.off('message', on);
      reject(new QisError('ERR_CLOSED', 'the link closed while waiting for the sync marker'));
    };
    c.once('end', gone);
    const on = (t: string): void => {
      if (t !== topic) return;
      c.off('end', gone);
      clearTimeout(timer);
      c.off('message', on);
      c.unsubscribe(topic);
      resolve();
    };
    c.on('message', on);
    c.subscribe(topic, { qos: 1 }, (e) => {
      if (e) {
        clearTimeout(timer);
        return reject(e);
      }
      c.publish(topic, 'm', { qos: 1 });
    });
  });
}
