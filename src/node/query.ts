/**
 * Cohort queries (PROTOCOL §7): one read of a cohort's retained packets, folded (one verified live
 * packet per node) and synthesised; with `includeSuperseded`, also the cohorts of the templates
 * the template supersedes while their routing is unchanged (docs/registry.md).
 */
import { isQisError, type ErrorCode } from '../protocol/errors.js';
import { address, cohortFilter, type Situation } from '../protocol/fingerprint.js';
import type { VerifiedPacket } from '../protocol/packet.js';
import type { Template } from '../protocol/template.js';
import { sameRouting, supersedesOf } from '../protocol/template-doc.js';
import { synthesize, type Synthesis, type SynthesisOptions, type SynthPacket } from '../synthesis/index.js';
import type { Connection } from './connection.js';
import { CohortStream } from './cohort-verify.js';
import { checkWiden, DEFAULTS, positive, throwIfAborted } from './options.js';
import { readRetained } from './sync.js';
import { applyTrust, revocationFilters, splitRevocations, trustedOperators } from './trusted.js';
import type { Templates } from './templates.js';
import type { QueryOptions, QueryResult } from './types.js';

/** Keeps the prediction a query gave (for a later report, PROTOCOL §9). */
export type Remember = (template: Template, fp: Uint8Array, synthesis: Synthesis) => void;

type Version = { template: Template; r: QueryResult };

export class Query {
  readonly #conn: Connection;
  readonly #templates: Templates;
  readonly #remember: Remember;

  constructor(conn: Connection, templates: Templates, remember: Remember) {
    this.#conn = conn;
    this.#templates = templates;
    this.#remember = remember;
  }

  async query(t: Template | string, situation: Situation, options: QueryOptions = {}): Promise<QueryResult> {
    this.#conn.checkOpen();
    throwIfAborted(options.signal);
    const started = this.#conn.now();
    const template = await this.#templates.resolve(t, options.signal, options.timeoutMs);
    if (options.includeSuperseded === true) return this.#queryVersions(template, situation, options, started);
    return this.#queryOne(template, situation, options, started);
  }

