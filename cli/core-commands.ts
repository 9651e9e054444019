/** `qis keygen`, `qis address`, `qis packet sign|verify`, `qis decode`: the protocol core on the command line. */
import { writeFile } from 'node:fs/promises';
import {
  QisError,
  address,
  cohortFilter,
  createOutcomePacket,
  decodePacket,
  fromHex,
  generateKey,
  keyToJson,
  loadKeyFile,
  loadTemplate,
  saveKeyFile,
  toHex,
  verifyPacket,
  type DecodedPacket,
  type Outcome,
  type VerifiedPacket,
} from '../src/index.js';
import { TRUST_FLAGS, enrolmentVerdict } from './enrol-commands.js';
import { EXIT_REFUSED, jsonFlag, numberFlag, objectFlag, outcomeFlag, readStdin, usage, type Command, type Io, type Flags, str } from './run.js';


const keygen: Command = {
  path: ['keygen'],
  summary: 'create a node key (Ed25519) and write it as a key file with mode 0600',
  flags: { out: { type: 'string', value: 'FILE', help: 'where to write the key file (never overwritten)', required: true } },
  details: 'Key file: {"secretKey": "<64 hex seed>", "publicKey": "<64 hex>", "nodeId": "<26 base32>"}.\nExample: qis keygen --out node.key',
  async run(flags) {
    const key = generateKey();
    const file = str(flags.out);
    await saveKeyFile(file, key);
    const { publicKey, nodeId } = keyToJson(key);
    return { json: { ok: true, nodeId, publicKey, file }, human: `wrote ${file} (mode 0600)\nnode id     ${nodeId}\npublic key  ${publicKey}` };
  },
};

const addressCmd: Command = {
  path: ['address'],
  summary: "a situation's template id, topic levels, fingerprint and exact cohort filter",
  flags: {
    template: { type: 'string', value: 'FILE', help: 'template file (YAML or JSON)', required: true },
    situation: { type: 'string', value: 'JSON', help: 'situation as JSON, or @FILE', required: true },
  },
  details: `Example: qis address --template examples/bearing-failure.yaml \\
  --situation '{"machine_model":"KX-200","bearing_type":"roller","load_kn":42.5,"sealed":true}'`,
  async run(flags) {
    const tpl = await loadTemplate(str(flags.template));
    const a = address(tpl, await objectFlag('situation', str(flags.situation)));
    const json = { tplId: a.tplId, levels: a.levels, fp: toHex(a.fp), filter: cohortFilter(a) };
    const human = [
      `template  ${tpl.doc.name} v${tpl.doc.version}  (${a.tplId})`,
      ...a.levels.map((l, i) => `L${i + 1}        ${l}  ${tpl.fields[i]?.name} = ${a.canon[i]}`),
      `fp        ${json.fp}`,
      `filter    ${json.filter}`,
    ].join('\n');
    return { json, human };
  },
};

