/** `qis publish`, `qis flush`, `qis query`, `qis watch`: the edge node runtime on the command line. */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  QisError,
  createNode,
  decodePacket,
  deliveryRefused,
  isTplId,
  loadTemplate,
  type RegistryOptions,
  type Template,
  toHex,
  type BrokerKind,
  type NodeOptions,
  type QisNode,
  type QueryResult,
  type TrustReport,
  type Synthesis,
  type VerifiedPacket,
  type CategorySummary,
  type KeySummary,
  type NumberSummary,
} from '../src/index.js';
import { numberFlag, objectFlag, outcomeFlag, stdoutGone, usage, type Command, type FlagSpec, type Io, str, type Flags } from './run.js';


export const CONNECTION: Record<string, FlagSpec> = {
  url: { type: 'string', value: 'URL', help: 'broker: mqtt://host:1883, mqtts://host:8883, ws(s)://host/path', required: true },
  ca: { type: 'string', value: 'FILE', help: "PEM CA certificate(s) to trust for the broker's certificate (mqtts, wss)" },
  cert: { type: 'string', value: 'FILE', help: 'PEM client certificate, for brokers that require mTLS' },
  'cert-key': { type: 'string', value: 'FILE', help: 'PEM private key of --cert' },
  insecure: { type: 'boolean', help: "accept any broker certificate (testing only)" },
  username: { type: 'string', value: 'NAME', help: 'MQTT user name' },
  'password-file': { type: 'string', value: 'FILE', help: 'file holding the MQTT password (kept off the command line)' },
  login: { type: 'boolean', help: 'node login (PROTOCOL §11): the node id and a login signed by the node key as user name and password, fresh at every connect' },
  'broker-kind': { type: 'string', value: 'KIND', help: 'qis | mosquitto | unknown | auto (default: auto, asked once)' },
  enrolment: { type: 'string', value: 'FILE', help: "the node's enrolment (qis enrol), attached to its packets (default: DATA-DIR/enrolment.cbor when present)" },
};

export const SITUATION: Record<string, FlagSpec> = {
  template: { type: 'string', value: 'FILE|ID', help: 'template file (YAML or JSON), or a template id to fetch from the registry (verified, cached in the data dir)', required: true },
  situation: { type: 'string', value: 'JSON', help: 'situation as JSON, or @FILE', required: true },
};

async function readOpt(flags: Flags, name: string): Promise<Buffer | undefined> {
  const path = flags[name];
  if (path === undefined) return undefined;
  try {
    return await readFile(str(path));
  } catch (e) {
    throw new QisError('ERR_FILE_IO', `--${name} ${str(path)}: ${(e as Error).message}`, { cause: e });
  }
}

/** `--template FILE`, or a template id (26 base32 characters that is not an existing file), which the node fetches from the registry. */
export async function templateFlag(value: string): Promise<Template | string> {
  if (isTplId(value) && !existsSync(value)) return value;
  return loadTemplate(value);
}

/** A template id resolved through the node (registry fetch, or its cache). */
async function resolveTemplate(node: QisNode, t: Template | string, signal?: AbortSignal): Promise<Template> {
  return typeof t === 'string' ? node.template(t, signal ? { signal } : {}) : t;
}

/** The connection flags as registry options (`qis template …`). */
export async function registryOptions(flags: Flags): Promise<RegistryOptions> {
  const o = await nodeOptions(flags, '-');
  return {
    url: o.url,
    ...(o.tls ? { tls: o.tls } : {}),
    ...(o.username !== undefined ? { username: o.username } : {}),
    ...(o.password !== undefined ? { password: o.password } : {}),
    ...(o.brokerKind !== undefined ? { brokerKind: o.brokerKind } : {}),
  };
}