  async #queryOne(template: Template, situation: Situation, options: QueryOptions, started: number): Promise<QueryResult> {
    const conn = this.#conn;
    const widen = options.widen ?? 0;
    checkWiden(template, widen);
    positive('timeoutMs', options.timeoutMs);
    const addr = address(template, situation);
    const filter = cohortFilter(addr, widen);
    const deadline = started + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    const operators = options.trust === undefined ? undefined : trustedOperators(options.trust);
    // The packets are checked as they arrive (src/node/cohort-verify.ts), against the time the read
    // started; revocation lists (PROTOCOL §10: same round trip, before the sync marker) are not the cohort's.
    const revocationTopics = new Set(operators ? revocationFilters(operators) : []);
    const stream = new CohortStream({ address: addr, widen, now: conn.now(), ...conn.backend() }, (topic) => !revocationTopics.has(topic));
    const { messages, kind } = await readRetained(conn, operators ? [filter, ...revocationTopics] : filter, deadline, options.signal, stream).catch((e: unknown) => {
      stream.reset(); // abandoned: its batches still waiting for a thread are not checked
      throw e;
    });
    const now = conn.now();
    const dropped: Partial<Record<ErrorCode, number>> = {};
    const lists = operators ? splitRevocations(messages, operators, dropped, now).lists : [];
    const fold = await stream.finish();
    for (const [c, n] of Object.entries(dropped) as [ErrorCode, number][]) fold.dropped[c] = (fold.dropped[c] ?? 0) + n;
    const trusted = operators
      ? applyTrust(fold.packets, { operators, lists, now, ...(options.maxOperatorShare !== undefined ? { maxOperatorShare: options.maxOperatorShare } : {}) })
      : undefined;
    // With trust, the operator cap is the Sybil control: synthesis's node cap (default 2/N) would
    // move weight from the capped operator's honest peers back to its many light nodes and break the
    // per-operator bound, so it is off unless asked for.
    const so = trusted && options.maxNodeShare === undefined ? { ...synthesisOptions(options), maxNodeShare: 1 } : synthesisOptions(options);
    const synthesis = synthesize(template, trusted ? trusted.synth : synthPackets(fold.packets), so);
    if (options.remember !== false) this.#remember(template, addr.fp, synthesis);
    return {
      tplId: template.tplId,
      filter,
      widen,
      completeness: kind === 'unknown' ? 'quiet-period' : 'sync',
      broker: kind,
      ...fold,
      ...(trusted ? { packets: trusted.packets, trust: trusted.report } : {}),
      synthesis,
      elapsedMs: conn.now() - started,
    };
  }

  /**
   * A query over a template and the chain of templates it supersedes whose routing is unchanged
   * ({@link sameRouting}): one cohort read per version, merged one packet per node (the newest
   * template's packet wins), synthesised together.
   */
  async #queryVersions(template: Template, situation: Situation, options: QueryOptions, started: number): Promise<QueryResult> {
    const { results, notIncluded } = await this.#readVersions(template, situation, options, started);
    const first = results[0]!.r;
    const remember = (synthesis: Synthesis): void => {
      if (options.remember !== false) this.#remember(template, address(template, situation).fp, synthesis);
    };
    if (results.length === 1) remember(first.synthesis);
    if (results.length === 1) return { ...first, versions: [{ tplId: template.tplId, name: template.doc.name, version: template.doc.version, packets: first.packets.length }], notIncluded, elapsedMs: this.#conn.now() - started };
    const byNode = new Set<string>();
    const packets: VerifiedPacket[] = [];
    const versions = results.map(({ template: t, r }) => {
      let n = 0;
      for (const p of r.packets) {
        if (byNode.has(p.nodeId)) continue;
        byNode.add(p.nodeId);
        packets.push(p);
        n++;
      }
      return { tplId: t.tplId, name: t.doc.name, version: t.doc.version, packets: n };
    });
    const dropped: Partial<Record<ErrorCode, number>> = {};
    for (const { r } of results) for (const [c, n] of Object.entries(r.dropped) as [ErrorCode, number][]) dropped[c] = (dropped[c] ?? 0) + n;
    const sum = (f: (r: QueryResult) => number): number => results.reduce((a, x) => a + f(x.r), 0);
    const synthesis = synthesize(template, synthPackets(packets), synthesisOptions(options));
    remember(synthesis);
    return {
      ...first,
      packets,
      received: sum((r) => r.received),
      dropped,
      superseded: sum((r) => r.superseded),
      withdrawn: sum((r) => r.withdrawn),
      duplicates: sum((r) => r.duplicates) + sum((r) => r.packets.length) - packets.length,
      synthesis,
      elapsedMs: this.#conn.now() - started,
      versions,
      notIncluded,
    };
  }

  /** Each version's own answer, newest first, following `supersedes` while the routing holds. */
  async #readVersions(template: Template, situation: Situation, options: QueryOptions, started: number): Promise<{ results: Version[]; notIncluded: { tplId: string; reason: string }[] }> {
    const results: Version[] = [];
    const notIncluded: { tplId: string; reason: string }[] = [];
    const deadline = started + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    const seen = new Set<string>([template.tplId]);
    let current: Template | undefined = template;
    while (current) {
      const left = Math.max(1, deadline - this.#conn.now());
      // Each version's own answer is not what the caller is given: only the merged one is remembered.
      results.push({ template: current, r: await this.#queryOne(current, situation, { ...options, timeoutMs: left, remember: false }, this.#conn.now()) });
      const older = supersedesOf(current);
      current = undefined;
      if (older === undefined || seen.has(older)) break;
      seen.add(older);
      let t: Template;
      try {
        t = await this.#templates.template(older, { timeoutMs: Math.max(1, deadline - this.#conn.now()), ...(options.signal ? { signal: options.signal } : {}) });
      } catch (e) {
        if (!isQisError(e) || e.code === 'ERR_CLOSED' || e.code === 'ERR_ABORTED' || e.code === 'ERR_TIMEOUT') throw e;
        notIncluded.push({ tplId: older, reason: `${e.code}: ${e.message}` });
        break;
      }
      const same = sameRouting(template, t);
      if (!same.ok) {
        notIncluded.push({ tplId: older, reason: same.reason });
        break;
      }
      current = t;
    }
    return { results, notIncluded };
  }
}

/** The outcome-bearing packets of a cohort as synthesis reads them (tombstones carry none). */
function synthPackets(packets: readonly VerifiedPacket[]): SynthPacket[] {
  // A loop, not flatMap with a spread: this runs after the cohort's last batch, with the cores idle.
  const out: SynthPacket[] = [];
  for (const p of packets) {
    if (p.out === undefined) continue;
    out.push(p.ctx ? { nodeId: p.nodeId, out: p.out, conf: p.conf, n: p.n, ts: p.ts, ctx: p.ctx } : { nodeId: p.nodeId, out: p.out, conf: p.conf, n: p.n, ts: p.ts });
  }
  return out;
}

function synthesisOptions(o: QueryOptions): SynthesisOptions {
  const { widen: _w, timeoutMs: _t, signal: _s, includeSuperseded: _i, remember: _r, trust: _tr, maxOperatorShare: _m, ...rest } = o;
  return rest;
}
