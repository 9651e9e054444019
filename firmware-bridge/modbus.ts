/**
 * A small Modbus TCP client: MBAP framing and the four read functions (1 coils, 2 discrete
 * inputs, 3 holding registers, 4 input registers), plus decoding of register values (16, 32 and
 * 64-bit integers, float32/64, strings, a bit within a register; all four byte orders; scale and
 * offset) and the planning of block reads. Written here instead of
 * taken from a package: the framing is about a hundred lines, and the bridge needs exactly these
 * four reads with its own timeout and reconnect policy.
 */
import { connect, type Socket } from 'node:net';
import { QisError } from '../src/index.js';

export type Table = 'coil' | 'discrete' | 'holding' | 'input';
export type NumericType = 'int16' | 'uint16' | 'int32' | 'uint32' | 'float32' | 'int64' | 'uint64' | 'float64';
export type RegisterType = NumericType | 'string';
/**
 * Where the bytes of a value sit in its registers, named by the big-endian bytes A (most
 * significant) … D: ABCD is big-endian (Modbus's own order), CDAB swaps the words, BADC swaps the
 * bytes within each word, DCBA does both. For 64-bit values the same two swaps apply to four words.
 */
export type ByteOrder = 'ABCD' | 'DCBA' | 'BADC' | 'CDAB';
/** The older name for the two word orders: big = ABCD, little = CDAB. */
export type WordOrder = 'big' | 'little';
export const BYTE_ORDERS: readonly ByteOrder[] = ['ABCD', 'DCBA', 'BADC', 'CDAB'];

/** Modbus function code of each table's read. */
export const READ_FUNCTION: Readonly<Record<Table, number>> = { coil: 1, discrete: 2, holding: 3, input: 4 };

/** Modbus exception codes (Modbus Application Protocol v1.1b3 §7). */
export const EXCEPTION_NAMES: Readonly<Record<number, string>> = {
  1: 'illegal function',
  2: 'illegal data address',
  3: 'illegal data value',
  4: 'server device failure',
  5: 'acknowledge',
  6: 'server device busy',
  8: 'memory parity error',
  10: 'gateway path unavailable',
  11: 'gateway target device failed to respond',
};

/** A device's exception response: `exception` is the Modbus exception code. */
export class ModbusException extends QisError {
  readonly exception: number;
  readonly fn: number;
  constructor(fn: number, exception: number) {
    super('ERR_MODBUS_EXCEPTION', `function ${fn}: exception ${exception} (${EXCEPTION_NAMES[exception] ?? 'unknown'})`);
    this.fn = fn;
    this.exception = exception;
  }
}

/** Number of 16-bit registers a numeric type takes (a string takes its configured length). */
export const registerCount = (type: NumericType): number => ({ int16: 1, uint16: 1, int32: 2, uint32: 2, float32: 2, int64: 4, uint64: 4, float64: 4 })[type];

/** The registers' bytes put into big-endian (ABCD) order. */
export function toBigEndian(bytes: Buffer, order: ByteOrder | WordOrder): Buffer {
  const o = order === 'big' ? 'ABCD' : order === 'little' ? 'CDAB' : order;
  if (o === 'ABCD') return bytes;
  const words = bytes.length >> 1;
  const out = Buffer.alloc(words * 2);
  for (let w = 0; w < words; w++) {
    const from = o === 'BADC' ? w : words - 1 - w; // CDAB and DCBA reverse the words
    const swap = o === 'BADC' || o === 'DCBA';
    out[w * 2] = bytes[from * 2 + (swap ? 1 : 0)]!;
    out[w * 2 + 1] = bytes[from * 2 + (swap ? 0 : 1)]!;
  }
  return out;
}

/** The request ADU for reading `count` items from `address` (MBAP header + PDU). */
export function encodeReadRequest(txId: number, unitId: number, fn: number, address: number, count: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(txId & 0xffff, 0);
  b.writeUInt16BE(0, 2); // protocol id: Modbus
  b.writeUInt16BE(6, 4); // unit id + 5 PDU bytes
  b.writeUInt8(unitId, 6);
  b.writeUInt8(fn, 7);
  b.writeUInt16BE(address, 8);
  b.writeUInt16BE(count, 10);
  return b;
}

/** One complete ADU taken from the front of `buf`, or undefined when more bytes are needed. */
export function takeFrame(buf: Buffer): { txId: number; unitId: number; pdu: Buffer; rest: Buffer } | undefined {
  if (buf.length < 7) return undefined;
  const protocol = buf.readUInt16BE(2);
  const length = buf.readUInt16BE(4);
  if (protocol !== 0 || length < 3 || length > 254) throw new QisError('ERR_DEVICE_UNREACHABLE', `not a Modbus TCP response (protocol id ${protocol}, length ${length})`);
  if (buf.length < 6 + length) return undefined;
  return { txId: buf.readUInt16BE(0), unitId: buf.readUInt8(6), pdu: buf.subarray(7, 6 + length), rest: buf.subarray(6 + length) };
}

