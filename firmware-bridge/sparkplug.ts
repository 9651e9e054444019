/**
 * Sparkplug B (Eclipse Tahu `sparkplug_b.proto`, Sparkplug 3.0) as a host application reads it.
 * The wire format is decoded by Eclipse Tahu's `sparkplug-payload` (protobufjs code generated from
 * sparkplug_b.proto), its schema-level `Payload.decode`/`encode`: the host-level
 * `decodePayload` beside it reads a value only through the metric's own datatype, and DATA
 * metrics normally carry none (Sparkplug 3.0: the datatype is sent in the birth), so every such
 * value would decode as null. Here each metric keeps which value field was present and is read
 * with its birth's datatype.
 *
 * Then the host-side state of each edge node: NBIRTH/DBIRTH names and alias tables, `seq` checking
 * (0–255, wrapping), and live values that historical metrics never overwrite. Scalars become
 * values; a Template instance (a UDT) becomes one value per member, `<metric>/<member>`, and a
 * DataSet one per cell, `<metric>/<row>/<column>`, plus `<metric>/rows`; Bytes, File and other
 * values that cannot drive a rule are listed as unusable, so the bridge can say so once.
 */
import Long from 'long';
import protobuf from 'protobufjs/minimal.js';
import tahuProto from 'sparkplug-payload/lib/sparkplugPayloadProto.js';
import { QisError } from '../src/index.js';

// protobufjs finds `long` with an eval'd require, which a bundle (dist/cli/qis.mjs) may not
// resolve; without it 64-bit fields become lossy numbers (a negative Int64 reads as 0). Set it.
protobuf.util.Long = Long;
protobuf.configure();

/** Sparkplug B data types (the `DataType` enum). */
export const DATATYPE = {
  Int8: 1, Int16: 2, Int32: 3, Int64: 4, UInt8: 5, UInt16: 6, UInt32: 7, UInt64: 8,
  Float: 9, Double: 10, Boolean: 11, String: 12, DateTime: 13, Text: 14, UUID: 15,
  DataSet: 16, Bytes: 17, File: 18, Template: 19, PropertySet: 20, PropertySetList: 21,
} as const;
const TYPE_NAMES = new Map<number, string>(Object.entries(DATATYPE).map(([k, v]) => [v, k]));

export type MetricValue = number | boolean | string;

/** A DataSet: column names and types, and rows of cells (undefined: no value in the cell). */
export interface DataSet {
  readonly columns: readonly string[];
  readonly types: readonly number[];
  readonly rows: readonly (readonly (RawValue | undefined)[])[];
}

/** A Template instance (a UDT) or definition, with its member metrics. */
export interface Template {
  readonly isDefinition: boolean;
  readonly templateRef?: string | undefined;
  readonly metrics: readonly Metric[];
}

/**
 * Which value field of the Metric message was present (its field number: 10 int, 11 long,
 * 12 float, 13 double, 14 boolean, 15 string, 16 bytes, 17 dataset, 18 template, 19 extension)
 * and its value, so a DATA metric without a datatype can be read with its birth's.
 */
export interface RawValue {
  readonly field: number;
  readonly value: bigint | number | boolean | string | Uint8Array | DataSet | Template | undefined;
}

/** A decoded metric. Absent fields are undefined (every metric has the same shape: this is the hot path). */
export interface Metric {
  readonly name?: string | undefined;
  readonly alias?: bigint | undefined;
  readonly timestamp?: bigint | undefined;
  readonly datatype?: number | undefined;
  readonly isHistorical: boolean;
  readonly isNull: boolean;
  readonly raw?: RawValue | undefined;
}

export interface Payload {
  readonly timestamp?: bigint | undefined;
  readonly seq?: bigint | undefined;
  readonly uuid?: string | undefined;
  readonly metrics: readonly Metric[];
}

/** A payload larger than this is refused before decoding (the factory broker's messages are hostile input). */
export const MAX_PAYLOAD_BYTES = 4 << 20;
/** Templates nested deeper than this are refused (a UDT within a UDT is common; 16 levels is not). */
export const MAX_TEMPLATE_DEPTH = 16;
/** A DataSet with more cells than this is not spread into values (it is listed as unusable). */
export const MAX_DATASET_CELLS = 10_000;

