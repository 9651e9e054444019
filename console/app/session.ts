/**
 * The console's one MQTT connection (over WebSocket) and what it has heard, bounded: the page
 * trusts no broker, so every buffer here has a cap, and every packet is checked by src/ code.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { decodePacket, foldCohort, topicMatches, parseOutcomeTopic, templateTopic, verifyTemplateDoc, TEMPLATE_TOPIC_PREFIX, isQisError, type Ed25519Backend, type ErrorCode, type Template, type VerifiedPacket } from '../../src/browser.js';
import { preverify, webCryptoEd25519 } from './webcrypto.js';

/**
 * Ed25519 in the browser: WebCrypto where the browser has it (src/'s `node` backend, answered by
 * verdicts computed ahead: see webcrypto.ts), else src/'s `noble` backend. Both apply the
 * project's strict RFC 8032 policy.
 */
export let backend: Ed25519Backend = 'noble';
export const cryptoReady: Promise<void> = webCryptoEd25519().then((ok) => {
  if (ok) backend = 'node';
});
export const backendName = (): string => (backend === 'node' ? 'WebCrypto Ed25519' : '@noble/ed25519');
/** Most retained messages kept per subscription; beyond it the oldest are forgotten and counted. */
export const MAX_MESSAGES = 50_000;
/** Most templates listed; a broker that sends more is not believed beyond this. */
export const MAX_TEMPLATES = 1_000;
/** Largest template document read (a template is a few hundred bytes). */
const MAX_TEMPLATE_BYTES = 64 * 1024;

export interface TemplateEntry {
  readonly tplId: string;
  readonly template?: Template;
  readonly curator?: string;
  /** Why the document was refused, when it was. */
  readonly refused?: { readonly code: ErrorCode | 'ERR_TOO_LARGE'; readonly message: string };
}

/** One outcome message and what the page's own verification made of it. */
export interface Checked {
  readonly topic: string;
  readonly size: number;
  readonly arrivedAt: number;
  readonly nodeId: string;
  /** The verified live packet. */
  readonly packet?: VerifiedPacket;
  /** A verified tombstone: the node withdrew at this seq. */
  readonly withdrawnSeq?: number;
  /** The refusal code when verification failed. */
  readonly code?: ErrorCode;
}

/**
 * Checks one message exactly as a querier does: src/'s foldCohort over this one message at the
 * template's widest level (every packet of the template), so the signature, topic, payload,
 * bucket and expiry rules are the protocol's, with the refusal code when one fails.
 */
export function checkOutcomeMessage(template: Template, topic: string, payload: Uint8Array, now: number): Checked {
  const { nodeId } = topicIds(parseOutcomeTopic, topic);
  const depth = template.fields.length;
  const fold = foldCohort([{ topic, payload }], {
    // Only the depth of the levels matters at the widest level: no level is kept.
    address: { tplId: template.tplId, levels: new Array<string>(depth).fill(''), fp: new Uint8Array(0) },
    widen: depth,
    now,
    backend,
  });
  const base = { topic, size: payload.length, arrivedAt: now, nodeId };
  const code = Object.keys(fold.dropped)[0] as ErrorCode | undefined;
  if (code) return { ...base, code };
  const packet = fold.packets[0];
  if (packet) return { ...base, packet };
  // A valid tombstone (fold.withdrawn): it verified, so decoding it again only reads its seq.
  return { ...base, withdrawnSeq: decodePacket(payload).seq };
}

/** The template and node a topic names, or '?' for a topic `parse` refuses (the check after it names the refusal). */
export function topicIds(parse: (topic: string) => { tplId: string; nodeId: string }, topic: string): { tplId: string; nodeId: string } {
  try {
    const { tplId, nodeId } = parse(topic);
    return { tplId, nodeId };
  } catch {
    return { tplId: '?', nodeId: '?' };
  }
}

type Listener = () => void;

