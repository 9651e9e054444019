/**
 * The log's file format: file names, the header, the framing of a record (length, CRC-32, body)
 * and its encoders and validator. docs/store.md ("Files", "Record format") describes it; the
 * format is versioned by MAGIC, so a change here is a new format version.
 */
import { crc32 } from 'node:zlib';
import { MAX_PACKET_BYTES } from '../../src/index.js';
import { ID_CHARS, MAX_TOPIC } from './common.js';

// File: MAGIC, then records. Record (little-endian):
//   u32 body length | u32 CRC-32 of the body | body
//   body: u8 type | u8 flags | u64 seq | u64 exp (put, Unix s) or at (remove, Unix ms) | u16 text length | text | packet
//   put: text = topic, flags bit 0 = has exp, packet = the rest; remove: text = "<tplId>/<nodeId>", no packet.
//   remove and tomb: flags bit 1 = cold (the key never held a packet here: its floor may be forgotten).
export const LOG_FILE = 'store.log';
export const TMP_FILE = 'store.log.tmp';
export const LOCK_FILE = 'store.lock';
export const MAGIC = Buffer.from('QISLOG\x00\x01', 'latin1'); // name, format version 1
export const HEADER_BYTES = MAGIC.length;
export const FRAME = 8;
export const FIXED = 20;
export const TYPE_PUT = 1;
export const TYPE_REMOVE = 2;
/** A removal with its proof: text = the tombstone's topic, packet = the signed tombstone bytes. */
export const TYPE_TOMB = 3;
export const FLAG_EXP = 1;
/** A removal (type 2 or 3) of a key that never held a packet in this store (docs/store.md, "Floors for keys never held"). */
export const FLAG_COLD = 2;
// 'qis/1/o/' + tplId + '/' + one 10-character level + '/' + nodeId
export const MIN_TOPIC = 8 + ID_CHARS + 1 + 10 + 1 + ID_CHARS;
const KEY_CHARS = 2 * ID_CHARS + 1;
const MAX_BODY = FIXED + MAX_TOPIC + MAX_PACKET_BYTES;
export const MAX_FRAME = FRAME + MAX_BODY;
const TWO32 = 2 ** 32;

/** A plain view for crc32: cheaper than Buffer#subarray, which replay would call a million times. */
export const view = (buf: Buffer, off: number, len: number): Uint8Array => new Uint8Array(buf.buffer, buf.byteOffset + off, len);

function writeU53(buf: Buffer, v: number, off: number): void {
  buf.writeUInt32LE(v % TWO32, off);
  buf.writeUInt32LE(Math.floor(v / TWO32), off + 4);
}
export function readU53(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off + 4) * TWO32 + buf.readUInt32LE(off);
}
/** Does buf[at, at+len) spell `path`? Compared from the end, where bucket paths differ. */
export function isPath(path: string, buf: Buffer, at: number, len: number): boolean {
  if (path.length !== len) return false;
  for (let k = len - 1; k >= 0; k--) if (buf[at + k] !== path.charCodeAt(k)) return false;
  return true;
}

/** Writes a put record at `off`; returns the offset after it. `exp` < 0: none. */
export function writePut(out: Buffer, off: number, topic: string, seq: number, exp: number, packet: Uint8Array): number {
  const body = FIXED + topic.length + packet.length;
  const b = off + FRAME;
  out.writeUInt32LE(body, off);
  out[b] = TYPE_PUT;
  out[b + 1] = exp >= 0 ? FLAG_EXP : 0;
  writeU53(out, seq, b + 2);
  writeU53(out, exp >= 0 ? exp : 0, b + 10);
  out.writeUInt16LE(topic.length, b + 18);
  out.write(topic, b + FIXED, 'latin1'); // outcome topics are ASCII (checked by parseOutcomeTopic)
  out.set(packet, b + FIXED + topic.length);
  out.writeUInt32LE(crc32(view(out, b, body)), off + 4);
  return b + body;
}

export function writeRemove(out: Buffer, off: number, tpl: string, node: string, seq: number, at: number, cold = false): number {
  const body = FIXED + KEY_CHARS;
  const b = off + FRAME;
  out.writeUInt32LE(body, off);
  out[b] = TYPE_REMOVE;
  out[b + 1] = cold ? FLAG_COLD : 0;
  writeU53(out, seq, b + 2);
  writeU53(out, at, b + 10);
  out.writeUInt16LE(KEY_CHARS, b + 18);
  out.write(`${tpl}/${node}`, b + FIXED, 'latin1');
  out.writeUInt32LE(crc32(view(out, b, body)), off + 4);
  return b + body;
}

/** A removal with its proof (type 3): same layout as a put, `at` in place of exp. */
export function writeTomb(out: Buffer, off: number, topic: string, seq: number, at: number, packet: Uint8Array, cold = false): number {
  const end = writePut(out, off, topic, seq, at, packet);
  const b = off + FRAME;
  out[b] = TYPE_TOMB;
  out[b + 1] = cold ? FLAG_COLD : 0;
  out.writeUInt32LE(crc32(view(out, b, end - b)), off + 4);
  return end;
}

export const putBytes = (topicLength: number, packetLength: number): number => FRAME + FIXED + topicLength + packetLength;
export const REMOVE_BYTES = FRAME + FIXED + KEY_CHARS;

/** Length of the valid record starting at buf[i] (`avail` bytes readable from there), or 0. */
export function frameAt(buf: Buffer, i: number, avail: number): number {
  if (avail < FRAME + FIXED) return 0;
  const body = buf.readUInt32LE(i);
  if (body < FIXED || body > MAX_BODY || FRAME + body > avail) return 0;
  const b = i + FRAME;
  const type = buf.readUInt8(b);
  const flags = buf.readUInt8(b + 1);
  const text = buf.readUInt16LE(b + 18);
  if (type === TYPE_PUT) {
    const packet = body - FIXED - text;
    if (flags > FLAG_EXP || text < MIN_TOPIC || text > MAX_TOPIC || packet < 1 || packet > MAX_PACKET_BYTES) return 0;
  } else if (type === TYPE_TOMB) {
    const packet = body - FIXED - text;
    if ((flags | FLAG_COLD) !== FLAG_COLD || text < MIN_TOPIC || text > MAX_TOPIC || packet < 1 || packet > MAX_PACKET_BYTES) return 0;
  } else if (type !== TYPE_REMOVE || (flags | FLAG_COLD) !== FLAG_COLD || text !== KEY_CHARS || body !== FIXED + KEY_CHARS) {
    return 0;
  }
  if (crc32(view(buf, b, body)) !== buf.readUInt32LE(i + 4)) return 0;
  return FRAME + body;
}

// ------------------------------------------------------------------------------ memory

/**
 * File names inside a store directory and the size of the log header, for tools and tests that
 * inspect the files (docs/store.md describes the format).
 * @example const log = join(dir, STORE_FILES.log)
 */
export const STORE_FILES = Object.freeze({ log: LOG_FILE, lock: LOCK_FILE, temp: TMP_FILE, headerBytes: HEADER_BYTES });
