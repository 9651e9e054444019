/**
 * Sparkplug B (Eclipse Tahu `sparkplug_b.proto`, Sparkplug 3.0): a small protobuf reader for the
 * Payload and Metric messages, an encoder for the one message the bridge sends (the NCMD
 * `Node Control/Rebirth` request), and the host-side state of each edge node: NBIRTH/DBIRTH
 * names and alias tables, `seq` checking (0–255, wrapping), and live values that historical
 * metrics never overwrite. Written here rather than generated with protobufjs: the bridge reads
 * scalar metrics only, the reader is ~150 lines with bounds checks on every length, and the
 * tests check it against an independent encoder (the `sparkplug-payload` package).
 */
import { QisError } from '../src/index.js';

/** Sparkplug B data types (the `DataType` enum). */
export const DATATYPE = {
  Int8: 1, Int16: 2, Int32: 3, Int64: 4, UInt8: 5, UInt16: 6, UInt32: 7, UInt64: 8,
  Float: 9, Double: 10, Boolean: 11, String: 12, DateTime: 13, Text: 14, UUID: 15,
} as const;

export type MetricValue = number | boolean | string;

/** One decoded metric. `raw` keeps which value field was present, so a DATA metric without a datatype can be read with its birth's. */
export interface Metric {
  readonly name?: string;
  readonly alias?: bigint;
  readonly timestamp?: bigint;
  readonly datatype?: number;
  readonly isHistorical: boolean;
  readonly isNull: boolean;
  readonly raw?: { readonly field: number; readonly value: bigint | number | boolean | string | Uint8Array };
}

export interface Payload {
  readonly timestamp?: bigint;
  readonly seq?: bigint;
  readonly uuid?: string;
  readonly metrics: readonly Metric[];
}

const malformed = (why: string): QisError => new QisError('ERR_SPARKPLUG_PAYLOAD', `Sparkplug B payload: ${why}`);

class Reader {
  pos = 0;
  constructor(private readonly b: Uint8Array, readonly end = b.length) {}
  get done(): boolean {
    return this.pos >= this.end;
  }
  /** A varint's low 32 bits, unsigned (int_value: encoders differ in sign-extending negative ints). */
  uint32(): number {
    const start = this.pos;
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 5; i++) {
      if (this.pos >= this.end) throw malformed('truncated varint');
      const byte = this.b[this.pos++]!;
      v += (byte & 0x7f) * mul;
      if ((byte & 0x80) === 0) return v % 2 ** 32;
      mul *= 128;
    }
    this.pos = start;
    return Number(this.varintBig() & 0xffffffffn);
  }
  /** A varint as a number: the fast path for tags, lengths and values below 2^49. */
  uint(): number {
    let v = 0;
    let mul = 1;
    const start = this.pos;
    for (let i = 0; i < 7; i++) {
      if (this.pos >= this.end) throw malformed('truncated varint');
      const byte = this.b[this.pos++]!;
      v += (byte & 0x7f) * mul;
      if ((byte & 0x80) === 0) return v;
      mul *= 128;
    }
    this.pos = start;
    const big = this.varintBig();
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed(`length or tag ${big} too large`);
    return Number(big);
  }
  varint(): bigint {
    const start = this.pos;
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 7; i++) {
      if (this.pos >= this.end) throw malformed('truncated varint');
      const byte = this.b[this.pos++]!;
      v += (byte & 0x7f) * mul;
      if ((byte & 0x80) === 0) return BigInt(v);
      mul *= 128;
    }
    this.pos = start;
    return this.varintBig();
  }
  private varintBig(): bigint {
    let v = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.end) throw malformed('truncated varint');
      const byte = this.b[this.pos++]!;
      v |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return BigInt.asUintN(64, v);
    }
    throw malformed('varint longer than 10 bytes');
  }
  float(): number {
    const b = this.bytes(4);
    return new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
  }
  double(): number {
    const b = this.bytes(8);
    return new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, true);
  }
  bytes(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.end) throw malformed(`length ${n} beyond the end`);
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  delimited(): Uint8Array {
    return this.bytes(this.uint());
  }
  /** Skips a field of `wire` type. */
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.bytes(8);
    else if (wire === 2) this.delimited();
    else if (wire === 5) this.bytes(4);
    else throw malformed(`unsupported wire type ${wire}`);
  }
  tag(): { field: number; wire: number } {
    const t = this.uint();
    const field = Math.floor(t / 8);
    if (field === 0) throw malformed('field number 0');
    return { field, wire: t % 8 };
  }
}