export async function nodeOptions(flags: Flags, dataDir: string): Promise<NodeOptions> {
  const kind = flags['broker-kind'];
  if (kind !== undefined && !['qis', 'mosquitto', 'unknown', 'auto'].includes(str(kind))) {
    throw usage(`--broker-kind must be qis, mosquitto, unknown or auto, not "${str(kind)}"`);
  }
  if ((flags.cert === undefined) !== (flags['cert-key'] === undefined)) throw usage('--cert and --cert-key go together');
  const [ca, cert, key, password] = await Promise.all([readOpt(flags, 'ca'), readOpt(flags, 'cert'), readOpt(flags, 'cert-key'), readOpt(flags, 'password-file')]);
  const tls = {
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(flags.insecure === true ? { rejectUnauthorized: false } : {}),
  };
  return {
    url: str(flags.url),
    dataDir,
    ...(Object.keys(tls).length > 0 ? { tls } : {}),
    ...(flags.username !== undefined ? { username: str(flags.username) } : {}),
    ...(password ? { password: password.toString('utf8').replace(/\r?\n$/, '') } : {}),
    ...(kind !== undefined ? { brokerKind: str(kind) as BrokerKind | 'auto' } : {}),
    ...(flags.login === true ? { login: true } : {}),
    ...(flags.enrolment !== undefined ? { enrolmentFile: str(flags.enrolment) } : {}),
    connectTimeoutMs: 10_000,
    failFast: true,
  };
}

/** Runs `fn` with a node on `--data-dir`, or on a throwaway one (a query needs no lasting identity). */
export async function withNode<T>(flags: Flags, fn: (node: QisNode) => Promise<T>): Promise<T> {
  const given = flags['data-dir'] !== undefined;
  const dir = given ? str(flags['data-dir']) : await mkdtemp(join(tmpdir(), 'qis-query-'));
  try {
    const node = await createNode(await nodeOptions(flags, dir));
    const e = node.enrolment();
    // Said on stderr, so that stdout stays the command's output.
    if (e?.message !== undefined) process.stderr.write(`warning: ${e.message}\n`);
    try {
      return await fn(node);
    } finally {
      await node.close();
    }
  } finally {
    if (!given) await rm(dir, { recursive: true, force: true });
  }
}

/** Stops a long-running command on Ctrl-C / SIGTERM, or when stdout's reader has gone. */
export function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  const stop = (): void => ac.abort(new Error('interrupted'));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  stdoutGone.signal.addEventListener('abort', stop, { once: true });
  if (stdoutGone.signal.aborted) stop();
  return { signal: ac.signal, dispose: () => (process.off('SIGINT', stop), process.off('SIGTERM', stop), stdoutGone.signal.removeEventListener('abort', stop)) };
}