const sign: Command = {
  path: ['packet', 'sign'],
  summary: 'sign an outcome packet for a situation (prints its topic and bytes; publishes nothing)',
  flags: {
    key: { type: 'string', value: 'FILE', help: 'node key file (qis keygen)', required: true },
    template: { type: 'string', value: 'FILE', help: 'template file (YAML or JSON)', required: true },
    situation: { type: 'string', value: 'JSON', help: 'situation as JSON, or @FILE', required: true },
    outcome: { type: 'string', value: 'VALUE', help: 'outcome: a label (failure), a number (1834), or JSON ({"h": 1834}); required unless --del' },
    conf: { type: 'string', value: 'X', help: 'confidence 0..1 (default 1, omitted from the packet)' },
    n: { type: 'string', value: 'N', help: 'observations behind the outcome (default 1)' },
    ctx: { type: 'string', value: 'JSON', help: "context values, e.g. '{\"rpm\":1480}' (the template's context names)" },
    seq: { type: 'string', value: 'N', help: 'sequence number (default: Unix ms now, always increasing)' },
    ts: { type: 'string', value: 'MS', help: 'observation time, Unix ms (default: now)' },
    exp: { type: 'string', value: 'S', help: 'expiry, Unix seconds' },
    del: { type: 'boolean', help: 'a tombstone: withdraw this node\'s packet' },
    out: { type: 'string', value: 'FILE', help: 'also write the raw packet bytes to FILE (for mosquitto_pub -f)' },
  },
  details: `Publish the result retained at QoS 1 on its topic, e.g.:
  qis packet sign … --out p.bin --json | jq -r .topic  # then
  mosquitto_pub -t "<topic>" -r -q 1 -f p.bin`,
  async run(flags) {
    const del = flags.del === true;
    if (!del && flags.outcome === undefined) throw usage('--outcome is required unless --del');
    const [key, template, situation] = await Promise.all([
      loadKeyFile(str(flags.key)),
      loadTemplate(str(flags.template)),
      objectFlag('situation', str(flags.situation)),
    ]);
    const now = Date.now();
    const ctx = flags.ctx === undefined ? undefined : await objectFlag('ctx', str(flags.ctx));
    const outcome = flags.outcome === undefined ? undefined : await outcomeFlag(str(flags.outcome));
    const { topic, packet } = createOutcomePacket({
      key,
      template,
      situation,
      ...(outcome !== undefined ? { outcome } : {}),
      seq: flags.seq === undefined ? now : numberFlag('seq', str(flags.seq), true),
      ts: flags.ts === undefined ? now : numberFlag('ts', str(flags.ts), true),
      ...(flags.conf !== undefined ? { conf: numberFlag('conf', str(flags.conf), false) } : {}),
      ...(flags.n !== undefined ? { n: numberFlag('n', str(flags.n), true) } : {}),
      ...(ctx !== undefined ? { ctx: ctx as Record<string, number> } : {}),
      ...(flags.exp !== undefined ? { exp: numberFlag('exp', str(flags.exp), true) } : {}),
      ...(del ? { del: true } : {}),
    });
    if (flags.out !== undefined) {
      try {
        await writeFile(str(flags.out), packet);
      } catch (e) {
        throw new QisError('ERR_FILE_IO', `${str(flags.out)}: ${(e as Error).message}`, { cause: e });
      }
    }
    const hex = toHex(packet);
    return {
      json: { topic, packet: hex, size: packet.length },
      human: `topic   ${topic}\nsize    ${packet.length} bytes\npacket  ${hex}${flags.out !== undefined ? `\nwrote   ${str(flags.out)}` : ''}`,
    };
  },
};

/** An outcome flag: JSON when it parses as JSON ("x", 12, {"k": 1}), otherwise a bare label. */

/** Packet bytes from --hex or stdin. A single trailing newline that a terminal tool added is
 *  dropped only when the packet does not decode with it. */
async function packetBytes(flags: Flags, io: Io): Promise<Uint8Array> {
  if (flags.hex !== undefined) {
    // As xxd -p, od or a debugger print it: whitespace, colons and a 0x prefix are ignored.
    const b = fromHex(str(flags.hex).replace(/^0x/i, '').replace(/[\s:]/g, ''));
    if (!b) throw usage('--hex must be hex digits (an even number of them; spaces, colons and 0x are ignored)');
    return b;
  }
  return readStdin(io);
}

function withoutNewline(bytes: Uint8Array): Uint8Array | undefined {
  return bytes.length > 1 && bytes[bytes.length - 1] === 0x0a ? bytes.subarray(0, -1) : undefined;
}

/** Applies `fn` to the bytes; when they do not decode (or are one byte too many) retries once
 *  without a trailing newline. */
function tolerant<T>(bytes: Uint8Array, fn: (b: Uint8Array) => T): T {
  try {
    return fn(bytes);
  } catch (e) {
    const trimmed = withoutNewline(bytes);
    if (trimmed && e instanceof QisError && (e.code === 'ERR_CBOR_MALFORMED' || e.code === 'ERR_PACKET_TOO_LARGE')) {
      try {
        return fn(trimmed);
      } catch {
        throw e;
      }
    }
    throw e;
  }
}

function packetJson(p: DecodedPacket): Record<string, unknown> {
  return {
    nodeId: p.nodeId,
    seq: p.seq,
    ts: p.ts,
    ...(p.out !== undefined ? { out: p.out } : {}),
    conf: p.conf,
    n: p.n,
    ...(p.ctx !== undefined ? { ctx: p.ctx } : {}),
    ...(p.exp !== undefined ? { exp: p.exp } : {}),
    del: p.del,
    fp: toHex(p.fp),
    alg: p.alg,
    publicKey: toHex(p.publicKey),
    size: p.size,
  };
}