const text = new TextDecoder('utf-8', { fatal: true });
function utf8(b: Uint8Array): string {
  try {
    return text.decode(b);
  } catch {
    throw malformed('a string is not valid UTF-8');
  }
}

function expectWire(field: number, wire: number, want: number): void {
  if (wire !== want) throw malformed(`field ${field} has wire type ${wire}, expected ${want}`);
}

function decodeMetric(b: Uint8Array): Metric {
  const r = new Reader(b);
  const m: { -readonly [K in keyof Metric]: Metric[K] } = { isHistorical: false, isNull: false };
  while (!r.done) {
    const { field, wire } = r.tag();
    switch (field) {
      case 1: expectWire(field, wire, 2); m.name = utf8(r.delimited()); break;
      case 2: expectWire(field, wire, 0); m.alias = r.varint(); break;
      case 3: expectWire(field, wire, 0); m.timestamp = r.varint(); break;
      case 4: expectWire(field, wire, 0); m.datatype = Number(r.varint() & 0xffffffffn); break;
      case 5: expectWire(field, wire, 0); m.isHistorical = r.varint() !== 0n; break;
      case 7: expectWire(field, wire, 0); m.isNull = r.varint() !== 0n; break;
      case 10: expectWire(field, wire, 0); m.raw = { field, value: r.uint32() }; break;
      case 11: expectWire(field, wire, 0); m.raw = { field, value: r.varint() }; break;
      case 12: expectWire(field, wire, 5); m.raw = { field, value: r.float() }; break;
      case 13: expectWire(field, wire, 1); m.raw = { field, value: r.double() }; break;
      case 14: expectWire(field, wire, 0); m.raw = { field, value: r.varint() !== 0n }; break;
      case 15: expectWire(field, wire, 2); m.raw = { field, value: utf8(r.delimited()) }; break;
      case 16: expectWire(field, wire, 2); m.raw = { field, value: r.delimited() }; break;
      default: r.skip(wire); // is_transient, metadata, properties, dataset, template, extension
    }
  }
  return m;
}

/** Decodes a Sparkplug B Payload. @throws QisError ERR_SPARKPLUG_PAYLOAD */
export function decodeSparkplugPayload(bytes: Uint8Array): Payload {
  const r = new Reader(bytes);
  const p: { timestamp?: bigint; seq?: bigint; uuid?: string; metrics: Metric[] } = { metrics: [] };
  while (!r.done) {
    const { field, wire } = r.tag();
    switch (field) {
      case 1: expectWire(field, wire, 0); p.timestamp = r.varint(); break;
      case 2: expectWire(field, wire, 2); p.metrics.push(decodeMetric(r.delimited())); break;
      case 3: expectWire(field, wire, 0); p.seq = r.varint(); break;
      case 4: expectWire(field, wire, 2); p.uuid = utf8(r.delimited()); break;
      default: r.skip(wire);
    }
  }
  return p;
}

/** A metric's value as a JS scalar, read with `datatype` (the metric's own, else its birth's); undefined for null, absent or non-scalar values. */
export function metricValue(m: Metric, datatype: number | undefined): MetricValue | undefined {
  if (m.isNull || !m.raw) return undefined;
  const v = m.raw.value;
  const dt = m.datatype ?? datatype;
  if (typeof v === 'bigint') {
    const u = BigInt.asUintN(64, v);
    switch (dt) {
      case DATATYPE.Int8: {
        const s = Number(BigInt.asIntN(32, u));
        return s > 127 ? (s << 24) >> 24 : s; // 8-bit two's complement or sign-extended to 32 bits
      }
      case DATATYPE.Int16: {
        const s = Number(BigInt.asIntN(32, u));
        return s > 32767 ? (s << 16) >> 16 : s;
      }
      case DATATYPE.Int32: return Number(BigInt.asIntN(32, u));
      case DATATYPE.Int64: return Number(BigInt.asIntN(64, u));
      default: return Number(u); // UInt8/16/32/64, DateTime, or no datatype
    }
  }
  if (v instanceof Uint8Array) return undefined;
  if (m.raw.field === 10 && typeof v === 'number') {
    // int_value: 32 bits; signed types are two's complement (8/16-bit ones either sign-extended or not)
    const s = v | 0;
    switch (dt) {
      case DATATYPE.Int8: return s > 127 ? (s << 24) >> 24 : s;
      case DATATYPE.Int16: return s > 32767 ? (s << 16) >> 16 : s;
      case DATATYPE.Int32: return s;
      default: return v;
    }
  }
  return v;
}

