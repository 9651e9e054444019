/**
 * One link: an mqtt.js connection from this broker to a peer, reconnected with backoff and
 * jitter. On each connection it asks what the peer is, subscribes to the forwarded prefixes and
 * its answer topic, sends the template documents, then catches up (catch-up.ts). Its outbox
 * forwards what this broker admits (outbox.ts); its inbox admits what the peer sends (inbox.ts).
 */
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { backoffDelay, backoffOptions, createLogin, type ErrorCode } from '../../src/index.js';
import type { FederationOptions, PeerOptions } from '../options.js';
import { CatchUp } from './catch-up.js';
import { FED_RES, FORWARDED_PREFIXES, linkClientId, passes, type FederationHost, type LinkStatus } from './common.js';
import { Inbox } from './inbox.js';
import type { FedMetrics } from './metrics.js';
import { Requests, detectPeer, subscribe } from './mqtt.js';
import { Outbox } from './outbox.js';
import type { LinkState } from './state.js';

/** A link up this long has its reconnect backoff start again from the first step. */
const STABLE_MS = 10_000;

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

export class Link {
  readonly name: string;
  readonly #s: LinkState;
  readonly #outbox: Outbox;
  readonly #inbox: Inbox;
  readonly #catchUp: CatchUp;
  readonly #backoff: ReturnType<typeof backoffOptions>;
  #closed = false;
  #attempt = 0;
  #upSince = 0;
  #retry: NodeJS.Timeout | undefined;
  readonly #region: string;
  #error: ErrorCode | undefined;