// The shapes of Tahu's decoded messages that are read here (protobufjs classes: unset fields
// fall back to defaults on the prototype, so presence is an own property or the oneof `value`).
type U64 = number | Long;
interface ProtoValue {
  intValue?: number; longValue?: U64; floatValue?: number; doubleValue?: number; booleanValue?: boolean; stringValue?: string;
  bytesValue?: Uint8Array; datasetValue?: ProtoDataSet; templateValue?: ProtoTemplate;
  /** The oneof: the name of the value field present. */
  readonly value?: string;
}
interface ProtoMetric extends ProtoValue { name?: string; alias?: U64; timestamp?: U64; datatype?: number; isHistorical?: boolean; isNull?: boolean }
interface ProtoDataSet { columns: string[]; types: number[]; rows: { elements: ProtoValue[] }[] }
interface ProtoTemplate { isDefinition?: boolean; templateRef?: string; metrics: ProtoMetric[] }
interface ProtoPayload { timestamp?: U64; seq?: U64; uuid?: string; metrics: ProtoMetric[] }
interface TahuPayload {
  decode(r: Uint8Array): ProtoPayload;
  encode(p: object): { finish(): Uint8Array };
}
const TahuPayload = (tahuProto as unknown as { org: { eclipse: { tahu: { protobuf: { Payload: TahuPayload } } } } }).org.eclipse.tahu.protobuf.Payload;

const malformed = (why: string): QisError => new QisError('ERR_SPARKPLUG_PAYLOAD', `Sparkplug B payload: ${why}`);
const has = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);
const big = (v: U64): bigint => (typeof v === 'number' ? BigInt(v) : v.high === 0 ? BigInt(v.low >>> 0) : BigInt.asUintN(64, (BigInt(v.high >>> 0) << 32n) | BigInt(v.low >>> 0)));

/** Metric value fields by name, as field numbers; a DataSetValue's fields map to the same numbers. */
const FIELD: Readonly<Record<string, number>> = { intValue: 10, longValue: 11, floatValue: 12, doubleValue: 13, booleanValue: 14, stringValue: 15, bytesValue: 16, datasetValue: 17, templateValue: 18, extensionValue: 19 };

function rawOf(v: ProtoValue, depth: number): RawValue | undefined {
  const name = v.value;
  if (name === undefined) return undefined;
  const field = FIELD[name] ?? 19;
  switch (field) {
    case 10: return { field, value: v.intValue! >>> 0 };
    case 11: return { field, value: big(v.longValue!) };
    case 12: return { field, value: v.floatValue! };
    case 13: return { field, value: v.doubleValue! };
    case 14: return { field, value: v.booleanValue! };
    case 15: return { field, value: v.stringValue! };
    case 16: return { field, value: v.bytesValue! };
    case 17: {
      const d = v.datasetValue!;
      return { field, value: { columns: d.columns, types: d.types, rows: d.rows.map((r) => r.elements.map((e) => rawOf(e, depth))) } };
    }
    case 18: {
      if (depth >= MAX_TEMPLATE_DEPTH) throw malformed(`templates nested deeper than ${MAX_TEMPLATE_DEPTH}`);
      const t = v.templateValue!;
      return { field, value: { isDefinition: t.isDefinition === true, templateRef: has(t, 'templateRef') ? t.templateRef : undefined, metrics: t.metrics.map((m) => metricOf(m, depth + 1)) } };
    }
    default: return { field, value: undefined };
  }
}

function metricOf(m: ProtoMetric, depth: number): Metric {
  return {
    name: has(m, 'name') ? m.name : undefined,
    alias: has(m, 'alias') ? big(m.alias!) : undefined,
    timestamp: has(m, 'timestamp') ? big(m.timestamp!) : undefined,
    datatype: has(m, 'datatype') ? m.datatype : undefined,
    isHistorical: m.isHistorical === true,
    isNull: m.isNull === true,
    raw: rawOf(m, depth),
  };
}

/**
 * Decodes a Sparkplug B Payload with Tahu's decoder. Whatever it throws on junk (truncation, a
 * bad wire type, a varint too long, nesting deep enough to exhaust the stack) is ERR_SPARKPLUG_PAYLOAD.
 * @throws QisError ERR_SPARKPLUG_PAYLOAD
 */
