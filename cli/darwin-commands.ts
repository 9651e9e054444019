/** `qis report` and `qis templates rank`: scoring predictions and ranking rival templates (PROTOCOL §9). */
import { writeFile } from 'node:fs/promises';
import { QisError, calibrationSvg, isTplId, loadTemplate, rankTemplates, toHex, type RankRow, type ScoresResult } from '../src/index.js';
import { CONNECTION, SITUATION, templateFlag, withNode } from './node-commands.js';
import { numberFlag, objectFlag, outcomeFlag, usage, type Command, type Flags, str } from './run.js';

const pct = (x: number): string => `${(100 * x).toFixed(1)} %`;
const f3 = (x: number | undefined): string => (x === undefined ? '–' : x.toFixed(3));

const report: Command = {
  path: ['report'],
  summary: 'score the prediction this node got for a situation against what happened, and publish its score packet',
  flags: {
    ...CONNECTION,
    'data-dir': { type: 'string', value: 'DIR', help: 'the node directory the earlier `qis query --data-dir DIR` used', required: true },
    ...SITUATION,
    outcome: { type: 'string', value: 'VALUE', help: 'what happened: a label (failure) or a number (1834)', required: true },
    ts: { type: 'string', value: 'MS', help: 'when it was observed, Unix ms (default: now); only predictions received before count' },
    'ack-timeout': { type: 'string', value: 'MS', help: "how long to wait for the broker's PUBACK (default 10000)" },
  },
  details: `The node scores the latest prediction it received (qis query --data-dir DIR) for this
template and situation before the observation: Brier score and hit (labels) or absolute error
(numbers). Its running totals (DIR/scores/<tplId>.json) go out as a signed score packet,
retained on qis/1/s/<tplId>/<nodeId> through the outbox (queued if the broker is away).
Example:
  qis query  --url mqtt://localhost --data-dir ./node1 --template bearing.yaml --situation @s.json
  qis report --url mqtt://localhost --data-dir ./node1 --template bearing.yaml --situation @s.json --outcome failure`,
  async run(flags) {
    const [template, situation] = await Promise.all([templateFlag(str(flags.template)), objectFlag('situation', str(flags.situation))]);
    const outcome = await outcomeFlag(str(flags.outcome));
    return withNode(flags, async (node) => {
      const r = await node.report(template, situation, outcome, {
        ...(flags.ts !== undefined ? { ts: numberFlag('ts', str(flags.ts), true) } : {}),
        ...(flags['ack-timeout'] !== undefined ? { ackTimeoutMs: numberFlag('ack-timeout', str(flags['ack-timeout']), true) } : {}),
      });
      const json = { ok: true, acked: r.acked, nodeId: node.nodeId, tplId: r.tplId, topic: r.topic, seq: r.seq, prediction: r.prediction, predictedAt: r.predictedAt, score: r.score, totals: r.totals, packet: toHex(r.packet) };
      const s = r.score;
      const t = r.totals;
      const human = [
        `scored    ${s.brier !== undefined ? `Brier ${f3(s.brier)}, ${s.hit ? 'hit' : 'miss'}` : `absolute error ${f3(s.absError)}`} (prediction received ${new Date(r.predictedAt).toISOString()})`,
        `record    k ${t.k}${t.hits !== undefined ? `, hits ${t.hits}` : ''}${t.brier !== undefined ? `, mean Brier ${f3(t.brier)}` : ''}${t.mae !== undefined ? `, MAE ${f3(t.mae)}` : ''}`,
        `published seq ${r.seq} on ${r.topic}: ${r.acked ? 'acknowledged by the broker' : 'NOT delivered yet (queued in the outbox; qis flush delivers it)'}`,
      ].join('\n');
      return { json, human };
    });
  },
};

/** A `--template` value: a template id, or a template file (its name and version label the row). */
async function templateRef(value: string): Promise<{ tplId: string; name?: string }> {
  if (isTplId(value)) return { tplId: value };
  const t = await loadTemplate(value);
  return { tplId: t.tplId, name: `${t.doc.name} v${t.doc.version}` };
}

function rankJson(r: RankRow): Record<string, unknown> {
  return {
    tplId: r.tplId,
    ...(r.name !== undefined ? { name: r.name } : {}),
    nodes: r.nodes,
    k: r.k,
    hits: r.hits,
    hitRate: r.hitRate,
    hitInterval: r.hitInterval,
    ...(r.brier !== undefined ? { brier: r.brier, brierInterval: r.brierInterval } : {}),
    ...(r.mae !== undefined ? { mae: r.mae, maeInterval: r.maeInterval } : {}),
    ...(r.rel !== undefined ? { rel: r.rel } : {}),
  };
}