const publish: Command = {
  path: ['publish'],
  summary: "sign a situation's outcome and publish it retained (store-and-forward: queued if the broker is away)",
  flags: {
    ...CONNECTION,
    'data-dir': { type: 'string', value: 'DIR', help: "the node's directory: key.json, outbox/, state/ (created if missing)", required: true },
    ...SITUATION,
    outcome: { type: 'string', value: 'VALUE', help: 'a label (failure), a number (1834), or JSON ({"h": 1834})', required: true },
    conf: { type: 'string', value: 'X', help: 'confidence 0..1 (default 1)' },
    n: { type: 'string', value: 'N', help: 'observations behind the outcome (default 1)' },
    ctx: { type: 'string', value: 'JSON', help: "context values, e.g. '{\"rpm\":1480}'" },
    exp: { type: 'string', value: 'S', help: 'expiry, Unix seconds' },
    ts: { type: 'string', value: 'MS', help: 'observation time, Unix ms (default: now)' },
    'ack-timeout': { type: 'string', value: 'MS', help: 'how long to wait for the broker\'s PUBACK (default 10000)' },
  },
  details: `The packet is written durably to DIR/outbox before it is sent and removed after the broker's
PUBACK. If the broker cannot be reached, the command still succeeds (exit 0) and says the packet
is queued; deliver it later with: qis flush --data-dir DIR --url URL. If the broker refuses the
packet (it closes the connection on it), the command fails with ERR_DELIVERY_REFUSED and the
likely reason (e.g. a clock far ahead of the broker's).
seq is kept per template in DIR/state and always increases (Unix ms if the state is lost).
When the situation lands in another bucket than last time, a signed tombstone for the old
bucket is sent first, so any broker keeps one packet for this node.
Example:
  qis publish --url mqtt://localhost --data-dir /var/lib/qis --template examples/bearing-failure.yaml \\
    --situation '{"machine_model":"KX-200","bearing_type":"roller","load_kn":42.5,"sealed":true}' \\
    --outcome failure --ctx '{"rpm":1480,"ambient_c":31}'`,
  async run(flags) {
    const [template, situation] = await Promise.all([templateFlag(str(flags.template)), objectFlag('situation', str(flags.situation))]);
    const outcome = await outcomeFlag(str(flags.outcome));
    const ctx = flags.ctx === undefined ? undefined : ((await objectFlag('ctx', str(flags.ctx))) as Record<string, number>);
    const options = {
      ...(flags.conf !== undefined ? { conf: numberFlag('conf', str(flags.conf), false) } : {}),
      ...(flags.n !== undefined ? { n: numberFlag('n', str(flags.n), true) } : {}),
      ...(ctx !== undefined ? { ctx } : {}),
      ...(flags.exp !== undefined ? { exp: numberFlag('exp', str(flags.exp), true) } : {}),
      ...(flags.ts !== undefined ? { ts: numberFlag('ts', str(flags.ts), true) } : {}),
      ...(flags['ack-timeout'] !== undefined ? { ackTimeoutMs: numberFlag('ack-timeout', str(flags['ack-timeout']), true) } : {}),
    };
    const intr = interruptSignal();
    try {
      return await withNode(flags, async (node) => {
        const before = node.pending;
        const r = await node.publish(template, situation, outcome, { ...options, signal: intr.signal }).catch((e: unknown) => {
          if (!intr.signal.aborted) throw e;
          // Ctrl-C: say what became of the packet. It is written to the outbox before it is sent.
          const outbox = join(str(flags['data-dir']), 'outbox');
          throw new QisError(
            'ERR_ABORTED',
            node.pending > before
              ? `interrupted before the broker acknowledged the packet: it is safe in ${outbox} (${node.pending} queued) and goes out with the next qis publish, or: qis flush --data-dir ${str(flags['data-dir'])} --url ${str(flags.url)}`
              : `interrupted before the packet was queued: nothing was published (the outbox holds ${node.pending})`,
            { cause: e },
          );
        });
        if (r.refused) {
          const dataDir = str(flags['data-dir']);
          throw await deliveryRefused(
            await nodeOptions(flags, dataDir),
            `the broker closed the connection when packet seq ${r.seq} was sent (an MQTT 3.1.1 broker's way to refuse a publish): NOT delivered; it stays in ${join(dataDir, 'outbox')} and is set aside as .bad after repeated refusals (qis status --data-dir ${dataDir})`,
            [options.ts ?? decodePacket(r.packet).ts],
          );
        }
        const json = {
          ok: true,
          acked: r.acked,
          queued: node.pending,
          ...(!r.acked && node.connectionError ? { connectionError: { code: node.connectionError.code, message: node.connectionError.message } } : {}),
          nodeId: node.nodeId,
          topic: r.topic,
          seq: r.seq,
          packet: toHex(r.packet),
          ...(r.tombstone ? { tombstone: { topic: r.tombstone.topic, seq: r.tombstone.seq } } : {}),
        };
        const state = r.acked
          ? 'acknowledged by the broker'
          : `NOT delivered yet: ${node.connectionError ? `${node.connectionError.code}: ${node.connectionError.message}` : 'the broker did not acknowledge it'}; it is safe in ${join(str(flags['data-dir']), 'outbox')} (${node.pending} queued)\n          deliver with: qis flush --data-dir ${str(flags['data-dir'])} --url ${str(flags.url)}`;
        const human = [
          `published seq ${r.seq}: ${state}`,
          `topic     ${r.topic}`,
          ...(r.tombstone ? [`moved     tombstone seq ${r.tombstone.seq} on ${r.tombstone.topic}`] : []),
        ].join('\n');
        return { json, human };
      });
    } finally {
      intr.dispose();
    }
  },
};

const QUERY_FLAGS: Record<string, FlagSpec> = {
  ...CONNECTION,
  ...SITUATION,
  widen: { type: 'string', value: 'N', help: 'drop the N least significant levels (0: exact cohort)' },
  'data-dir': { type: 'string', value: 'DIR', help: 'node directory to use (default: a throwaway one)' },
};

