/**
 * `qis operator keygen`, `qis enrol`, `qis revoke`, `qis broker passwd`, and the enrolment
 * verdict of `qis packet verify --trust` (PROTOCOL §10–§11).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  QisError,
  checkEnrolment,
  checkPacketEnrolment,
  createEnrolment,
  decodeEnrolment,
  decodeSign1,
  enrolmentExpiresIn,
  fromHex,
  generateKey,
  installEnrolment,
  isNodeId,
  isTplId,
  keyToJson,
  loadKeyFile,
  loadTemplate,
  operatorIdOf,
  parseOperatorRef,
  publishRevocation,
  revocationIndex,
  revocationTopic,
  saveKeyFile,
  signRevocation,
  toHex,
  verifyRevocation,
  type Enrolment,
  type VerifiedPacket,
  type VerifiedRevocation,
} from '../src/index.js';
import { setPassword, MAX_PASSWORD_BYTES } from '../broker/passwd.js';
import { CONNECTION, registryOptions } from './node-commands.js';
import { numberFlag, str, usage, type Command, type Flags, type Io } from './run.js';

const DAY_S = 86_400;
/** `qis enrol --install` and `packet verify` mention an enrolment that ends sooner than this. */
const WARN_DAYS = 30;

function fileError(path: string, e: unknown): QisError {
  return new QisError('ERR_FILE_IO', `${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}: ${(e as Error).message}`, { cause: e });
}

async function readBytes(path: string, limit = 64 * 1024): Promise<Uint8Array> {
  let b: Buffer;
  try {
    b = await readFile(path);
  } catch (e) {
    throw fileError(path, e);
  }
  if (b.length > limit) throw usage(`${path} is larger than ${limit} bytes`);
  return new Uint8Array(b);
}

/** Raw CBOR as `qis enrol --out` writes it, or the same as hex text (as `--json` prints it). */
function rawOrHex(b: Uint8Array): Uint8Array {
  const text = Buffer.from(b).toString('latin1').trim();
  return (/^[0-9a-fA-F]+$/.test(text) && fromHex(text)) || b;
}

function isoSeconds(s: number): string {
  const d = new Date(s * 1000);
  return Number.isNaN(d.getTime()) ? `${s}` : d.toISOString();
}

function enrolmentJson(e: Enrolment): Record<string, unknown> {
  return {
    operatorId: e.operatorId,
    operatorPublicKey: toHex(e.operatorPublicKey),
    nodeId: e.nodeId,
    nodePublicKey: toHex(e.nodePublicKey),
    exp: e.exp,
    ...(e.nbf !== undefined ? { nbf: e.nbf } : {}),
    ...(e.scope !== undefined ? { scope: e.scope } : {}),
  };
}

function validity(e: Enrolment, now: number): string {
  const left = enrolmentExpiresIn(e, now);
  if (left < 0) return `EXPIRED at ${isoSeconds(e.exp)}`;
  const days = Math.floor(left / DAY_S);
  return `until ${isoSeconds(e.exp)} (${days} days${days < WARN_DAYS ? ': renew it soon' : ''})`;
}

// ---------------------------------------------------------------------------------- operator keygen

const operatorKeygen: Command = {
  path: ['operator', 'keygen'],
  summary: "create an operator key (Ed25519): the key that enrols a fleet's nodes",
  flags: { out: { type: 'string', value: 'FILE', help: 'where to write the key file, mode 0600 (never overwritten)', required: true } },
  details: `The file has the node key file's form; its "nodeId" is the operator id (PROTOCOL §10).
Give the operator id (or public key) to everyone who should trust this operator (--trust).
Example: qis operator keygen --out operator.key`,
  async run(flags) {
    const key = generateKey();
    const file = str(flags.out);
    await saveKeyFile(file, key);
    const { publicKey, nodeId } = keyToJson(key);
    return {
      json: { ok: true, operatorId: nodeId, publicKey, file },
      human: `wrote ${file} (mode 0600)\noperator id  ${nodeId}\npublic key   ${publicKey}\nkeep it offline; enrol nodes with: qis enrol --operator-key ${file} --node NODE_KEY_OR_PUBKEY`,
    };
  },
};

// ---------------------------------------------------------------------------------- enrol