const rank: Command = {
  path: ['templates', 'rank'],
  summary: 'rank rival templates by their track records (score packets), with 95 % intervals; optional reliability chart',
  flags: {
    ...CONNECTION,
    template: { type: 'string', value: 'FILE|ID', help: 'a rival template (file or id); give two or more', required: true, multiple: true },
    svg: { type: 'string', value: 'FILE', help: 'write a reliability (calibration) chart of the templates as SVG' },
    timeout: { type: 'string', value: 'MS', help: 'time limit including connecting (default 10000)' },
  },
  details: `Reads qis/1/s/<tplId>/+ for every template in one round trip, keeps one verified score
packet per node, and pools them: hits over predictions give a Beta(1 + hits, 1 + k - hits)
posterior on the hit rate (mean and 95 % equal-tailed interval); the mean Brier score is
weighted by k, with a normal 95 % interval from the spread between nodes. Ranked by posterior
mean hit rate, then lower Brier (numeric outcomes: lower mean absolute error).
The chart pools the nodes' reliability histograms (score packet key 25, docs/protocol-choices.md).
Example:
  qis templates rank --url mqtt://localhost --template maize-v1.yaml --template maize-v2.yaml --svg calib.svg`,
  async run(flags: Flags) {
    const values = flags.template;
    const list = Array.isArray(values) ? values : values === undefined ? [] : [str(values)];
    if (list.length === 0) throw usage('give at least one --template');
    const refs = await Promise.all(list.map(templateRef));
    const timeoutMs = flags.timeout === undefined ? 10_000 : numberFlag('timeout', str(flags.timeout), true);
    const sc: ScoresResult = await withNode(flags, (node) => node.scores(refs.map((r) => r.tplId), { timeoutMs: Math.max(1, timeoutMs) }));
    const rows = rankTemplates(sc.records.map((rec) => ({ ...rec, ...(refs.find((r) => r.tplId === rec.tplId)?.name !== undefined ? { name: refs.find((r) => r.tplId === rec.tplId)?.name as string } : {}) })));
    if (flags.svg !== undefined) {
      try {
        await writeFile(str(flags.svg), calibrationSvg(rows));
      } catch (e) {
        throw new QisError('ERR_FILE_IO', `--svg ${str(flags.svg)}: ${(e as Error).message}`, { cause: e });
      }
    }
    const json = { ok: true, completeness: sc.completeness, broker: sc.broker, dropped: sc.dropped, ranking: rows.map(rankJson), ...(flags.svg !== undefined ? { svg: str(flags.svg) } : {}) };
    const head = `${'rank'.padEnd(5)}${'template'.padEnd(30)}${'nodes'.padStart(6)}${'k'.padStart(7)}${'hits'.padStart(7)}  ${'hit rate (95 %)'.padEnd(26)}${'Brier (95 %)'.padEnd(24)}MAE`;
    const lines = rows.map((r, i) => {
      const name = (r.name ?? r.tplId).slice(0, 29);
      const hit = r.kHits > 0 ? `${pct(r.hitRate)} (${pct(r.hitInterval[0])}–${pct(r.hitInterval[1])})` : '–';
      const brier = r.brier !== undefined && r.brierInterval ? `${f3(r.brier)} (${f3(r.brierInterval[0])}–${f3(r.brierInterval[1])})` : '–';
      const mae = r.mae !== undefined && r.maeInterval ? `${f3(r.mae)} (${f3(r.maeInterval[0])}–${f3(r.maeInterval[1])})` : '–';
      return `${String(i + 1).padEnd(5)}${name.padEnd(30)}${String(r.nodes).padStart(6)}${String(r.k).padStart(7)}${String(r.hits).padStart(7)}  ${hit.padEnd(26)}${brier.padEnd(24)}${mae}`;
    });
    const dropped = Object.entries(sc.dropped).map(([c, n]) => `${c} ${n}`).join(', ');
    const human = [head, ...lines, '', `broker ${sc.broker}: ${sc.completeness === 'sync' ? 'complete (sync marker)' : 'ended after a quiet period'}; dropped ${dropped || 'none'}`, ...(flags.svg !== undefined ? [`chart  ${str(flags.svg)}`] : [])].join('\n');
    return { json, human };
  },
};

export const darwinCommands: readonly Command[] = [report, rank];
