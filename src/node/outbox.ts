/**
 * The node's store-and-forward outbox and its per-template state, in the data directory.
 *
 * Every packet is written durably (temp file, fsync, rename, fsync dir) before it is sent, and
 * removed only after the broker's PUBACK. The outbox coalesces: it keeps at most the newest
 * packet per template plus the tombstones still owed for buckets the node has left, so it is
 * bounded by construction however long an outage lasts.
 */
import { readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fromHex, toHex } from '../protocol/bytes.js';
import { ensureDir, ioError, syncDir, unlinkDurable, writeFileDurable } from './durable.js';
import { QisError } from '../protocol/errors.js';
import type { NodeId } from '../protocol/identity.js';
import { checkPacket, decodePacket } from '../protocol/packet.js';
import { checkScorePacket } from '../protocol/score.js';

/** `score`: the node's score packet for a template (PROTOCOL §9, topic qis/1/s/…). */
export type OutboxKind = 'packet' | 'tombstone' | 'score';

/** One packet waiting for its PUBACK. */
export interface OutboxEntry {
  /** File name in the outbox directory; unique, and sorts in send order. */
  readonly name: string;
  /** Position in send order. */
  readonly order: number;
  readonly kind: OutboxKind;
  readonly tplId: string;
  readonly topic: string;
  readonly seq: number;
  /** The packet exactly as signed. */
  readonly packet: Uint8Array;
  /** Unix s after which the packet is stale and not worth sending. */
  readonly exp?: number;
}

/** What the node remembers per template: the last seq it handed out and where its packet lives. */
export interface TemplateState {
  readonly seq: number;
  readonly topic: string;
  /** hex of the fp of the bucket `topic` belongs to (a tombstone for it needs the fp). */
  readonly fp: string;
}

export const ENTRY_RE = /^(\d{12})-([a-z2-7]{26})-([pts])-(\d+)\.json$/;
const KIND_CHAR: Record<OutboxKind, string> = { packet: 'p', tombstone: 't', score: 's' };
export const CHAR_KIND: Record<string, OutboxKind> = { p: 'packet', t: 'tombstone', s: 'score' };

function entryName(order: number, tplId: string, kind: OutboxKind, seq: number): string {
  return `${String(order).padStart(12, '0')}-${tplId}-${KIND_CHAR[kind]}-${seq}.json`;
}

/**
 * Which queued entries a new entry makes pointless (pure; used on add and again on load, so a
 * crash between writing the new entry and removing the old ones is repaired at restart):
 * - a packet replaces every older packet of its template, and an older tombstone on its own topic;
 * - a tombstone replaces older entries of its template on its topic (packet or tombstone);
 * - a score packet replaces the older score packets of its template, and nothing else.
 */
export function supersededBy(queued: readonly OutboxEntry[], e: OutboxEntry): OutboxEntry[] {
  return queued.filter(
    (q) =>
      q.name !== e.name &&
      q.tplId === e.tplId &&
      q.order < e.order &&
      (e.kind === 'score' || q.kind === 'score' ? e.kind === q.kind : e.kind === 'packet' ? q.kind === 'packet' || q.topic === e.topic : q.topic === e.topic),
  );
}

/** Entries to drop from a loaded outbox: everything superseded by a later entry. */
export function coalesce(entries: readonly OutboxEntry[]): Set<string> {
  const drop = new Set<string>();
  for (const e of entries) for (const q of supersededBy(entries, e)) drop.add(q.name);
  return drop;
}

export interface LoadedOutbox {
  readonly outbox: Outbox;
  /** Files that could not be read as this node's packets; moved aside as `<name>.bad`. */
  readonly bad: readonly { readonly name: string; readonly error: QisError }[];
}

/** The outbox directory and the per-template state directory of one node. */
export class Outbox {
  readonly #dir: string;
  readonly #stateDir: string;
  readonly #entries = new Map<string, OutboxEntry>();
  readonly #state = new Map<string, TemplateState>();
  #nextOrder: number;

  private constructor(dir: string, stateDir: string, nextOrder: number) {
    this.#dir = dir;
    this.#stateDir = stateDir;
    this.#nextOrder = nextOrder;
  }