/** A node's public key: 64 hex digits, or a JSON file with "publicKey" (its key file, or `qis keygen --json` output). */
async function nodePublicKey(value: string): Promise<Uint8Array> {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return fromHex(value)!;
  if (isNodeId(value)) throw usage('--node needs the public key (64 hex digits) or a key file: a node id is a hash and cannot be enrolled');
  let json: unknown;
  try {
    json = JSON.parse(await readFile(value, 'utf8'));
  } catch (e) {
    if (e instanceof SyntaxError) throw new QisError('ERR_KEY_FILE_INVALID', `${value}: not valid JSON`);
    throw fileError(value, e);
  }
  const pk = typeof json === 'object' && json !== null ? (json as Record<string, unknown>).publicKey : undefined;
  const b = typeof pk === 'string' && /^[0-9a-fA-F]{64}$/.test(pk) ? fromHex(pk) : undefined;
  if (!b) throw new QisError('ERR_KEY_FILE_INVALID', `${value}: expected a JSON object with "publicKey" (64 hex digits)`);
  return b;
}

/** A template id, or a template file whose id is taken. */
async function templateId(value: string): Promise<string> {
  if (isTplId(value)) return value;
  return (await loadTemplate(value)).tplId;
}

async function install(flags: Flags): Promise<{ json: unknown; human: string }> {
  if (flags['data-dir'] === undefined) throw usage('--install needs --data-dir DIR (the node\'s directory, holding key.json)');
  for (const f of ['operator-key', 'node', 'days', 'template', 'out']) if (flags[f] !== undefined) throw usage(`--${f} does not go with --install`);
  const dir = str(flags['data-dir']);
  const bytes = rawOrHex(await readBytes(str(flags.install)));
  const key = await loadKeyFile(join(dir, 'key.json'));
  const now = Date.now();
  const c = checkEnrolment(bytes, key.publicKey, { now });
  if (!c.ok && c.reason !== 'not-yet-valid') throw new QisError(c.reason === 'invalid' ? 'ERR_ENROLMENT_INVALID' : c.code, c.message);
  const e = await installEnrolment(dir, bytes, key.publicKey);
  const file = join(dir, 'enrolment.cbor');
  return {
    json: { ok: true, file, ...enrolmentJson(e), expiresInS: enrolmentExpiresIn(e, now) },
    human: [
      `installed ${file}`,
      `node       ${e.nodeId}`,
      `operator   ${e.operatorId}`,
      `valid      ${c.ok ? '' : `from ${isoSeconds(e.nbf ?? 0)} `}${validity(e, now)}`,
      `templates  ${e.scope ? e.scope.join(', ') : 'any'}`,
    ].join('\n'),
  };
}

const enrol: Command = {
  path: ['enrol'],
  summary: "vouch for a node key as an operator (writes the enrolment), or install one in a node's data dir",
  flags: {
    'operator-key': { type: 'string', value: 'FILE', help: 'the operator key file (qis operator keygen)' },
    node: { type: 'string', value: 'KEYFILE|PUBKEY', help: "the node's public key: 64 hex digits, or a JSON file with \"publicKey\" (its key.json)" },
    days: { type: 'string', value: 'N', help: 'valid for N days from now (default 365)' },
    template: { type: 'string', value: 'ID|FILE', help: 'limit the node to this template (id or file); repeat for several; default: any', multiple: true },
    out: { type: 'string', value: 'FILE', help: 'write the enrolment (raw CBOR) to FILE; it is not secret' },
    install: { type: 'string', value: 'FILE', help: 'install this enrolment (raw CBOR or hex) into --data-dir instead' },
    'data-dir': { type: 'string', value: 'DIR', help: "with --install: the node's directory (holding key.json)" },
  },
  details: `Two forms:
  qis enrol --operator-key operator.key --node /var/lib/qis/key.json [--days 365] [--template ID …] --out node.enrolment
  qis enrol --install node.enrolment --data-dir /var/lib/qis
The enrolment is a CWT signed by the operator (PROTOCOL §10). The node carries it in every packet;
brokers in enrolment mode "required" and queriers with --trust count only enrolled nodes.
--install checks that it vouches for the key in DIR/key.json and has not expired.`,
  async run(flags) {
    if (flags.install !== undefined) return install(flags);
    if (flags['operator-key'] === undefined || flags.node === undefined) throw usage('enrol needs --operator-key FILE and --node KEYFILE|PUBKEY (or --install FILE --data-dir DIR)');
    if (flags['data-dir'] !== undefined) throw usage('--data-dir goes with --install');
    const days = flags.days === undefined ? 365 : numberFlag('days', str(flags.days), true);
    if (days < 1) throw usage('--days must be at least 1');
    const [operator, node] = await Promise.all([loadKeyFile(str(flags['operator-key'])), nodePublicKey(str(flags.node))]);
    const templates = flags.template === undefined ? undefined : await Promise.all((flags.template as string[]).map(templateId));
    const now = Date.now();
    const bytes = createEnrolment(operator, { node, exp: Math.floor(now / 1000) + days * DAY_S, ...(templates ? { scope: templates } : {}) });
    const e = decodeEnrolment(bytes);
    if (flags.out !== undefined) {
      try {
        await writeFile(str(flags.out), bytes);
      } catch (err) {
        throw fileError(str(flags.out), err);
      }
    }
    const hex = toHex(bytes);
    return {
      json: { ok: true, ...enrolmentJson(e), enrolment: hex, size: bytes.length, ...(flags.out !== undefined ? { file: str(flags.out) } : {}) },
      human: [
        `node       ${e.nodeId}`,
        `operator   ${e.operatorId}`,
        `valid      ${validity(e, now)}`,
        `templates  ${e.scope ? e.scope.join(', ') : 'any'}`,
        `size       ${bytes.length} bytes`,
        flags.out !== undefined ? `wrote      ${str(flags.out)}  (on the node: qis enrol --install ${str(flags.out)} --data-dir DIR)` : `enrolment  ${hex}`,
      ].join('\n'),
    };
  },
};