const query: Command = {
  path: ['query'],
  summary: 'what happened to nodes exactly like mine: one-round-trip cohort query, verified, synthesised',
  flags: {
    ...QUERY_FLAGS,
    'min-cohort': { type: 'string', value: 'N', help: 'fewest nodes for an answer (default 5)' },
    'half-life': { type: 'string', value: 'MS', help: 'recency weighting half-life (default: off)' },
    trim: { type: 'string', value: 'X', help: 'trimmed-mean fraction cut from each tail (default 0.1)' },
    'exclude-outliers': { type: 'boolean', help: 'leave numeric outliers out of every figure' },
    'max-node-share': { type: 'string', value: 'X', help: "cap on one node's share of the weight, (0, 1] (default 2/N: twice the average; 1: off)" },
    ctx: { type: 'string', value: 'JSON', help: 'your context values: nearer packets weigh more (docs/synthesis.md)' },
    timeout: { type: 'string', value: 'MS', help: 'time limit including connecting (default 10000)' },
    packets: { type: 'boolean', help: 'list the verified packets too' },
    'include-superseded': { type: 'boolean', help: "also count the cohorts of the templates this one supersedes, when their routed fields are unchanged (docs/registry.md)" },
    trust: { type: 'string', value: 'OPERATOR', multiple: true, help: 'count only nodes enrolled by this operator (id or public key hex; repeat for several): its revocation list is read too, unenrolled packets are counted by reason' },
    'max-operator-share': { type: 'string', value: 'X', help: "with --trust: cap on one operator's share of the weight, (0, 1] (default 2/M for M operators)" },
  },
  details: `Every packet is verified (signature, topic, fingerprint, expiry); one packet per node (highest
seq) counts; dropped packets are counted by reason. On a broker that does not keep the sync
marker's order (plain Aedes, unknown brokers) the query ends after a quiet period and says so.
Example:
  qis query --url mqtt://localhost --template examples/bearing-failure.yaml \\
    --situation '{"machine_model":"KX-200","bearing_type":"roller","load_kn":42.5,"sealed":true}' --widen 1`,
  async run(flags) {
    const [given, situation] = await Promise.all([templateFlag(str(flags.template)), objectFlag('situation', str(flags.situation))]);
    const ctx = flags.ctx === undefined ? undefined : ((await objectFlag('ctx', str(flags.ctx))) as Record<string, number>);
    let template = given as Template;
    const r = await withNode(flags, async (node) => {
      const intr = interruptSignal();
      try {
        template = await resolveTemplate(node, given, intr.signal);
        return await node.query(template, situation, {
          signal: intr.signal,
          ...(flags['include-superseded'] === true ? { includeSuperseded: true } : {}),
          ...(flags.widen !== undefined ? { widen: numberFlag('widen', str(flags.widen), true) } : {}),
          ...(flags['min-cohort'] !== undefined ? { minCohort: numberFlag('min-cohort', str(flags['min-cohort']), true) } : {}),
          ...(flags['half-life'] !== undefined ? { halfLifeMs: numberFlag('half-life', str(flags['half-life']), false) } : {}),
          ...(flags.trim !== undefined ? { trim: numberFlag('trim', str(flags.trim), false) } : {}),
          ...(flags['exclude-outliers'] === true ? { excludeOutliers: true } : {}),
          ...(flags['max-node-share'] !== undefined ? { maxNodeShare: numberFlag('max-node-share', str(flags['max-node-share']), false) } : {}),
          ...(ctx !== undefined ? { context: { values: ctx } } : {}),
          ...(flags.timeout !== undefined ? { timeoutMs: Math.max(1, numberFlag('timeout', str(flags.timeout), true)) } : {}),
          ...(flags.trust !== undefined ? { trust: flags.trust as string[] } : {}),
          ...(flags['max-operator-share'] !== undefined ? { maxOperatorShare: numberFlag('max-operator-share', str(flags['max-operator-share']), false) } : {}),
        });
      } finally {
        intr.dispose();
      }
    });
    const json = {
      ok: true,
      tplId: r.tplId,
      filter: r.filter,
      widen: r.widen,
      broker: r.broker,
      completeness: r.completeness,
      cohort: r.packets.length,
      received: r.received,
      dropped: r.dropped,
      superseded: r.superseded,
      withdrawn: r.withdrawn,
      duplicates: r.duplicates,
      elapsedMs: r.elapsedMs,
      ...(r.versions ? { versions: r.versions, notIncluded: r.notIncluded ?? [] } : {}),
      ...(r.trust ? { trust: r.trust } : {}),
      ...r.synthesis,
      ...(flags.packets === true ? { packets: r.packets.map(packetJson) } : {}),
    };
    return { json, human: renderQuery(template.doc.name, template.doc.version, r, flags.packets === true) };
  },
};