  /**
   * Opens (creating) `<dataDir>/outbox` and `<dataDir>/state`, reads every queued entry and
   * checks that it is a packet of `nodeId` with the seq its name says.
   * @throws QisError ERR_FILE_IO
   */
  static async open(dataDir: string, nodeId: NodeId): Promise<LoadedOutbox> {
    const dir = join(dataDir, 'outbox');
    const stateDir = join(dataDir, 'state');
    await ensureDir(dir);
    await ensureDir(stateDir);
    const bad: { name: string; error: QisError }[] = [];
    const loaded: OutboxEntry[] = [];
    let names: string[];
    try {
      names = (await readdir(dir)).sort();
    } catch (e) {
      throw ioError(dir, e);
    }
    await removeTempFiles(dir, names);
    for (const name of names) {
      if (name.startsWith('.') || name.endsWith('.bad')) continue; // temp files of an interrupted write; set-aside files
      try {
        loaded.push(await readEntry(dir, name, nodeId));
      } catch (e) {
        const error = e instanceof QisError && e.code === 'ERR_OUTBOX_ENTRY_INVALID' ? e : new QisError('ERR_OUTBOX_ENTRY_INVALID', `${join(dir, name)}: ${(e as Error).message}`, { cause: e });
        bad.push({ name, error });
        await rename(join(dir, name), join(dir, `${name}.bad`)).catch(() => undefined);
      }
    }
    const maxOrder = loaded.reduce((m, e) => Math.max(m, e.order), 0);
    const box = new Outbox(dir, stateDir, maxOrder + 1);
    const drop = coalesce(loaded);
    for (const e of loaded) {
      if (drop.has(e.name)) await unlinkDurable(join(dir, e.name));
      else box.#entries.set(e.name, e);
    }
    let stateNames: string[];
    try {
      stateNames = await readdir(stateDir);
    } catch (e) {
      throw ioError(stateDir, e);
    }
    await removeTempFiles(stateDir, stateNames);
    for (const name of stateNames) {
      const m = /^([a-z2-7]{26})\.json$/.exec(name);
      if (!m?.[1]) continue;
      try {
        const s = JSON.parse(await readFile(join(stateDir, name), 'utf8')) as TemplateState;
        if (Number.isSafeInteger(s.seq) && typeof s.topic === 'string' && typeof s.fp === 'string') box.#state.set(m[1], s);
      } catch {
        // A lost or unreadable state file only costs the counter: seq falls back to Unix ms (PROTOCOL §5).
      }
    }
    return { outbox: box, bad };
  }

