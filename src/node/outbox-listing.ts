/**
 * What a data directory's outbox holds, read without opening the node (no lock, nothing moved):
 * for `qis status` and for the set-aside files an earlier run left.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fromHex } from '../protocol/bytes.js';
import { decodePacket } from '../protocol/packet.js';
import { ioError } from './durable.js';
import { CHAR_KIND, ENTRY_RE } from './outbox.js';

export interface ListedEntry {
  /** File name in `<dataDir>/outbox`. */
  readonly name: string;
  /** packet | tombstone | score, or `unknown` for a file whose name is not an outbox entry's. */
  readonly kind: string;
  readonly tplId?: string;
  readonly seq?: number;
  readonly topic?: string;
  /** The packet's ts (Unix ms), when the file holds a readable outcome packet or tombstone. */
  readonly ts?: number;
}

export interface OutboxListing {
  readonly queued: readonly ListedEntry[];
  /** `*.bad`: refused by the broker again and again, or unreadable at start; never sent again. */
  readonly setAside: readonly ListedEntry[];
}

/** Lists `<dataDir>/outbox` (empty when it does not exist). @throws QisError ERR_FILE_IO */
export async function listOutbox(dataDir: string): Promise<OutboxListing> {
  const dir = join(dataDir, 'outbox');
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { queued: [], setAside: [] };
    throw ioError(dir, e);
  }
  const queued: ListedEntry[] = [];
  const setAside: ListedEntry[] = [];
  for (const name of names) {
    if (name.startsWith('.')) continue; // a write in progress
    const bad = name.endsWith('.bad');
    if (!bad && !name.endsWith('.json')) continue;
    (bad ? setAside : queued).push(await describe(dir, name));
  }
  return { queued, setAside };
}

async function describe(dir: string, name: string): Promise<ListedEntry> {
  const m = ENTRY_RE.exec(name.replace(/\.bad$/, ''));
  if (!m?.[2] || !m[3] || !m[4]) return { name, kind: 'unknown' };
  const base = { name, kind: CHAR_KIND[m[3]] ?? 'unknown', tplId: m[2], seq: Number(m[4]) };
  try {
    const json = JSON.parse(await readFile(join(dir, name), 'utf8')) as { topic?: unknown; packet?: unknown };
    const topic = typeof json.topic === 'string' ? json.topic : undefined;
    const bytes = typeof json.packet === 'string' ? fromHex(json.packet) : undefined;
    const ts = bytes && base.kind !== 'score' ? decodePacket(bytes).ts : undefined;
    return { ...base, ...(topic !== undefined ? { topic } : {}), ...(ts !== undefined ? { ts } : {}) };
  } catch {
    return base; // unreadable: the name says what it was meant to be
  }
}