/** The NCMD payload asking an edge node to publish its births again. */
export function encodeRebirthRequest(timestampMs: number): Uint8Array {
  const name = Buffer.from('Node Control/Rebirth', 'utf8');
  const metric = Buffer.concat([
    Buffer.from([0x0a, name.length]), name, // 1: name
    Buffer.from([0x20, DATATYPE.Boolean]), // 4: datatype
    Buffer.from([0x70, 0x01]), // 14: boolean_value true
  ]);
  return new Uint8Array(Buffer.concat([Buffer.from([0x08]), varintBytes(BigInt(timestampMs)), Buffer.from([0x12, metric.length]), metric]));
}

function varintBytes(v: bigint): Buffer {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  do {
    let byte = Number(x & 0x7fn);
    x >>= 7n;
    if (x !== 0n) byte |= 0x80;
    out.push(byte);
  } while (x !== 0n);
  return Buffer.from(out);
}

export type MessageType = 'NBIRTH' | 'NDEATH' | 'DBIRTH' | 'DDEATH' | 'NDATA' | 'DDATA' | 'NCMD' | 'DCMD' | 'STATE';
const TYPES = new Set<string>(['NBIRTH', 'NDEATH', 'DBIRTH', 'DDEATH', 'NDATA', 'DDATA', 'NCMD', 'DCMD', 'STATE']);

export interface SparkplugTopic {
  readonly group: string;
  readonly type: MessageType;
  readonly edgeNode: string;
  readonly device?: string;
}

/** Parses `spBv1.0/<group>/<type>/<edge node>[/<device>]`. @throws QisError ERR_SPARKPLUG_PAYLOAD */
export function parseSparkplugTopic(topic: string): SparkplugTopic {
  const p = topic.split('/');
  if (p[0] !== 'spBv1.0' || p.length < 4 || p.length > 5 || !TYPES.has(p[2]!) || p.some((x) => x === '')) {
    throw new QisError('ERR_SPARKPLUG_PAYLOAD', `not a Sparkplug B topic: ${topic}`);
  }
  const t = { group: p[1]!, type: p[2] as MessageType, edgeNode: p[3]! };
  return p[4] === undefined ? t : { ...t, device: p[4] };
}

/** The NCMD topic of an edge node. */
export const ncmdTopic = (group: string, edgeNode: string): string => `spBv1.0/${group}/NCMD/${edgeNode}`;

interface MetricDef {
  readonly name: string;
  readonly datatype: number | undefined;
}

/** What one message did to the state. */
export type Outcome =
  /** Live values changed (of the edge node itself when device is undefined). */
  | { readonly kind: 'update'; readonly device?: string; readonly values: ReadonlyMap<string, MetricValue>; readonly historical: number; readonly birth: boolean }
  /** The bridge cannot trust its picture of this edge node: ask for a rebirth. */
  | { readonly kind: 'rebirth'; readonly reason: string }
  /** A death certificate: the node's (or device's) values are stale. */
  | { readonly kind: 'death'; readonly device?: string }
  | { readonly kind: 'ignored'; readonly reason: string };

interface Table {
  byAlias: Map<bigint, MetricDef>;
  byName: Map<string, MetricDef>;
}

const emptyTable = (): Table => ({ byAlias: new Map(), byName: new Map() });

/** The `bdSeq` metric of an NBIRTH or NDEATH, if it has one. */
function bdSeqOf(p: Payload): number | undefined {
  const m = p.metrics.find((x) => x.name === 'bdSeq');
  const v = m ? metricValue(m, DATATYPE.UInt64) : undefined;
  return typeof v === 'number' ? v : undefined;
}

/**
 * A host application's view of one edge node: birth tables, expected `seq`, and whether it is
 * waiting for a rebirth. Pure (no I/O): `handle()` says what to do.
 */
export class EdgeNodeState {
  /** undefined: no NBIRTH seen (or a gap since), so DATA cannot be trusted. */
  private nextSeq: number | undefined;
  private node: Table = emptyTable();
  private devices = new Map<string, Table>();
  /** The bdSeq of the current NBIRTH, to recognise a stale NDEATH. */
  private bdSeq: number | undefined;