/**
 * The data of a read response PDU: register bytes (functions 3, 4) or bits (functions 1, 2).
 * @throws ModbusException for an exception response; QisError ERR_DEVICE_UNREACHABLE for a malformed one
 */
export function parseReadResponse(pdu: Buffer, fn: number, count: number): Buffer | boolean[] {
  if (pdu.length === 0) throw new QisError('ERR_DEVICE_UNREACHABLE', `malformed response to function ${fn}: empty PDU`);
  const got = pdu.readUInt8(0);
  if (got === (fn | 0x80)) throw new ModbusException(fn, pdu.length > 1 ? pdu.readUInt8(1) : 0);
  const bad = (why: string): QisError => new QisError('ERR_DEVICE_UNREACHABLE', `malformed response to function ${fn}: ${why}`);
  if (got !== fn) throw bad(`function ${got}`);
  if (pdu.length < 2) throw bad('no byte count');
  const n = pdu.readUInt8(1);
  const data = pdu.subarray(2);
  if (data.length !== n) throw bad(`byte count ${n} but ${data.length} bytes`);
  if (fn === 3 || fn === 4) {
    if (n !== count * 2) throw bad(`${n} bytes for ${count} registers`);
    return Buffer.from(data);
  }
  if (n !== Math.ceil(count / 8)) throw bad(`${n} bytes for ${count} bits`);
  return Array.from({ length: count }, (_, i) => ((data[i >> 3]! >> (i & 7)) & 1) === 1);
}

/**
 * A numeric value from its registers' bytes as received, then × scale + offset. 64-bit integers
 * become JavaScript numbers: exact up to 2^53, rounded beyond (outcomes and context are numbers).
 */
export function decodeRegisters(bytes: Buffer, type: NumericType, order: ByteOrder | WordOrder = 'ABCD', scale = 1, offset = 0): number {
  const b = toBigEndian(bytes.subarray(0, registerCount(type) * 2), order);
  let raw: number;
  switch (type) {
    case 'int16': raw = b.readInt16BE(0); break;
    case 'uint16': raw = b.readUInt16BE(0); break;
    case 'int32': raw = b.readInt32BE(0); break;
    case 'uint32': raw = b.readUInt32BE(0); break;
    case 'float32': raw = b.readFloatBE(0); break;
    case 'int64': raw = Number(b.readBigInt64BE(0)); break;
    case 'uint64': raw = Number(b.readBigUInt64BE(0)); break;
    case 'float64': raw = b.readDoubleBE(0); break;
  }
  return raw * scale + offset;
}

/**
 * A string from its registers: two characters a register, first character in the high byte
 * (ABCD; BADC for devices that put it in the low byte). Latin-1, so every byte is one character;
 * NUL padding and trailing spaces are cut.
 */
export function decodeString(bytes: Buffer, order: ByteOrder = 'ABCD'): string {
  const b = toBigEndian(bytes, order === 'BADC' || order === 'DCBA' ? 'BADC' : 'ABCD');
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('latin1').replace(/ +$/, '');
}

/** Bit `bit` (0 = least significant) of a register, after the byte order's swap within the word. */
export function decodeBit(bytes: Buffer, bit: number, order: ByteOrder = 'ABCD'): boolean {
  const word = toBigEndian(bytes.subarray(0, 2), order === 'BADC' || order === 'DCBA' ? 'BADC' : 'ABCD').readUInt16BE(0);
  return ((word >> bit) & 1) === 1;
}

/** One item to read: `count` registers or bits of `table` from `address`. */
export interface Span<K> {
  readonly key: K;
  readonly table: Table;
  readonly address: number;
  readonly count: number;
}

/** One read request covering neighbouring spans. */
export interface Block<K> {
  readonly table: Table;
  readonly address: number;
  readonly count: number;
  readonly members: readonly Span<K>[];
}

/** The most registers (bits) one read may ask for (Modbus Application Protocol §6.1–6.4). */
export const MAX_READ: Readonly<Record<Table, number>> = { holding: 125, input: 125, coil: 2000, discrete: 2000 };

/**
 * Coalesces spans of one unit into block reads: sorted by table and address, a span joins the
 * block before it when the gap to it is at most `maxGap` items and the block then spans at most
 * `maxBlock` items (never more than the protocol allows). A span larger than `maxBlock` is its
 * own block. Gap items are read and thrown away: a small gap costs less than a round trip.
 */
export function planBlocks<K>(spans: readonly Span<K>[], o: { readonly maxGap: number; readonly maxBlock: number }): Block<K>[] {
  const order: Table[] = ['coil', 'discrete', 'holding', 'input'];
  const sorted = [...spans].sort((a, b) => order.indexOf(a.table) - order.indexOf(b.table) || a.address - b.address || b.count - a.count);
  const out: { table: Table; address: number; count: number; members: Span<K>[] }[] = [];
  for (const s of sorted) {
    const last = out[out.length - 1];
    const limit = Math.min(o.maxBlock, MAX_READ[s.table]);
    if (last && last.table === s.table && s.address <= last.address + last.count + o.maxGap) {
      const end = Math.max(last.address + last.count, s.address + s.count);
      if (end - last.address <= limit) {
        last.count = end - last.address;
        last.members.push(s);
        continue;
      }
    }
    out.push({ table: s.table, address: s.address, count: s.count, members: [s] });
  }
  return out;
}

