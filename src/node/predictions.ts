/**
 * What a node remembers for scoring (PROTOCOL §9), in its data directory:
 * - `predictions/<tplId>/<fp hex>.json`: the newest unscored predictions it received for one
 *   situation (at most {@link MAX_PER_SITUATION}, newest last), written durably on each query;
 * - `scores/<tplId>.json`: its running totals for the template and the last score seq.
 *
 * One file per situation keeps every write small; a node meets few distinct situations.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EMPTY_TOTALS, type Prediction, type ScoreTotals } from '../elections/darwin.js';
import { ensureDir, ioError, writeFileDurable } from './durable.js';
import { REL_BINS } from '../protocol/score.js';

/** Unscored predictions kept per situation. */
export const MAX_PER_SITUATION = 8;

/** A prediction as stored: when it was received (Unix ms) and what it said. */
export interface StoredPrediction {
  readonly at: number;
  readonly prediction: Prediction;
}

async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as unknown;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if (e instanceof SyntaxError) return undefined; // a damaged file only loses what it held
    throw ioError(path, e);
  }
}

function isPrediction(x: unknown): x is StoredPrediction {
  if (typeof x !== 'object' || x === null) return false;
  const { at, prediction: p } = x as { at?: unknown; prediction?: { kind?: unknown; probs?: unknown; value?: unknown } };
  if (typeof at !== 'number' || typeof p !== 'object' || p === null) return false;
  if (p.kind === 'number') return typeof p.value === 'number' && Number.isFinite(p.value);
  return p.kind === 'category' && typeof p.probs === 'object' && p.probs !== null && Object.values(p.probs).every((v) => typeof v === 'number' && Number.isFinite(v));
}

function isLast(v: unknown): v is NonNullable<ScoreTotals['last']> {
  if (!v || typeof v !== 'object') return false;
  const l = v as { fp?: unknown; at?: unknown; score?: unknown };
  return typeof l.fp === 'string' && typeof l.at === 'number' && !!l.score && typeof l.score === 'object';
}

export class PredictionStore {
  readonly #dir: string;
  readonly #scoresDir: string;
  /** Serialises read-modify-write of the files. */
  #chain: Promise<unknown> = Promise.resolve();

  constructor(dataDir: string) {
    this.#dir = join(dataDir, 'predictions');
    this.#scoresDir = join(dataDir, 'scores');
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn, fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** Resolves when every write started so far has finished (or failed). */
  settled(): Promise<void> {
    return this.#chain.then(() => undefined);
  }

  #file(tplId: string, fpHex: string): string {
    return join(this.#dir, tplId, `${fpHex}.json`);
  }

  async #read(tplId: string, fpHex: string): Promise<StoredPrediction[]> {
    const j = await readJson(this.#file(tplId, fpHex));
    return Array.isArray(j) ? j.filter(isPrediction) : [];
  }

  /** Remembers a prediction received for a situation (durably; operations run in call order). */
  record(tplId: string, fpHex: string, p: StoredPrediction): Promise<void> {
    return this.#serial(async () => {
      const list = [...(await this.#read(tplId, fpHex)), p].sort((a, b) => a.at - b.at).slice(-MAX_PER_SITUATION);
      await ensureDir(join(this.#dir, tplId));
      await writeFileDurable(this.#file(tplId, fpHex), JSON.stringify(list) + '\n');
    });
  }

  /** The newest prediction received at or before `observedAt` (nothing is forgotten). */
  peek(tplId: string, fpHex: string, observedAt: number): Promise<StoredPrediction | undefined> {
    return this.#serial(async () => {
      const before = (await this.#read(tplId, fpHex)).filter((x) => x.at <= observedAt);
      return before[before.length - 1];
    });
  }

  /**
   * Forgets the predictions received at or before `at` (each observation scores one prediction,
   * each prediction at most once). Predictions received later stay for later observations.
   */
  forget(tplId: string, fpHex: string, at: number): Promise<void> {
    return this.#serial(async () => {
      const list = await this.#read(tplId, fpHex);
      if (!list.some((x) => x.at <= at)) return;
      await writeFileDurable(this.#file(tplId, fpHex), JSON.stringify(list.filter((x) => x.at > at)) + '\n');
    });
  }

  /** The running totals of a template (empty when the node never scored one). */
  async totals(tplId: string): Promise<ScoreTotals> {
    const j = (await readJson(join(this.#scoresDir, `${tplId}.json`))) as Partial<ScoreTotals> | undefined;
    if (!j || typeof j !== 'object') return EMPTY_TOTALS;
    const n = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);
    const rel = Array.isArray(j.rel) && j.rel.length === 2 * REL_BINS ? j.rel.map(n) : EMPTY_TOTALS.rel;
    return {
      seq: n(j.seq),
      k: n(j.k),
      brierSum: n(j.brierSum),
      brierCount: n(j.brierCount),
      hits: n(j.hits),
      absErrorSum: n(j.absErrorSum),
      absErrorCount: n(j.absErrorCount),
      ...(typeof j.since === 'number' ? { since: j.since } : {}),
      rel,
      ...(isLast(j.last) ? { last: j.last } : {}),
    };
  }

  /** Writes the totals durably. */
  async saveTotals(tplId: string, t: ScoreTotals): Promise<void> {
    await ensureDir(this.#scoresDir);
    await writeFileDurable(join(this.#scoresDir, `${tplId}.json`), JSON.stringify(t) + '\n');
  }
}