  get born(): boolean {
    return this.nextSeq !== undefined;
  }

  /** Forget everything (a reconnect to the factory broker: seq continuity is unknown). */
  reset(): void {
    this.nextSeq = undefined;
    this.node = emptyTable();
    this.devices.clear();
    this.bdSeq = undefined;
  }

  handle(type: MessageType, device: string | undefined, p: Payload): Outcome {
    if (type === 'NCMD' || type === 'DCMD' || type === 'STATE') return { kind: 'ignored', reason: `${type} is not edge-node data` };
    if (type === 'NDEATH') {
      // A will from an earlier session can arrive after the node's new NBIRTH: its bdSeq says so.
      const bd = bdSeqOf(p);
      if (bd !== undefined && this.bdSeq !== undefined && bd !== this.bdSeq) return { kind: 'ignored', reason: `NDEATH with bdSeq ${bd}, but the current session has bdSeq ${this.bdSeq}` };
      this.reset();
      return { kind: 'death' };
    }
    if (type === 'NBIRTH') {
      this.reset();
      if (p.seq === undefined || p.seq > 255n) return { kind: 'rebirth', reason: `NBIRTH without a valid seq (${String(p.seq)})` };
      const t = emptyTable();
      const problem = this.learn(t, p);
      if (problem) return { kind: 'rebirth', reason: problem };
      this.node = t;
      this.bdSeq = bdSeqOf(p);
      this.nextSeq = (Number(p.seq) + 1) % 256;
      return this.values(t, undefined, p, true);
    }
    // DBIRTH, DDEATH, NDATA, DDATA: must continue the node's seq.
    if (this.nextSeq === undefined) return { kind: 'rebirth', reason: `${type} before an NBIRTH` };
    if (p.seq === undefined || p.seq !== BigInt(this.nextSeq)) {
      const expected = this.nextSeq;
      this.reset();
      return { kind: 'rebirth', reason: `seq gap: expected ${expected}, got ${String(p.seq)}` };
    }
    this.nextSeq = (this.nextSeq + 1) % 256;
    if (type === 'DDEATH') {
      if (device !== undefined) this.devices.delete(device);
      return { kind: 'death', ...(device === undefined ? {} : { device }) };
    }
    if (type === 'DBIRTH') {
      if (device === undefined) return { kind: 'ignored', reason: 'DBIRTH without a device id' };
      const t = emptyTable();
      const problem = this.learn(t, p);
      if (problem) {
        this.reset();
        return { kind: 'rebirth', reason: problem };
      }
      this.devices.set(device, t);
      return this.values(t, device, p, true);
    }
    const t = type === 'NDATA' ? this.node : device === undefined ? undefined : this.devices.get(device);
    if (!t) {
      this.reset();
      return { kind: 'rebirth', reason: `DDATA for device ${String(device)} without its DBIRTH` };
    }
    const out = this.values(t, device, p, false);
    if (out.kind === 'rebirth') this.reset();
    return out;
  }

  /** Records a birth's names, aliases and datatypes; a problem string when the birth is inconsistent. */
  private learn(t: Table, p: Payload): string | undefined {
    for (const m of p.metrics) {
      if (m.name === undefined) return 'a birth metric without a name';
      const def = { name: m.name, datatype: m.datatype };
      t.byName.set(m.name, def);
      if (m.alias !== undefined) {
        const other = t.byAlias.get(m.alias);
        if (other && other.name !== m.name) return `alias ${m.alias} used for both "${other.name}" and "${m.name}"`;
        t.byAlias.set(m.alias, def);
      }
    }
    return undefined;
  }

  private values(t: Table, device: string | undefined, p: Payload, birth: boolean): Outcome {
    const values = new Map<string, MetricValue>();
    let historical = 0;
    for (const m of p.metrics) {
      const def = m.name !== undefined ? t.byName.get(m.name) ?? { name: m.name, datatype: m.datatype } : m.alias !== undefined ? t.byAlias.get(m.alias) : undefined;
      if (!def) return { kind: 'rebirth', reason: m.alias !== undefined ? `unknown alias ${m.alias}` : 'a metric without name or alias' };
      if (m.isHistorical) {
        historical++; // stored history, not the present: never overwrites live state
        continue;
      }
      const v = metricValue(m, def.datatype);
      if (v !== undefined) values.set(def.name, v);
    }
    return { kind: 'update', ...(device === undefined ? {} : { device }), values, historical, birth };
  }
}