// ---------------------------------------------------------------------------------- revoke

const revoke: Command = {
  path: ['revoke'],
  summary: "sign an operator's revocation list for qis/1/r/<operatorId> and publish it retained (--url), or write it",
  flags: {
    'operator-key': { type: 'string', value: 'FILE', help: 'the operator key file', required: true },
    node: { type: 'string', value: 'NODE_ID', help: 'a node id to revoke; repeat for each (the list replaces the previous one: give them all)', multiple: true },
    seq: { type: 'string', value: 'N', help: 'sequence number, above the last list published (default: Unix ms now)' },
    out: { type: 'string', value: 'FILE', help: 'write the signed list (raw bytes) to FILE' },
    ...CONNECTION,
    url: { ...CONNECTION['url']!, required: false, help: 'publish the list retained (QoS 1) to this broker and wait for its PUBACK' },
  },
  details: `The list is the operator's whole current list (PROTOCOL §10), at most about 23 node ids
(the 512-byte packet limit). With --url it is published retained at QoS 1 on qis/1/r/<operatorId>
(a qis broker in enrolment mode then removes the revoked nodes' packets and refuses their new
ones; its federation carries the list to the other regions), e.g.:
  qis revoke --operator-key operator.key --node ID1 --node ID2 --url mqtt://localhost
Without --url it is only written (--out) or printed; publish it yourself, e.g.:
  qis revoke --operator-key operator.key --node ID1 --out r.bin --json | jq -r .topic
  mosquitto_pub -t "<topic>" -r -q 1 -f r.bin`,
  async run(flags) {
    const ids = (flags.node as string[] | undefined) ?? [];
    for (const id of ids) if (!isNodeId(id)) throw usage(`--node ${id} is not a node id (26 base32 characters)`);
    const operator = await loadKeyFile(str(flags['operator-key']));
    const now = Date.now();
    const { topic, packet } = signRevocation(operator, { seq: flags.seq === undefined ? now : numberFlag('seq', str(flags.seq), true), ts: now, revoked: ids });
    if (flags.out !== undefined) {
      try {
        await writeFile(str(flags.out), packet);
      } catch (e) {
        throw fileError(str(flags.out), e);
      }
    }
    const v = verifyRevocation(topic, packet);
    const hex = toHex(packet);
    const url = flags.url === undefined ? undefined : str(flags.url);
    if (url !== undefined) {
      await publishRevocation({ topic, packet }, await registryOptions(flags));
    }
    return {
      json: { ok: true, topic, operatorId: v.operatorId, seq: v.seq, revoked: v.revoked, packet: hex, size: packet.length, ...(url !== undefined ? { published: url } : {}) },
      human: `topic    ${topic}\nrevoked  ${v.revoked.length === 0 ? '(none)' : v.revoked.join(' ')}\nseq      ${v.seq}\n${flags.out !== undefined ? `wrote    ${str(flags.out)}` : `packet   ${hex}`}${url !== undefined ? `\npublished to ${url} (acknowledged)` : ''}`,
    };
  },
};

// ---------------------------------------------------------------------------------- broker passwd

/** Reads one line from a terminal without echoing it. */
async function promptHidden(io: Io, question: string): Promise<string> {
  const stdin = io.stdin as NodeJS.ReadStream;
  io.stderr.write(question);
  stdin.setRawMode?.(true);
  stdin.resume();
  let line = '';
  try {
    for await (const chunk of stdin as AsyncIterable<Buffer | string>) {
      for (const ch of String(chunk)) {
        if (ch === '\r' || ch === '\n') return line;
        if (ch === '\u0003') throw usage('cancelled');
        if (ch === '\u007f' || ch === '\b') line = line.slice(0, -1);
        else line += ch;
        if (line.length > MAX_PASSWORD_BYTES) throw usage(`a password is at most ${MAX_PASSWORD_BYTES} bytes`);
      }
    }
    return line;
  } finally {
    stdin.setRawMode?.(false);
    stdin.pause();
    io.stderr.write('\n');
  }
}