function packetJson(p: VerifiedPacket): Record<string, unknown> {
  return {
    topic: p.topic,
    nodeId: p.nodeId,
    seq: p.seq,
    ts: p.ts,
    ...(p.del ? { del: true } : { out: p.out }),
    conf: p.conf,
    n: p.n,
    ...(p.ctx ? { ctx: p.ctx } : {}),
    ...(p.exp !== undefined ? { exp: p.exp } : {}),
    packet: toHex(p.bytes),
  };
}

const pct = (x: number): string => `${(100 * x).toFixed(1)} %`;
const fmt = (x: number): string => (Number.isInteger(x) ? String(x) : Math.abs(x) >= 100 ? x.toFixed(1) : String(Number(x.toPrecision(4))));

export function renderQuery(name: string, version: number, r: QueryResult, listPackets: boolean): string {
  const drops = Object.entries(r.dropped).map(([c, n]) => `${c} ${n}`);
  const lines = [
    `cohort    ${name} v${version}, ${r.widen === 0 ? 'exact' : `widened by ${r.widen} level(s)`}: ${r.filter}`,
    `broker    ${r.broker}: ${r.completeness === 'sync' ? 'complete (sync marker)' : 'ended after a quiet period (broker does not keep the sync order)'}`,
    `nodes     ${r.packets.length}   (received ${r.received}; dropped ${drops.length ? drops.join(', ') : 'none'}; superseded ${r.superseded}; withdrawn ${r.withdrawn})`,
    ...(r.versions ? [`versions  ${r.versions.map((v) => `${v.name} v${v.version} (${v.tplId}): ${v.packets}`).join('; ')}`] : []),
    ...(r.notIncluded ?? []).map((x) => `left out ${x.tplId}: ${x.reason}`),
    ...(r.trust ? renderTrust(r.trust) : []),
    '',
    ...renderSynthesis(r.synthesis, ''),
  ];
  if (listPackets) {
    lines.push('', 'packets:');
    for (const p of r.packets) lines.push(`  ${p.nodeId}  seq ${p.seq}  ${new Date(p.ts).toISOString()}  ${JSON.stringify(p.out)}${p.n > 1 ? `  n=${p.n}` : ''}${p.conf < 1 ? `  conf=${p.conf}` : ''}`);
  }
  return lines.join('\n');
}

function renderTrust(t: TrustReport): string[] {
  const dropped = Object.entries(t.notEnrolled).filter(([, n]) => n > 0).map(([r, n]) => `${r} ${n}`);
  return [
    `operators ${t.trusted.map((op) => `${op}: ${t.operators[op] ?? 0} node(s)${t.capped.includes(op) ? ' (capped)' : ''}${t.revocations[op] !== undefined ? ` (revocation list seq ${t.revocations[op]})` : ''}`).join('\n          ')}`,
    `not counted (no valid enrolment): ${dropped.length ? dropped.join(', ') : 'none'}; operator share cap ${fmt(t.maxOperatorShare)}`,
  ];
}

function renderSynthesis(s: Synthesis | KeySummary, indent: string): string[] {
  switch (s.kind) {
    case 'insufficient':
      return [`${indent}${s.message}`];
    case 'category':
      return renderCategory(s, indent);
    case 'number':
      return renderNumber(s, indent);
    case 'map':
      return Object.entries(s.keys).flatMap(([k, v]) => [`${indent}${k}:`, ...renderSynthesis(v, indent + '  ')]);
    default:
      return [];
  }
}

function renderCategory(s: CategorySummary, indent: string): string[] {
  const labels = Object.entries(s.labels);
  const w = Math.max(5, ...labels.map(([l]) => l.length));
  const head = `${indent}${'label'.padEnd(w)}  ${'nodes'.padStart(6)}  ${'weight'.padStart(8)}  ${'share'.padStart(8)}  ${Math.round(s.confidence * 100)} % interval`;
  return [
    head,
    ...labels.map(([l, v]) => `${indent}${l.padEnd(w)}  ${String(v.count).padStart(6)}  ${fmt(v.weight).padStart(8)}  ${pct(v.proportion).padStart(8)}  ${pct(v.low)} – ${pct(v.high)}`),
    `${indent}(${s.count} nodes, ${s.observations} observations, effective n ${fmt(s.effectiveN)})`,
    `${indent}vote      ${s.vote.top} by ${plural(s.vote.margin, 'node')} (one node, one vote)`,
    ...capLine(s, indent),
  ];
}