  constructor(p: PeerOptions, i: number, o: FederationOptions, host: FederationHost, m: FedMetrics) {
    this.name = peerName(p, i);
    const clientId = linkClientId(o.region, i);
    this.#region = o.region;
    this.#s = { name: this.name, clientId, peer: p, host, m, log: host.logger.child({ peer: this.name }), requests: new Requests(clientId, this.name), client: undefined, connected: false, peerKind: 'unknown', peerRegion: undefined };
    const behind = { now: () => void this.#catchUp.now(), soon: () => this.#catchUp.soon() };
    this.#outbox = new Outbox(this.#s, behind, o.putTimeoutMs);
    this.#inbox = new Inbox(this.#s, behind);
    this.#catchUp = new CatchUp(this.#s, this.#outbox, this.#inbox, o.followUpMs ?? 0);
    this.#backoff = backoffOptions(o.reconnect ?? {});
    m.up.set({ peer: this.name }, 0);
    this.#connect();
  }

  status(): LinkStatus {
    const s = this.#s;
    return {
      peer: this.name,
      connected: s.connected,
      peerKind: s.peerKind,
      ...(s.peerRegion !== undefined ? { region: s.peerRegion } : {}),
      ...(this.#error !== undefined ? { error: this.#error } : {}),
      retrying: this.#outbox.retrying(),
      ...this.#catchUp.status(),
    };
  }

  /** The peer's region, once its qis/1/broker said it. */
  get region(): string | undefined {
    return this.#s.peerRegion;
  }

  get peer(): PeerOptions {
    return this.#s.peer;
  }

  /** Forwards a packet this broker admitted. */
  forward(topic: string, payload: Uint8Array): void {
    this.#outbox.forward(topic, payload);
  }

  /** Runs a catch-up now (or once more after the running one). */
  catchUpNow(): Promise<void> {
    return this.#catchUp.now();
  }

  /**
   * The client options of one attempt; files are read at every attempt (certificates rotate). A
   * peer entry without a user name or client certificate logs in with this broker's key
   * (PROTOCOL §11, a fresh ts at every attempt), so the peer can name it in `auth.peers`.
   */
  #clientOptions(): IClientOptions {
    const p = this.#s.peer;
    const read = (f: string): Buffer => readFileSync(f);
    const key = this.#s.host.key;
    const login = key !== undefined && p.username === undefined && p.cert === undefined ? createLogin(key, { clientId: this.#s.clientId, ts: Math.floor(this.#s.host.now()) }) : undefined;
    return {
      ...(login ? { username: login.username, password: Buffer.from(login.password) } : {}),
      clientId: this.#s.clientId,
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
  }

  #connect(): void {
    if (this.#closed) return;
    const log = this.#s.log;
    let opts: IClientOptions;
    try {
      opts = this.#clientOptions();
    } catch (e) {
      // A missing file is logged and retried, never thrown from a timer.
      log.error({ code: 'ERR_FILE_IO', err: (e as Error).message }, 'federation link cannot read its TLS or password file');
      this.#scheduleReconnect();
      return;
    }
    let c: MqttClient;
    try {
      c = mqtt.connect(this.#s.peer.url, opts);
    } catch (e) {
      log.error({ err: (e as Error).message }, 'federation link cannot connect');
      this.#scheduleReconnect();
      return;
    }
    this.#s.client = c;
    c.on('connect', () => {
      // TCP_NODELAY: a batch of one goes now, not after the peer's delayed ACK of the last one (Nagle).
      (c.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      void this.#onConnect(c);
    });
    c.on('message', (topic, payload) => this.#onMessage(topic, payload));
    c.on('error', (e) => log.debug({ err: e.message }, 'federation link error'));
    c.on('close', () => this.#onClose(c));
  }

  #onClose(c: MqttClient): void {
    const s = this.#s;
    if (s.client !== c) return;
    if (s.connected) s.log.warn('federation link down');
    s.connected = false;
    s.m.up.set({ peer: this.name }, 0);
    if (this.#upSince > 0 && s.host.now() - this.#upSince >= STABLE_MS) this.#attempt = 0;
    this.#upSince = 0;
    c.removeAllListeners('message');
    c.end(true);
    s.client = undefined;
    this.#outbox.disconnected();
    s.requests.failAll(c);
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#retry) return;
    const delay = backoffDelay(this.#attempt++, this.#backoff, Math.random);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#connect();
    }, delay);
    this.#retry.unref();
  }

  async #onConnect(c: MqttClient): Promise<void> {
    const s = this.#s;
    s.connected = true;
    this.#upSince = s.host.now();
    s.m.up.set({ peer: this.name }, 1);
    s.log.info({ clientId: s.clientId }, 'federation link up');
    try {
      const info = await detectPeer(c);
      s.peerKind = info.kind;
      s.peerRegion = info.region;
      if (info.region === this.#region) {
        // Two brokers of one region would each take the other's packets for their own region's and
        // fight over the link: refused, loudly, and tried again only at the backoff cap.
        this.#error = 'ERR_REGION_CONFLICT';
        s.log.error({ code: 'ERR_REGION_CONFLICT', region: info.region }, `federation peer ${this.name} has this broker's region name ${JSON.stringify(info.region)}; give each region its own name (link stays down)`);
        this.#attempt = 64;
        c.end(true);
        return;
      }
      this.#error = undefined;
      // Answers at QoS 0 (see Requests.request); forwarded packets at QoS 1.
      await subscribe(c, [`${FED_RES}${s.clientId}`], 0);
      await subscribe(c, FORWARDED_PREFIXES.map((x) => `${x}#`));
      // Template documents first: a peer with a closed mind about depth needs them before packets;
      // revocation lists too (a revoked key's packets are refused). Admitted before the catch-up starts.
      const first: [string, Uint8Array][] = [];
      for (const [topic, bytes] of s.host.templates()) if (passes(s.peer.share, topic.slice('qis/1/t/'.length))) first.push([topic, bytes]);
      for (const [topic, bytes] of s.host.revocations?.() ?? []) first.push([topic, bytes]);
      await this.#outbox.sendFirst(c, first);
      await this.#catchUp.now();
    } catch (e) {
      if (s.client === c) s.log.warn({ err: (e as Error).message }, 'federation link setup failed; reconnecting');
      c.end(true);
    }
  }

  #onMessage(topic: string, payload: Buffer): void {
    if (topic.startsWith(FED_RES)) {
      if (!this.#s.requests.answered(payload)) this.#s.log.warn('malformed catch-up response ignored');
      return;
    }
    if (FORWARDED_PREFIXES.some((x) => topic.startsWith(x))) this.#inbox.receive(topic, payload);
  }

  async close(): Promise<void> {
    const s = this.#s;
    this.#closed = true;
    if (this.#retry) clearTimeout(this.#retry);
    const c = s.client;
    s.client = undefined;
    s.connected = false;
    s.requests.failAll(c);
    this.#outbox.close();
    this.#inbox.close();
    const settled = this.#catchUp.close();
    if (c) await new Promise<void>((r) => c.end(true, {}, () => r()));
    await settled;
  }
}
