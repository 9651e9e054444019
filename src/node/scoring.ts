/**
 * The node's part in Darwinism (PROTOCOL §9): it remembers the predictions its queries gave,
 * scores one when the outcome is reported and publishes its track record as a score packet
 * (through the outbox), reads rival templates' track records, and consults the template a
 * Thompson draw picks.
 */
import { toHex } from '../protocol/bytes.js';
import { QisError, type ErrorCode } from '../protocol/errors.js';
import { address, type Situation } from '../protocol/fingerprint.js';
import { jcs } from '../protocol/jcs.js';
import { checkOutcomeFits } from '../protocol/outcome.js';
import type { Outcome } from '../protocol/packet.js';
import { checkScorePacket, scoreFilter, signScorePacket, type VerifiedScore } from '../protocol/score.js';
import type { Template } from '../protocol/template.js';
import type { Synthesis } from '../synthesis/index.js';
import { addScore, predictionOf, scoreFieldsOf, scorePrediction, thompsonChoose, type PredictionScore } from '../elections/darwin.js';
import type { Connection } from './connection.js';
import { DEFAULTS, positive, throwIfAborted } from './options.js';
import { PredictionStore } from './predictions.js';
import type { Publisher } from './publisher.js';
import { readRetained } from './sync.js';
import type { Templates } from './templates.js';
import type { ConsultResult, QueryOptions, QueryResult, ReportOptions, ReportResult, ScoresResult } from './types.js';

export class Scoring {
  readonly #conn: Connection;
  readonly #publisher: Publisher;
  readonly #templates: Templates;
  readonly #query: (t: Template, situation: Situation, options: QueryOptions) => Promise<QueryResult>;
  readonly #predictions: PredictionStore;

  constructor(conn: Connection, publisher: Publisher, templates: Templates, query: (t: Template, situation: Situation, options: QueryOptions) => Promise<QueryResult>) {
    this.#conn = conn;
    this.#publisher = publisher;
    this.#templates = templates;
    this.#query = query;
    this.#predictions = new PredictionStore(conn.o.dataDir);
  }

  /** Keeps the prediction a query gave, to be scored by a later report() (PROTOCOL §9). */
  remember(template: Template, fp: Uint8Array, synthesis: Synthesis): void {
    const prediction = predictionOf(template, synthesis);
    if (!prediction) return;
    // Written durably in the background: the query's latency stays the network's. A report()
    // waits for it (the store serialises its files); close() waits too.
    this.#predictions.record(template.tplId, toHex(fp), { at: Math.floor(this.#conn.now()), prediction }).catch((e: unknown) => this.#conn.ioFailure(e));
  }

  settled(): Promise<void> {
    return this.#predictions.settled();
  }