  /** Queued entries in send order. */
  entries(): OutboxEntry[] {
    return [...this.#entries.values()].sort((a, b) => a.order - b.order);
  }

  get size(): number {
    return this.#entries.size;
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** Where the node's packet for a template lives now (as last published), if it ever published one. */
  bucket(tplId: string): TemplateState | undefined {
    return this.#state.get(tplId);
  }

  /** Highest outcome-packet seq known for a template (state or outbox), 0 when none (score packets count apart). */
  lastSeq(tplId: string): number {
    let seq = this.#state.get(tplId)?.seq ?? 0;
    for (const e of this.#entries.values()) if (e.tplId === tplId && e.kind !== 'score' && e.seq > seq) seq = e.seq;
    return seq;
  }

  /** Records durably the last seq handed out for a template and the bucket it now lives in. */
  async setState(tplId: string, s: TemplateState): Promise<void> {
    await writeFileDurable(join(this.#stateDir, `${tplId}.json`), JSON.stringify(s) + '\n');
    this.#state.set(tplId, s);
  }

  /**
   * Queues a packet durably, then drops what it supersedes.
   * @returns the queued entry
   */
  async add(kind: OutboxKind, tplId: string, topic: string, seq: number, packet: Uint8Array, exp?: number): Promise<OutboxEntry> {
    const order = this.#nextOrder++;
    const name = entryName(order, tplId, kind, seq);
    const json: Record<string, unknown> = { v: 1, kind, tplId, topic, seq, packet: toHex(packet) };
    if (exp !== undefined) json['exp'] = exp;
    await writeFileDurable(join(this.#dir, name), JSON.stringify(json) + '\n');
    const entry: OutboxEntry = exp === undefined ? { name, order, kind, tplId, topic, seq, packet } : { name, order, kind, tplId, topic, seq, packet, exp };
    const old = supersededBy([...this.#entries.values()], entry);
    this.#entries.set(name, entry);
    for (const q of old) await this.remove(q.name);
    return entry;
  }

  /** Moves an entry aside as `<name>.bad` (kept for a person to inspect, never sent again). */
  async setAside(name: string): Promise<void> {
    this.#entries.delete(name);
    try {
      await rename(join(this.#dir, name), join(this.#dir, `${name}.bad`));
      await syncDir(this.#dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(join(this.#dir, name), e);
    }
  }

  /** Removes an entry (after its PUBACK, or when it expired); gone already is fine. */
  async remove(name: string): Promise<void> {
    this.#entries.delete(name);
    await unlinkDurable(join(this.#dir, name));
  }
}

async function readEntry(dir: string, name: string, nodeId: NodeId): Promise<OutboxEntry> {
  const m = ENTRY_RE.exec(name);
  const invalid = (why: string): never => {
    throw new QisError('ERR_OUTBOX_ENTRY_INVALID', `${join(dir, name)}: ${why}`);
  };
  if (!m?.[1] || !m[2] || !m[3] || !m[4]) return invalid('not an outbox file name');
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(await readFile(join(dir, name), 'utf8')) as Record<string, unknown>;
  } catch (e) {
    return invalid(`unreadable (${(e as Error).message})`);
  }
  const { topic, packet: hex, seq, exp } = json;
  if (typeof topic !== 'string' || typeof hex !== 'string' || typeof seq !== 'number') return invalid('missing topic, packet or seq');
  const packet = fromHex(hex) ?? invalid('packet is not hex');
  const kind = CHAR_KIND[m[3]] as OutboxKind;
  if (kind === 'score') {
    // A score packet (PROTOCOL §9): the same checks against its own topic form.
    if (!topic.startsWith(`qis/1/s/${m[2]}/`)) return invalid(`topic ${topic} is not a score topic of template ${m[2]}`);
    const sc = checkScorePacket(topic, packet);
    if (!sc.ok) return invalid(`score packet does not verify on its topic (${sc.code})`);
    if (sc.score.nodeId !== nodeId) return invalid(`signed by node ${sc.score.nodeId}, not by this node ${nodeId}`);
    if (sc.score.seq !== seq || String(seq) !== m[4]) return invalid('seq differs from the file name');
    return { name, order: Number(m[1]), kind, tplId: m[2], topic, seq, packet };
  }
  let decoded;
  try {
    decoded = decodePacket(packet);
  } catch (e) {
    return invalid(`packet does not decode (${(e as QisError).code ?? (e as Error).message})`);
  }
  // The file is only as good as the packet in it: it must verify on the topic it names, and that
  // topic must be under the template its name says (a swapped or tampered file is set aside).
  if (!topic.startsWith(`qis/1/o/${m[2]}/`)) return invalid(`topic ${topic} is not under template ${m[2]}`);
  const check = checkPacket(topic, packet, { now: 0 });
  if (!check.ok) return invalid(`packet does not verify on its topic (${check.code})`);
  if (decoded.nodeId !== nodeId) return invalid(`signed by node ${decoded.nodeId}, not by this node ${nodeId}`);
  if (decoded.seq !== seq || String(seq) !== m[4]) return invalid('seq differs from the file name');
  if (decoded.del !== (kind === 'tombstone')) return invalid('kind differs from the packet');
  const base = { name, order: Number(m[1]), kind, tplId: m[2], topic, seq, packet };
  return typeof exp === 'number' ? { ...base, exp } : base;
}

/** Temp files of a durable write that a crash interrupted (`.<name>.<pid>.<hex>.tmp`): safe to remove under the lock. */
async function removeTempFiles(dir: string, names: readonly string[]): Promise<void> {
  for (const name of names) if (name.startsWith('.') && name.endsWith('.tmp')) await unlink(join(dir, name)).catch(() => undefined);
}