export function decodeSparkplugPayload(bytes: Uint8Array): Payload {
  if (bytes.length > MAX_PAYLOAD_BYTES) throw malformed(`${bytes.length} bytes, more than ${MAX_PAYLOAD_BYTES}`);
  try {
    // A plain Uint8Array view, not a Buffer: protobufjs's Buffer reader cuts a string whose
    // length runs past the end instead of refusing it.
    const p = TahuPayload.decode(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
    return {
      timestamp: has(p, 'timestamp') ? big(p.timestamp!) : undefined,
      seq: has(p, 'seq') ? big(p.seq!) : undefined,
      uuid: has(p, 'uuid') ? p.uuid : undefined,
      metrics: p.metrics.map((m) => metricOf(m, 0)),
    };
  } catch (e) {
    if (e instanceof QisError) throw e;
    throw malformed((e as Error).message);
  }
}

/** A scalar value field read with datatype `dt`; undefined for a non-scalar field. */
function scalar(raw: RawValue, dt: number | undefined): MetricValue | undefined {
  const v = raw.value;
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
  if (raw.field === 10 && typeof v === 'number') {
    // int_value: 32 bits; signed types are two's complement (8/16-bit ones either sign-extended or not)
    const s = v | 0;
    switch (dt) {
      case DATATYPE.Int8: return s > 127 ? (s << 24) >> 24 : s;
      case DATATYPE.Int16: return s > 32767 ? (s << 16) >> 16 : s;
      case DATATYPE.Int32: return s;
      default: return v;
    }
  }
  return typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string' ? v : undefined;
}

/** A metric's value as a JS scalar, read with `datatype` (the metric's own, else its birth's); undefined for null, absent or non-scalar values. */
export function metricValue(m: Metric, datatype: number | undefined): MetricValue | undefined {
  if (m.isNull || !m.raw) return undefined;
  return scalar(m.raw, m.datatype ?? datatype);
}

/** What a value that cannot drive a rule is, for the log: its datatype's name, else its field's. */
function kindOf(m: Metric, datatype: number | undefined): string {
  const dt = m.datatype ?? datatype;
  const name = dt === undefined ? undefined : TYPE_NAMES.get(dt);
  if (name) return name;
  return m.raw?.field === 16 ? 'Bytes' : m.raw?.field === 19 ? 'an extension value' : `datatype ${String(dt)}`;
}

/**
 * Adds a live metric's values under `name`: a scalar as itself, a Template instance's members
 * and a DataSet's cells spread out; what cannot drive a rule goes to `unusable` with the reason.
 * `typeOf` gives the birth's datatype of a (spread) name.
 */
function collect(name: string, m: Metric, typeOf: (name: string) => number | undefined, values: Map<string, MetricValue>, unusable: Map<string, string>): void {
  if (m.isNull || !m.raw) return;
  const { field, value } = m.raw;
  if (field === 18) {
    const t = value as Template;
    if (t.isDefinition) return; // a UDT's definition (in an NBIRTH), not a value
    for (const member of t.metrics) if (member.name !== undefined && !member.isHistorical) collect(`${name}/${member.name}`, member, typeOf, values, unusable);
    return;
  }
  if (field === 17) {
    const d = value as DataSet;
    const cells = d.rows.length * d.columns.length;
    if (d.types.length !== d.columns.length) return void unusable.set(name, `a DataSet with ${d.columns.length} columns and ${d.types.length} types`);
    if (cells > MAX_DATASET_CELLS) return void unusable.set(name, `a DataSet of ${cells} cells (more than ${MAX_DATASET_CELLS})`);
    values.set(`${name}/rows`, d.rows.length);
    d.rows.forEach((row, i) =>
      d.columns.forEach((col, c) => {
        const cell = row[c];
        const v = cell ? scalar(cell, d.types[c]) : undefined;
        if (v !== undefined) values.set(`${name}/${i}/${col}`, v);
      }),
    );
    return;
  }
  const v = metricValue(m, typeOf(name));
  if (v !== undefined) values.set(name, v);
  else unusable.set(name, `${kindOf(m, typeOf(name))} cannot drive a rule`);
}

/** The NCMD payload asking an edge node to publish its births again (encoded by Tahu's encoder). */
export function encodeRebirthRequest(timestampMs: number): Uint8Array {
  return TahuPayload.encode({ timestamp: timestampMs, metrics: [{ name: 'Node Control/Rebirth', datatype: DATATYPE.Boolean, booleanValue: true }] }).finish();
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
  | {
      readonly kind: 'update';
      readonly device?: string;
      readonly values: ReadonlyMap<string, MetricValue>;
      /** Live metrics (or spread names) whose values cannot drive a rule, with why: Bytes, File, an oversized DataSet… */
      readonly unusable: ReadonlyMap<string, string>;
      readonly historical: number;
      readonly birth: boolean;
    }
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

/** A birth's Template instance: its members' datatypes by spread name (`<metric>/<member>`), for DATA that sends members without them. */
function learnMembers(t: Table, name: string, m: Metric): void {
  if (m.raw?.field !== 18) return;
  const tpl = m.raw.value as Template;
  if (tpl.isDefinition) return;
  for (const member of tpl.metrics) {
    if (member.name === undefined) continue;
    const n = `${name}/${member.name}`;
    t.byName.set(n, { name: n, datatype: member.datatype });
    learnMembers(t, n, member);
  }
}

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
      learnMembers(t, m.name, m);
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
    const unusable = new Map<string, string>();
    const typeOf = (name: string): number | undefined => t.byName.get(name)?.datatype;
    let historical = 0;
    for (const m of p.metrics) {
      const def = m.name !== undefined ? t.byName.get(m.name) ?? { name: m.name, datatype: m.datatype } : m.alias !== undefined ? t.byAlias.get(m.alias) : undefined;
      if (!def) return { kind: 'rebirth', reason: m.alias !== undefined ? `unknown alias ${m.alias}` : 'a metric without name or alias' };
      if (m.isHistorical) {
        historical++; // stored history, not the present: never overwrites live state
        continue;
      }
      collect(def.name, m, typeOf, values, unusable);
    }
    return { kind: 'update', ...(device === undefined ? {} : { device }), values, unusable, historical, birth };
  }
}