  async scores(tplIds: readonly string[], options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ScoresResult> {
    const conn = this.#conn;
    conn.checkOpen();
    throwIfAborted(options.signal);
    positive('timeoutMs', options.timeoutMs);
    const ids = [...new Set(tplIds)];
    const deadline = conn.now() + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    const { messages, kind } = await readRetained(conn, ids.map(scoreFilter), deadline, options.signal);
    const dropped: Partial<Record<ErrorCode, number>> = {};
    const best = new Map<string, VerifiedScore>();
    for (const m of messages) {
      const r = checkScorePacket(m.topic, m.payload, { now: conn.now(), ...conn.backend() });
      if (!r.ok) {
        dropped[r.code] = (dropped[r.code] ?? 0) + 1;
        continue;
      }
      const prev = best.get(m.topic);
      if (!prev || r.score.seq > prev.seq) best.set(m.topic, r.score);
    }
    const records = ids.map((tplId) => ({ tplId, scores: [...best.values()].filter((x) => x.tplId === tplId) }));
    return { completeness: kind === 'unknown' ? 'quiet-period' : 'sync', broker: kind, records, dropped };
  }

  async consult(given: readonly (Template | string)[], situation: Situation, options: QueryOptions = {}): Promise<ConsultResult> {
    this.#conn.checkOpen();
    if (!Array.isArray(given) || given.length === 0) throw new QisError('ERR_INVALID_ARGUMENT', 'consult() needs at least one template');
    const templates: Template[] = [];
    for (const t of given) templates.push(await this.#templates.resolve(t, options.signal, options.timeoutMs));
    const outcome = jcs((templates[0] as Template).doc.outcome);
    const other = templates.find((t) => jcs(t.doc.outcome) !== outcome);
    if (other) throw new QisError('ERR_INVALID_ARGUMENT', `template ${other.doc.name} v${other.doc.version} has another outcome than ${(templates[0] as Template).doc.name}: rival templates must answer the same question`);
    const choose = this.#conn.o.choose ?? 'first';
    if (choose === 'first' || templates.length === 1) {
      const r = await this.#query(templates[0] as Template, situation, options);
      return { ...r, chosen: r.tplId, choose };
    }
    const started = this.#conn.now();
    const sc = await this.scores(
      templates.map((t) => t.tplId),
      { ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}), ...(options.signal ? { signal: options.signal } : {}) },
    );
    const draws = thompsonChoose(sc.records, this.#conn.o.chooseRandom ?? Math.random);
    const chosen = templates.find((t) => t.tplId === draws[0]?.tplId) as Template;
    const left = options.timeoutMs === undefined ? undefined : Math.max(1, options.timeoutMs - (this.#conn.now() - started));
    const r = await this.#query(chosen, situation, { ...options, ...(left !== undefined ? { timeoutMs: left } : {}) });
    return { ...r, chosen: chosen.tplId, choose, draws };
  }

  async report(t: Template | string, situation: Situation, outcome: Outcome, options: ReportOptions = {}): Promise<ReportResult> {
    const conn = this.#conn;
    conn.checkOpen();
    throwIfAborted(options.signal);
    positive('ackTimeoutMs', options.ackTimeoutMs, true);
    const template = await this.#templates.resolve(t, options.signal);
    if (options.ts !== undefined && !(Number.isSafeInteger(options.ts) && options.ts >= 0)) throw new QisError('ERR_INVALID_ARGUMENT', `ts must be Unix ms, got ${String(options.ts)}`);
    if (template.doc.outcome.kind === 'map') throw new QisError('ERR_OUTCOME_INVALID', `template ${template.doc.name}: map outcomes are not scored (PROTOCOL §9 scores labels and numbers)`);
    const actual = checkOutcomeFits(template, outcome);
    const fpHex = toHex(address(template, situation).fp);
    const observedAt = options.ts ?? Math.floor(conn.now());
    const done = await this.#publisher.serial(() => this.#scoreAndQueue(template, actual, fpHex, observedAt));
    this.#publisher.send();
    const acked = (await this.#publisher.waitAck(done.entry, options.ackTimeoutMs ?? conn.o.ackTimeoutMs, options.signal)) === 'acked';
    return {
      tplId: template.tplId,
      prediction: done.taken.prediction,
      predictedAt: done.taken.at,
      score: done.score,
      totals: done.fields,
      topic: done.entry.topic,
      seq: done.entry.seq,
      packet: this.#publisher.wire(done.entry.packet),
      acked,
    };
  }

  /** Scores the prediction, saves the totals and queues the score packet, in the outbox's turn. */
  async #scoreAndQueue(template: Template, actual: ReturnType<typeof checkOutcomeFits>, fpHex: string, observedAt: number) {
    const conn = this.#conn;
    conn.checkOpen();
    const labels = template.doc.outcome.kind === 'category' ? template.doc.outcome.labels : [];
    // Crash-safe order: count the score and queue its packet, then forget the prediction. A
    // report cut short after its totals were saved finds the prediction counted (totals.last)
    // and only queues the packet again (same seq: the broker drops a duplicate as stale).
    const taken = await this.#predictions.peek(template.tplId, fpHex, observedAt);
    if (!taken) {
      throw new QisError('ERR_NO_PREDICTION', `no unscored prediction for this situation of ${template.doc.name} v${template.doc.version} received before ${new Date(observedAt).toISOString()}: query first, then report`);
    }
    const before = await this.#predictions.totals(template.tplId);
    const counted = before.last !== undefined && before.last.fp === fpHex && before.last.at === taken.at;
    let totals = before;
    let score: PredictionScore;
    if (counted) {
      score = before.last!.score;
    } else {
      score = scorePrediction(taken.prediction, actual, labels);
      const seq = Math.max(before.seq + 1, Math.floor(conn.now()));
      totals = { ...addScore(before, taken.prediction, score, actual, observedAt), seq, last: { fp: fpHex, at: taken.at, score } };
      await this.#predictions.saveTotals(template.tplId, totals);
    }
    const fields = scoreFieldsOf(totals, totals.seq, Math.floor(conn.now()));
    const { topic, bytes } = signScorePacket(this.#publisher.key, template.tplId, fields, conn.backend());
    const entry = await this.#publisher.outbox.add('score', template.tplId, topic, totals.seq, bytes);
    await this.#predictions.forget(template.tplId, fpHex, taken.at);
    return { taken, score, fields, entry };
  }
}
