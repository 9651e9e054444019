/**
 * Admission (PROTOCOL §6) as pure functions: what the broker does with one PUBLISH, given what
 * verification found and what the store holds. The Aedes wiring (broker/server.ts) only carries
 * out the decision.
 */
import { QisError, isTplId, nodeIdOf, parseOutcomeTopic, parseScoreTopic, toHex, topicMatches, verifyTemplateDoc, type CheckResult, type ErrorCode } from '../src/index.js';
import type { AclRule, AdmissionOptions } from './options.js';

/** Which rules a topic falls under. */
export type TopicClass = 'outcome' | 'template' | 'score' | 'revocation' | 'sync' | 'broker-info' | 'qis-reserved' | 'ordinary';

export const SYNC_PREFIX = 'qis/1/sync/';
export const BROKER_INFO_TOPIC = 'qis/1/broker';

/** Classifies a PUBLISH topic. */
export function classify(topic: string): TopicClass {
  if (!topic.startsWith('qis/1/')) return 'ordinary';
  if (topic.startsWith('qis/1/o/')) return 'outcome';
  if (topic.startsWith('qis/1/t/')) return 'template';
  if (topic.startsWith('qis/1/s/')) return 'score';
  if (topic.startsWith('qis/1/r/')) return 'revocation';
  if (topic.startsWith(SYNC_PREFIX)) return 'sync';
  if (topic === BROKER_INFO_TOPIC) return 'broker-info';
  return 'qis-reserved';
}

/** What the broker does with a publish. */
export type Decision =
  /** Store it (a newer packet, or a tombstone that removes the node's packet), then forward it. */
  | { readonly action: 'store'; readonly del: boolean }
  /** Acknowledge and drop, without disconnecting (a stale seq: a replay or an honest resend). */
  | { readonly action: 'drop'; readonly code: ErrorCode; readonly message: string }
  /** Refuse: count, log, and disconnect the client (forged, malformed, not allowed…). */
  | { readonly action: 'refuse'; readonly code: ErrorCode; readonly message: string }
  /** Let it through unchanged (ordinary topics allowed by the ACL, sync markers). */
  | { readonly action: 'pass' };

const refuse = (code: ErrorCode, message: string): Decision => ({ action: 'refuse', code, message });

/** The checks that need no signature work: done first, so junk costs no verification. */
export interface Precheck {
  readonly tplId: string;
  readonly nodeId: string;
  /** Routed fields of the template when the broker knows it (the topic must have that many levels). */
  readonly depth?: number;
}

/**
 * Cheap admission checks of an outcome publish: topic form, registry, empty payload, size.
 * @returns the parsed ids, or a refusal
 */
export function precheckOutcome(
  topic: string,
  payloadLength: number,
  o: Pick<AdmissionOptions, 'registry' | 'templates'>,
  depthOf: (tplId: string) => number | undefined,
): Precheck | Decision {
  let parsed;
  try {
    parsed = parseOutcomeTopic(topic);
  } catch (e) {
    return refuse('ERR_TOPIC_INVALID', (e as Error).message);
  }
  const depth = depthOf(parsed.tplId);
  // A closed registry admits the listed ids and the templates it registered (documents it holds,
  // which in closed mode are listed ids or signed by a listed curator).
  if (o.registry === 'closed' && !o.templates.includes(parsed.tplId) && depth === undefined) {
    return refuse('ERR_TEMPLATE_UNKNOWN', `template ${parsed.tplId} is not in this broker's registry`);
  }
  if (depth !== undefined && parsed.levels.length !== depth) {
    return refuse('ERR_TOPIC_INVALID', `template ${parsed.tplId} routes on ${depth} fields; the topic has ${parsed.levels.length} levels`);
  }
  if (payloadLength === 0) return refuse('ERR_PACKET_EMPTY', 'an empty retained payload cannot delete a packet here: publish a signed tombstone (del: true)');
  if (payloadLength > 512) return refuse('ERR_PACKET_TOO_LARGE', `packet of ${payloadLength} bytes; at most 512`);
  return depth === undefined ? { tplId: parsed.tplId, nodeId: parsed.nodeId } : { tplId: parsed.tplId, nodeId: parsed.nodeId, depth };
}

/** True when `x` is a decision rather than a precheck result. */
export function isDecision(x: Precheck | Decision): x is Decision {
  return 'action' in x;
}

/** The fields of a verified packet admission needs (what a verify worker sends back). */
export interface Verified {
  readonly seq: number;
  readonly del: boolean;
  readonly exp?: number;
}