/** What the bridge reads through: Modbus TCP (ModbusTcpClient) or RTU (serial.ts). */
export interface ModbusTransport {
  read(unitId: number, table: Table, address: number, count: number, timeoutMs: number): Promise<Buffer | boolean[]>;
  readonly closed: boolean;
  /** Requests sent and answers received (exceptions included) on this connection. */
  readonly requests: number;
  readonly answers: number;
  close(): void;
}

interface Pending {
  readonly fn: number;
  readonly count: number;
  readonly resolve: (v: Buffer | boolean[]) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/**
 * One TCP connection to one Modbus endpoint, shared by every unit id behind it. Requests are
 * sent one at a time (many PLCs and gateways answer only one); a request that gets no answer
 * within its timeout rejects with ERR_TIMEOUT (a late answer is ignored by its transaction id).
 * The timeout also closes the connection unless some other request was answered meanwhile: then
 * the link is alive and only that unit id is silent.
 */
export class ModbusTcpClient implements ModbusTransport {
  private socket: Socket | undefined;
  private buf: Buffer = Buffer.alloc(0);
  private txId = 0;
  private pending = new Map<number, Pending>();
  private queue: Promise<unknown> = Promise.resolve();
  private closedError: Error | undefined;
  /** Answers received and requests sent on this connection. */
  answers = 0;
  requests = 0;

  private constructor(readonly label: string) {}

  /** Connects, or rejects with ERR_DEVICE_UNREACHABLE (refused, unreachable, or not connected within timeoutMs). */
  static connect(host: string, port: number, timeoutMs: number, label = `${host}:${port}`): Promise<ModbusTcpClient> {
    const c = new ModbusTcpClient(label);
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      const fail = (why: string): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new QisError('ERR_DEVICE_UNREACHABLE', `${label}: ${why}`));
      };
      const timer = setTimeout(() => fail(`no connection within ${timeoutMs} ms`), timeoutMs);
      socket.once('error', (e) => fail(e.message));
      socket.once('connect', () => {
        // With nothing listening on a local port in the ephemeral range, the kernel can connect
        // a socket to itself (TCP simultaneous open): that is not the device.
        if (socket.localPort === socket.remotePort && socket.localAddress === socket.remoteAddress) return fail('nothing listens (the connection reached itself)');
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.setNoDelay(true);
        c.attach(socket);
        resolve(c);
      });
    });
  }

  private attach(socket: Socket): void {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      try {
        for (let f = takeFrame(this.buf); f; f = takeFrame(this.buf)) {
          this.buf = f.rest;
          const p = this.pending.get(f.txId);
          if (!p) continue; // a late answer to a request that timed out
          this.pending.delete(f.txId);
          clearTimeout(p.timer);
          this.answers++;
          try {
            p.resolve(parseReadResponse(f.pdu, p.fn, p.count));
          } catch (e) {
            p.reject(e as Error);
          }
        }
      } catch (e) {
        this.fail(e as Error);
      }
    });
    socket.on('error', (e) => this.fail(new QisError('ERR_DEVICE_UNREACHABLE', `${this.label}: ${e.message}`)));
    socket.on('close', () => this.fail(new QisError('ERR_DEVICE_UNREACHABLE', `${this.label}: connection closed`)));
  }

  private fail(e: Error): void {
    this.closedError ??= e;
    this.socket?.destroy();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.closedError);
    }
    this.pending.clear();
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Reads `count` items of `table` from `address`: register bytes or bits. */
  read(unitId: number, table: Table, address: number, count: number, timeoutMs: number): Promise<Buffer | boolean[]> {
    const run = (): Promise<Buffer | boolean[]> =>
      new Promise((resolve, reject) => {
        if (this.closedError) return reject(this.closedError);
        const fn = READ_FUNCTION[table];
        this.txId = (this.txId + 1) & 0xffff;
        const id = this.txId;
        const seen = this.answers;
        const timer = setTimeout(() => {
          this.pending.delete(id);
          const e = new QisError('ERR_TIMEOUT', `${this.label}: no answer from unit ${unitId} to function ${fn} at ${address} within ${timeoutMs} ms`);
          if (this.answers === seen) this.fail(e);
          reject(e);
        }, timeoutMs);
        this.pending.set(id, { fn, count, resolve, reject, timer });
        this.requests++;
        this.socket!.write(encodeReadRequest(id, unitId, fn, address, count));
      });
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  close(): void {
    this.fail(new QisError('ERR_CLOSED', `${this.label}: closed`));
  }
}