function plural(k: number, word: string): string {
  return `${k} ${word}${k === 1 ? '' : 's'}`;
}

/** Said only when the cap on one node's share of the weight cut someone down. */
function capLine(s: CategorySummary | NumberSummary, indent: string): string[] {
  return s.capped > 0 ? [`${indent}capped    ${plural(s.capped, 'node')} at ${pct(s.maxNodeShare)} of the weight each (--max-node-share)`] : [];
}

function renderNumber(s: NumberSummary, indent: string): string[] {
  const u = s.unit ? ` ${s.unit}` : '';
  return [
    `${indent}nodes ${s.count}, observations ${s.observations}, effective n ${fmt(s.effectiveN)}`,
    `${indent}median ${fmt(s.median)}${u}   trimmed mean ${fmt(s.trimmedMean)}${u}   mean ${fmt(s.mean)}${u}`,
    `${indent}p10–p90 ${fmt(s.p10)} – ${fmt(s.p90)}${u}   MAD ${fmt(s.mad)}${u}   range ${fmt(s.min)} – ${fmt(s.max)}${u}`,
    `${indent}by node (each counted once): median ${fmt(s.byNode.median)}${u}   trimmed mean ${fmt(s.byNode.trimmedMean)}${u}`,
    ...capLine(s, indent),
    ...(s.outliers.length > 0
      ? [`${indent}outliers ${s.outliers.length}${s.excluded > 0 ? ' (excluded)' : ' (included; --exclude-outliers leaves them out)'}: ${s.outliers.slice(0, 5).map((o) => fmt(o.value)).join(', ')}${s.outliers.length > 5 ? ', …' : ''}`]
      : []),
  ];
}

const watch: Command = {
  path: ['watch'],
  summary: "print a cohort's verified packets as they arrive (Ctrl-C to stop)",
  flags: {
    ...QUERY_FLAGS,
    live: { type: 'boolean', help: 'only new packets, not the retained ones present at start' },
    count: { type: 'string', value: 'N', help: 'stop after N packets' },
    timeout: { type: 'string', value: 'MS', help: 'stop after this long' },
  },
  details: 'With --json, one JSON object per packet per line (NDJSON). Forged or foreign packets are not printed; the count of dropped ones is printed at the end.',
  async run(flags, io: Io) {
    const [given, situation] = await Promise.all([templateFlag(str(flags.template)), objectFlag('situation', str(flags.situation))]);
    const count = flags.count === undefined ? Infinity : numberFlag('count', str(flags.count), true);
    const json = flags.json === true;
    return withNode(flags, async (node) => {
      const template = await resolveTemplate(node, given);
      const intr = interruptSignal();
      const ac = new AbortController();
      const timer = flags.timeout === undefined ? undefined : setTimeout(() => ac.abort(), numberFlag('timeout', str(flags.timeout), true));
      intr.signal.addEventListener('abort', () => ac.abort(), { once: true });
      const it = node.watch(template, situation, {
        signal: ac.signal,
        ...(flags.widen !== undefined ? { widen: numberFlag('widen', str(flags.widen), true) } : {}),
        ...(flags.live === true ? { retained: false } : {}),
      });
      let seen = 0;
      try {
        if (seen < count) {
          for await (const ev of it) {
            const p = ev.packet;
            if (json) io.stdout.write(JSON.stringify({ retained: ev.retained, ...packetJson(p) }) + '\n');
            else io.stdout.write(`${new Date(p.ts).toISOString()}  ${p.nodeId}  seq ${p.seq}  ${p.del ? 'withdrawn' : JSON.stringify(p.out)}${ev.retained ? '  (retained)' : ''}\n`);
            if (++seen >= count) break;
          }
        }
      } finally {
        if (timer) clearTimeout(timer);
        intr.dispose();
      }
      const dropped = it.dropped;
      const d = Object.entries(dropped).map(([c, n]) => `${c} ${n}`);
      // Per-packet lines went out already; the summary goes to stderr so that stdout stays NDJSON.
      if (!stdoutGone.signal.aborted) io.stderr.write(`watched ${seen} packet(s); dropped ${d.length ? d.join(', ') : 'none'}\n`);
      return { json: { ok: true, packets: seen, dropped }, human: '', quiet: true };
    });
  },
};

export const nodeCommands: readonly Command[] = [publish, query, watch];