/**
 * The decision after verification: a refused check refuses (and disconnects); a seq not above
 * the stored one is dropped quietly; anything else is stored.
 * @param storedSeq the highest seq the store knows for (node, template), live or deleted
 */
export function decide(check: { ok: true; packet: Verified } | { ok: false; code: ErrorCode; message: string }, storedSeq: number | undefined): Decision {
  if (!check.ok) return refuse(check.code, check.message);
  const p = check.packet;
  if (storedSeq !== undefined && p.seq <= storedSeq) {
    return { action: 'drop', code: 'ERR_SEQ_STALE', message: `seq ${p.seq} is not above the stored ${storedSeq}` };
  }
  return { action: 'store', del: p.del };
}

/** Narrows a full {@link CheckResult} to what {@link decide} needs. */
export function verifiedOf(r: CheckResult): { ok: true; packet: Verified } | { ok: false; code: ErrorCode; message: string } {
  if (!r.ok) return r;
  const p = r.packet;
  return { ok: true, packet: p.exp === undefined ? { seq: p.seq, del: p.del } : { seq: p.seq, del: p.del, exp: p.exp } };
}

/**
 * A sync marker (PROTOCOL §7) may only be published by the client it names, and never retained.
 */
export function checkSync(topic: string, clientId: string, retain: boolean): Decision {
  // The client id may itself contain '/', so compare the whole prefix, then one nonce level.
  const own = `${SYNC_PREFIX}${clientId}/`;
  if (!topic.startsWith(own) || topic.length === own.length || topic.indexOf('/', own.length) >= 0) {
    return refuse('ERR_NOT_AUTHORIZED', `${topic} is not a sync topic of client "${clientId}" (qis/1/sync/<clientId>/<nonce>)`);
  }
  if (retain) return refuse('ERR_NOT_AUTHORIZED', 'a sync marker must not be retained');
  return { action: 'pass' };
}

/**
 * A rule's filter with `%u` (the authenticated user) and `%c` (the client id) put in, or
 * undefined when the rule cannot apply: `%u` for an anonymous client. A value holding '/', '+'
 * or '#' would widen the filter (client id `a/#`), so then an allow rule does not apply and a
 * deny rule denies every topic: a hostile name can only lose access, never gain it.
 */