const verify: Command = {
  path: ['packet', 'verify'],
  summary: 'verify a packet received on a topic: signature, topic binding, structure, expiry',
  flags: {
    topic: { type: 'string', value: 'TOPIC', help: 'the topic the packet was published on (it is signed)', required: true },
    hex: { type: 'string', value: 'HEX', help: 'the packet as hex (default: raw bytes on stdin)' },
    ...TRUST_FLAGS,
  },
  details: 'Exit status 0 when valid, 1 when refused (with the code), 2 on a usage error.\nWith --trust, a packet without a valid enrolment (PROTOCOL §10) by one of those operators is refused: ERR_NOT_ENROLLED with the reason.\nExample: mosquitto_sub -C 1 -N -t "$T" | qis packet verify --topic "$T" [--trust OPERATOR_ID]',
  async run(flags, io) {
    const topic = str(flags.topic);
    const bytes = await packetBytes(flags, io);
    let p: VerifiedPacket;
    try {
      p = tolerant(bytes, (b) => verifyPacket(topic, b));
    } catch (e) {
      if (!(e instanceof QisError)) throw e;
      return { json: { ok: false, code: e.code, message: e.message }, human: `INVALID ${e.code}: ${e.message}`, status: EXIT_REFUSED };
    }
    const json = { ok: true, ...packetJson(p), tplId: p.tplId, levels: p.levels };
    const human = `valid  node ${p.nodeId}  seq ${p.seq}  ${p.del ? 'tombstone' : `out ${JSON.stringify(p.out)}`}`;
    const e = await enrolmentVerdict(flags, p);
    if (!e) return { json, human };
    return { json: { ...json, ...e.json }, human: `${human}\n${e.human}`, ...(e.refused ? { status: EXIT_REFUSED } : {}) };
  },
};

/** ISO time, or a note for a time no Date can hold (a valid packet may carry one). */
function isoTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? 'beyond the calendar' : d.toISOString();
}

function describe(p: DecodedPacket, verdict: string): string {
  const rows: Array<[string, string]> = [
    ['node', p.nodeId],
    ['seq', String(p.seq)],
    ['time', `${isoTime(p.ts)} (${p.ts})`],
    ['outcome', p.del ? '(tombstone: the node withdraws its packet)' : JSON.stringify(p.out)],
    ['confidence', String(p.conf)],
    ['n', String(p.n)],
  ];
  if (p.ctx) rows.push(['context', Object.entries(p.ctx).map(([k, v]) => `${k}=${v}`).join(' ')]);
  if (p.exp !== undefined) rows.push(['expires', `${isoTime(p.exp * 1000)} (${p.exp})`]);
  if (p.extra.size > 0) rows.push(['unknown keys', [...p.extra.keys()].map(String).join(', ')]);
  rows.push(['fp', toHex(p.fp)], ['size', `${p.size} bytes, alg ${p.alg}`], ['verified', verdict]);
  return rows.map(([k, v]) => `${k.padEnd(12)} ${v}`).join('\n');
}

const decode: Command = {
  path: ['decode'],
  summary: 'print a raw packet (stdin) for a person; with --topic also check its signature',
  flags: {
    topic: { type: 'string', value: 'TOPIC', help: 'the topic it came from: checks signature and topic binding' },
    hex: { type: 'string', value: 'HEX', help: 'the packet as hex instead of stdin' },
  },
  details: 'Example: mosquitto_sub -C 1 -N -v … is not raw; use: mosquitto_sub -C 1 -N -t "$T" | qis decode --topic "$T"',
  async run(flags, io) {
    const bytes = await packetBytes(flags, io);
    const p = tolerant(bytes, decodePacket);
    if (flags.topic === undefined) {
      return { json: { ok: true, signature: 'unchecked', ...packetJson(p) }, human: describe(p, 'not checked (give --topic: the signature covers it)') };
    }
    const topic = str(flags.topic);
    try {
      tolerant(bytes, (b) => verifyPacket(topic, b));
      return { json: { ok: true, signature: 'valid', ...packetJson(p) }, human: describe(p, `valid for ${topic}`) };
    } catch (e) {
      if (!(e instanceof QisError)) throw e;
      return {
        json: { ok: false, code: e.code, message: e.message, signature: 'invalid', ...packetJson(p) },
        human: describe(p, `INVALID ${e.code}: ${e.message}`),
        status: EXIT_REFUSED,
      };
    }
  },
};

export const coreCommands: readonly Command[] = [keygen, addressCmd, sign, verify, decode];