export class Session {
  readonly client: MqttClient;
  readonly templates = new Map<string, TemplateEntry>();
  state: 'connecting' | 'connected' | 'offline' | 'error' = 'connecting';
  error = '';
  readonly #listeners = new Set<Listener>();
  readonly #handlers = new Map<string, (topic: string, payload: Uint8Array) => void>();
  readonly #now: () => number;

  constructor(url: string, auth: { username?: string; password?: string }, now: () => number = () => Date.now()) {
    this.#now = now;
    this.client = mqtt.connect(url, {
      protocolVersion: 4,
      reconnectPeriod: 2000,
      connectTimeout: 10_000,
      clean: true,
      ...(auth.username ? { username: auth.username } : {}),
      ...(auth.password ? { password: auth.password } : {}),
    });
    this.client.on('connect', () => {
      this.state = 'connected';
      this.error = '';
      this.emit();
    });
    this.client.on('offline', () => {
      this.state = 'offline';
      this.emit();
    });
    this.client.on('error', (e) => {
      this.state = 'error';
      this.error = e.message;
      this.emit();
    });
    this.client.on('message', (topic, payload) => {
      const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
      if (topic.startsWith(TEMPLATE_TOPIC_PREFIX)) this.#onTemplate(topic, bytes);
      for (const [filter, h] of this.#handlers) if (topicMatches(filter, topic)) h(topic, bytes);
    });
    this.client.subscribe(`${TEMPLATE_TOPIC_PREFIX}+`, { qos: 1 });
  }

  now(): number {
    return this.#now();
  }

  /** Template documents are checked in arrival order, after WebCrypto's verdicts (no noble warm-up on load). */
  #templates: Promise<void> = Promise.resolve();

  #templatesPending = 0;

  #onTemplate(topic: string, bytes: Uint8Array): void {
    if (this.#templatesPending >= MAX_TEMPLATES) return; // a flood of documents waits for nobody: not believed
    this.#templatesPending++;
    this.#templates = this.#templates.then(async () => {
      this.#templatesPending--;
      await cryptoReady;
      if (backend === 'node' && bytes.length > 0 && bytes.length <= MAX_TEMPLATE_BYTES) await preverify([{ topic, payload: bytes }]);
      this.#checkTemplate(topic, bytes);
    });
  }

  #checkTemplate(topic: string, bytes: Uint8Array): void {
    const tplId = topic.slice(TEMPLATE_TOPIC_PREFIX.length);
    if (bytes.length === 0) {
      this.templates.delete(tplId);
    } else if (!this.templates.has(tplId) && this.templates.size >= MAX_TEMPLATES) {
      return;
    } else if (bytes.length > MAX_TEMPLATE_BYTES) {
      this.templates.set(tplId, { tplId, refused: { code: 'ERR_TOO_LARGE', message: `${bytes.length} bytes` } });
    } else {
      try {
        const v = verifyTemplateDoc(tplId, bytes, backend);
        this.templates.set(tplId, { tplId, template: v.template, curator: v.curator });
      } catch (e) {
        if (!isQisError(e)) throw e;
        this.templates.set(tplId, { tplId, refused: { code: e.code, message: e.message } });
      }
    }
    this.emit();
  }

  /**
   * Routes messages matching `filter` to `handler` and subscribes; returns the unsubscribe. At
   * QoS 0: the page only reads what the broker retains, and a reconnection subscribes again and
   * gets all of it; QoS 1 cost a PUBACK per retained packet (a seventh of the first load).
   */
  watch(filter: string, handler: (topic: string, payload: Uint8Array) => void): () => void {
    this.#handlers.set(filter, handler);
    this.client.subscribe(filter, { qos: 0 });
    return () => {
      this.#handlers.delete(filter);
      this.client.unsubscribe(filter);
    };
  }

  on(l: Listener): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  emit(): void {
    for (const l of this.#listeners) l();
  }

  close(): void {
    this.client.end(true);
  }
}

export { templateTopic };