export function aclFilter(rule: AclRule, clientId: string, user: string | undefined): string | undefined {
  if (!rule.topic.includes('%')) return rule.topic;
  const usesUser = rule.topic.includes('%u');
  if (usesUser && user === undefined) return undefined;
  const unsafe = (v: string): boolean => /[/+#]/.test(v);
  if (unsafe(clientId) && rule.topic.includes('%c')) return rule.allow ? undefined : '#';
  if (usesUser && unsafe(user ?? '')) return rule.allow ? undefined : '#';
  return rule.topic.replaceAll('%u', user ?? '').replaceAll('%c', clientId);
}

/** Whether a rule's `clients` and `users` lists name this client. */
function ruleFor(r: AclRule, clientId: string, user: string | undefined): boolean {
  if (r.clients && !r.clients.includes(clientId)) return false;
  if (r.users && (user === undefined || !r.users.includes(user))) return false;
  return true;
}

/** The first matching ACL rule decides; no rule matches → allowed (the default is allow). `user`: the authenticated user, undefined when anonymous. */
export function aclAllows(rules: readonly AclRule[], topic: string, clientId: string, user?: string): boolean {
  for (const r of rules) {
    if (!ruleFor(r, clientId, user)) continue;
    const f = aclFilter(r, clientId, user);
    if (f !== undefined && topicMatches(f, topic)) return r.allow;
  }
  return true;
}

/**
 * Whether a subscription filter is covered by an ACL rule's filter: used for SUBSCRIBE, where
 * the client gives a filter, not a topic. A rule covers a filter when every topic the filter
 * can match, the rule matches too (checked level by level).
 */
export function filterCovers(rule: string, filter: string): boolean {
  const r = rule.split('/');
  const f = filter.split('/');
  for (let i = 0; i < r.length; i++) {
    const rl = r[i];
    if (rl === '#') return true;
    const fl = f[i];
    if (fl === undefined) return false;
    if (fl === '#') return false; // the filter reaches deeper than this rule level allows
    if (rl === '+') continue;
    if (fl === '+' || fl !== rl) return false;
  }
  return f.length === r.length;
}

/** ACL decision for SUBSCRIBE: first rule that covers or overlaps the filter decides. */
export function aclAllowsSubscribe(rules: readonly AclRule[], filter: string, clientId: string, user?: string): boolean {
  // A deny rule that merely overlaps the filter (`#` against `secret/#`) does not refuse it:
  // like Mosquitto, the filter is granted and the denied topics' messages are withheld one by one
  // (aclAllowsForward). Only a rule covering the whole filter decides the SUBSCRIBE.
  for (const r of rules) {
    if (!ruleFor(r, clientId, user)) continue;
    const f = aclFilter(r, clientId, user);
    if (f === undefined) continue;
    if (filterCovers(f, filter)) return r.allow;
  }
  return true;
}

/** PROTOCOL §7: a filter naming the sync topics of another client id (`qis/1/sync/<other>/…`, `qis/1/sync/+/…`). */
export function namesOthersSync(filter: string, clientId: string): boolean {
  const l = filter.split('/');
  // Wildcards above the level (`#`, `qis/1/+/…`) are granted; their messages are filtered (aclAllowsForward).
  if (l[0] !== 'qis' || l[1] !== '1' || l[2] !== 'sync') return false;
  // A client id may hold '/', so its sync topics are a prefix; one holding a wildcard has none.
  return /[+#]/.test(clientId) || !filter.startsWith(`qis/1/sync/${clientId}/`);
}

/**
 * Whether a message on `topic` may go to `clientId` through a granted (wildcard) filter: the
 * subscribe ACL's topic-level verdict, and never another client's sync marker (PROTOCOL §7).
 */
export function aclAllowsForward(rules: readonly AclRule[], topic: string, clientId: string, user?: string): boolean {
  if (topic.startsWith('qis/1/sync/') && !topic.startsWith(`qis/1/sync/${clientId}/`)) return false;
  return rules.length === 0 || aclAllows(rules, topic, clientId, user);
}

/** True when some topic matches both filters. */
export function filtersOverlap(a: string, b: string): boolean {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; ; i++) {
    const p = x[i];
    const q = y[i];
    if (p === '#' || q === '#') return true;
    if (p === undefined || q === undefined) return p === q;
    if (p !== '+' && q !== '+' && p !== q) return false;
  }
}

/** A token bucket per key (rate per second, burst): the broker's publish rate keys it on who publishes (server/publish-rate.ts). */
export class RateLimiter {
  readonly #rate: number;
  readonly #burst: number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  constructor(ratePerSecond: number, burst: number) {
    this.#rate = ratePerSecond;
    this.#burst = burst;
  }
  /** Takes one token for `clientId` (any key); false when the bucket is empty. Always true when the rate is 0 (off). */
  take(clientId: string, now: number): boolean {
    if (this.#rate <= 0) return true;
    let b = this.#buckets.get(clientId);
    if (!b) {
      b = { tokens: this.#burst, at: now };
      this.#buckets.set(clientId, b);
    }
    b.tokens = Math.min(this.#burst, b.tokens + ((now - b.at) / 1000) * this.#rate);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
  /**
   * Forgets buckets that have refilled completely: they behave exactly like a new one, so memory
   * stays bounded by the clients active within one refill period. (Forgetting on disconnect would
   * let a refused client reconnect with a full burst.)
   */
  prune(now: number): void {
    if (this.#rate <= 0) return;
    for (const [id, b] of this.#buckets) if (b.tokens + ((now - b.at) / 1000) * this.#rate >= this.#burst) this.#buckets.delete(id);
  }
}

/** The rate limit as a decision: refuse with ERR_RATE_LIMITED when the key's bucket is empty. */
export function checkRate(limiter: RateLimiter, key: string, now: number): Decision {
  return limiter.take(key, now) ? { action: 'pass' } : refuse('ERR_RATE_LIMITED', `${key} exceeded the publish rate limit`);
}

/** MQTT 3.1.1 [MQTT-3.1.3-8]: a zero-length client id is only allowed with clean session. */
export function checkConnect(clientId: string, clean: boolean): Decision {
  return clientId === '' && !clean ? refuse('ERR_CLIENT_ID', 'a zero-length client id requires clean session (CONNACK 2, identifier rejected)') : { action: 'pass' };
}

/** True when a curator entry (node id, or public key hex) names this key. */
export function isListedCurator(curators: readonly string[], kid: Uint8Array): boolean {
  if (curators.length === 0) return false;
  const id = nodeIdOf(kid);
  const hex = toHex(kid);
  return curators.some((c) => c === id || c.toLowerCase() === hex);
}

/**
 * A template document on `qis/1/t/<tplId>` (PROTOCOL §4): a COSE_Sign1 whose kid signed it for
 * this topic, whose payload hashes to tplId and is that template's canonical JSON. A closed
 * registry admits it when tplId is listed or its curator (the kid) is.
 */
export function checkTemplateDoc(
  topic: string,
  payload: Uint8Array,
  o: Pick<AdmissionOptions, 'registry' | 'templates'> & { readonly curators?: readonly string[] },
): { ok: true; tplId: string; depth: number; curator: string } | { ok: false; code: ErrorCode; message: string } {
  const tplId = topic.slice('qis/1/t/'.length);
  const curators = o.curators ?? [];
  const listed = o.registry === 'open' || o.templates.includes(tplId);
  // Without curator keys, an unlisted id is refused before any signature work.
  if (!listed && curators.length === 0) return { ok: false, code: 'ERR_TEMPLATE_UNKNOWN', message: `template ${tplId} is not in this broker's registry` };
  if (payload.length === 0) return { ok: false, code: 'ERR_PACKET_EMPTY', message: 'an empty payload cannot delete a template' };
  if (!isTplId(tplId)) return { ok: false, code: 'ERR_TOPIC_INVALID', message: `${topic} is not qis/1/t/<tplId> (26 lowercase base32 characters)` };
  let v;
  try {
    v = verifyTemplateDoc(tplId, payload);
  } catch (e) {
    const code: ErrorCode = e instanceof QisError ? e.code : 'ERR_TEMPLATE_HASH';
    return { ok: false, code, message: (e as Error).message };
  }
  if (!listed && !isListedCurator(curators, v.curatorKey)) {
    return { ok: false, code: 'ERR_TEMPLATE_UNKNOWN', message: `template ${tplId} is not in this broker's registry and its curator ${v.curator} is not a listed curator` };
  }
  return { ok: true, tplId, depth: v.template.fields.length, curator: v.curator };
}

// ------------------------------------------------------------------------------ score packets (PROTOCOL §9)

/**
 * Cheap admission checks of a score publish (`qis/1/s/<tplId>/<nodeId>`): topic form, registry,
 * empty payload, size. The envelope, owner, signature and skew are checked by verifyScorePacket.
 */
export function precheckScore(
  topic: string,
  payloadLength: number,
  o: Pick<AdmissionOptions, 'registry' | 'templates'>,
  registered: (tplId: string) => boolean = () => false,
): { tplId: string; nodeId: string } | Decision {
  let parsed;
  try {
    parsed = parseScoreTopic(topic);
  } catch (e) {
    return refuse('ERR_TOPIC_INVALID', (e as Error).message);
  }
  // As for outcome packets: the listed ids and the templates the registry holds (registered by a
  // listed curator) are admitted by a closed registry.
  if (o.registry === 'closed' && !o.templates.includes(parsed.tplId) && !registered(parsed.tplId)) {
    return refuse('ERR_TEMPLATE_UNKNOWN', `template ${parsed.tplId} is not in this broker's registry`);
  }
  if (payloadLength === 0) return refuse('ERR_PACKET_EMPTY', 'an empty retained payload cannot delete a score packet');
  if (payloadLength > 512) return refuse('ERR_PACKET_TOO_LARGE', `score packet of ${payloadLength} bytes; at most 512`);
  return { tplId: parsed.tplId, nodeId: parsed.nodeId };
}

/**
 * Score packets live in a second store (the outcome store's format is keyed by outcome topics):
 * each is filed under the outcome-shaped key `qis/1/o/<tplId>/<SCORE_LEVEL>/<nodeId>`, which keeps
 * one packet per (template, node) with the same seq rule, and is served back under its own topic.
 */
export const SCORE_LEVEL = 'ssssssssss';

/** The key a score packet is filed under in the score store. */
export function scoreStoreTopic(tplId: string, nodeId: string): string {
  return `qis/1/o/${tplId}/${SCORE_LEVEL}/${nodeId}`;
}

/** The score topic of a score-store key. */
export function scoreTopicOfStored(stored: string): string {
  const p = stored.split('/');
  return `qis/1/s/${p[3]}/${p[5]}`;
}

/**
 * The score-store filter that covers every score topic a subscription filter can match (the
 * caller still checks each topic against the filter), or undefined when it matches none.
 */
export function scoreStoreFilter(filter: string): string | undefined {
  if (!filtersOverlap(filter, 'qis/1/s/+/+')) return undefined;
  const f = filter.split('/');
  const tpl = f[3] !== undefined && f[3] !== '#' ? f[3] : '+';
  const node = f.length === 5 && f[4] !== '#' ? f[4] : '+';
  return `qis/1/o/${tpl}/${SCORE_LEVEL}/${node}`;
}