async function readPassword(io: Io): Promise<string> {
  if (io.stdin.isTTY) {
    const a = await promptHidden(io, 'Password: ');
    const b = await promptHidden(io, 'Reenter password: ');
    if (a !== b) throw usage('the passwords do not match');
    if (a === '') throw usage('the password is empty');
    return a;
  }
  let text = '';
  for await (const chunk of io.stdin as AsyncIterable<Buffer | string>) {
    text += String(chunk);
    if (text.length > MAX_PASSWORD_BYTES + 2) throw usage(`a password is at most ${MAX_PASSWORD_BYTES} bytes`);
  }
  const pw = text.split(/\r?\n/)[0] ?? '';
  if (pw === '') throw usage('no password on stdin (the first line is the password)');
  return pw;
}

const passwd: Command = {
  path: ['broker', 'passwd'],
  summary: 'add or change a user in a broker password file (salted scrypt hashes, like mosquitto_passwd)',
  flags: {},
  positionals: [
    { name: 'file', help: 'the password file (created with mode 0600 if missing)' },
    { name: 'user', help: 'the user name (no ":")' },
  ],
  details: `The password is read from stdin (its first line), or prompted for twice on a terminal.
Lines: user:scrypt$N$r$p$<salt base64>$<hash base64>. Example:
  printf '%s\\n' "$PW" | qis broker passwd /etc/qis/passwd gateway-7`,
  async run(flags, io) {
    const file = str(flags.file);
    const user = str(flags.user);
    await setPassword(file, user, await readPassword(io));
    return { json: { ok: true, file, user }, human: `${file}: password set for ${user}` };
  },
};

// ---------------------------------------------------------------------------------- packet verify --trust

/** Revocation lists written by `qis revoke --out` (the topic follows from the signer's key). */
async function readRevocations(files: readonly string[]): Promise<VerifiedRevocation[]> {
  const out: VerifiedRevocation[] = [];
  for (const f of files) {
    const bytes = rawOrHex(await readBytes(f, 4096));
    const kid = decodeSign1(bytes).unprotected.get(4);
    if (!(kid instanceof Uint8Array) || kid.length !== 32) throw new QisError('ERR_REVOCATION_INVALID', `${f}: no operator key (kid)`);
    out.push(verifyRevocation(revocationTopic(operatorIdOf(kid)), bytes));
  }
  return out;
}

/** Flags `qis packet verify` takes for the enrolment check. */
export const TRUST_FLAGS = {
  trust: { type: 'string', value: 'OPERATOR', help: 'also require a valid enrolment by this operator (id or public key); repeat for several', multiple: true },
  revocations: { type: 'string', value: 'FILE', help: 'with --trust: a revocation list file (qis revoke --out); repeat for several', multiple: true },
} as const;

/**
 * The enrolment part of `qis packet verify --trust`: undefined without --trust; otherwise the
 * JSON to merge, the human line and whether the packet is refused.
 */
export async function enrolmentVerdict(flags: Flags, p: VerifiedPacket): Promise<{ json: Record<string, unknown>; human: string; refused: boolean } | undefined> {
  if (flags.trust === undefined) {
    if (flags.revocations !== undefined) throw usage('--revocations goes with --trust');
    return undefined;
  }
  const operators = new Set((flags.trust as string[]).map((t) => {
    try {
      return parseOperatorRef(t);
    } catch {
      throw usage(`--trust ${t} is not an operator id (26 base32 characters) or public key (64 hex digits)`);
    }
  }));
  const revoked = revocationIndex(await readRevocations((flags.revocations as string[] | undefined) ?? []));
  const now = Date.now();
  const c = checkPacketEnrolment(p, { now, operators, revoked });
  if (!c.ok) {
    return {
      json: { ok: false, code: c.code, reason: c.reason, message: c.message, ...(c.enrolment ? { enrolment: enrolmentJson(c.enrolment) } : {}) },
      human: `NOT ENROLLED (${c.code}) ${c.message}`,
      refused: true,
    };
  }
  return { json: { enrolment: enrolmentJson(c.enrolment) }, human: `enrolled by operator ${c.enrolment.operatorId}, valid ${validity(c.enrolment, now)}`, refused: false };
}

export const enrolCommands: readonly Command[] = [operatorKeygen, enrol, revoke];
export const brokerPasswdCommands: readonly Command[] = [passwd];
