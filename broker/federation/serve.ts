/**
 * Request serving (the answering side of catch-up, pure over the store): a peer link's requests
 * on qis/1/f/req/<its clientId> for a store's root digest, its range digests, the entries of some
 * ranges, or packets by key; and the parsing of a 'put' batch of forwarded packets.
 */
import { scoreTopicOfStored } from '../admission.js';
import type { Store } from '../store.js';
import { RANGES, rootOf, storeRanges, type Scope } from './digest.js';

/** Which store a catch-up request is about: 'o' outcome packets (default), 's' score packets. */
export type StoreKind = 'o' | 's';
type Req = { store?: StoreKind } & (
  | { id: string; op: 'root'; scope: Scope }
  | { id: string; op: 'ranges'; scope: Scope }
  | { id: string; op: 'entries'; scope: Scope; ranges: number[] }
  | { id: string; op: 'get'; keys: [string, string][] }
);

/** The answering side of catch-up (pure over the store); `serves`: the templates whose packets a 'get' may return (this side's share for the asking region). */
export function answerRequest(store: Store, req: Req, serves: (tplId: string) => boolean = () => true): Record<string, unknown> {
  switch (req.op) {
    case 'root': {
      const d = storeRanges(store, req.scope);
      return { id: req.id, root: rootOf(d.ranges, d.n), n: d.n };
    }
    case 'ranges': {
      const d = storeRanges(store, req.scope);
      return { id: req.id, ranges: d.ranges.toString('base64') };
    }
    case 'entries': {
      const d = storeRanges(store, req.scope);
      const entries: [string, string, number, number][] = [];
      // Each range once, whatever the request repeats: the answer is at most the store's keys.
      for (const r of new Set(req.ranges)) for (const k of d.keysIn(r)) entries.push([k.tplId, k.nodeId, k.seq, k.del ? 1 : 0]);
      return { id: req.id, entries };
    }
    case 'get': {
      const items: [string, string][] = [];
      for (const [tplId, nodeId] of req.keys) {
        if (!serves(tplId)) continue;
        const p = store.get(tplId, nodeId);
        if (p) {
          // A score is filed under an outcome-shaped topic; it travels on its own (qis/1/s/…).
          items.push([req.store === 's' ? scoreTopicOfStored(p.topic) : p.topic, Buffer.from(p.packet).toString('base64')]);
          continue;
        }
        const t = store.tombstone(tplId, nodeId);
        if (t?.topic && t.packet) items.push([t.topic, Buffer.from(t.packet).toString('base64')]);
      }
      return { id: req.id, items };
    }
  }
}

/** A batch of forwarded packets from a peer's link (op 'put'), or undefined when the payload is not one. */
export function parsePut(payload: Buffer): { id: string; items: [string, Buffer][] } | undefined {
  if (!payload.subarray(0, 64).includes('"op":"put"')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  const r = v as { id?: unknown; op?: unknown; items?: unknown };
  if (typeof r !== 'object' || r === null || r.op !== 'put' || typeof r.id !== 'string' || r.id.length > 64 || !Array.isArray(r.items) || r.items.length > 10_000) return undefined;
  const items: [string, Buffer][] = [];
  for (const it of r.items as unknown[]) {
    if (!Array.isArray(it) || typeof it[0] !== 'string' || typeof it[1] !== 'string') return undefined;
    items.push([it[0], Buffer.from(it[1], 'base64')]);
  }
  return { id: r.id, items };
}

/** A catch-up request's payload → the response payload (undefined for a malformed request, or one about a store this broker has not). */
export function answerPayload(store: Store, payload: Buffer, scoreStore?: Store, serves?: (tplId: string) => boolean): Buffer | undefined {
  const req = parseReq(payload);
  if (!req) return undefined;
  const s = req.store === 's' ? scoreStore : store;
  return s ? Buffer.from(JSON.stringify(answerRequest(s, req, serves))) : undefined;
}

function parseReq(payload: Buffer): Req | undefined {
  let v: unknown;
  try {
    v = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const r = v as Record<string, unknown>;
  if (typeof r.id !== 'string' || r.id.length > 64) return undefined;
  if (r.store !== undefined && r.store !== 'o' && r.store !== 's') return undefined;
  const scopeOk = r.scope === '*' || (Array.isArray(r.scope) && r.scope.length <= 10_000 && r.scope.every((x) => typeof x === 'string'));
  switch (r.op) {
    case 'root':
    case 'ranges':
      return scopeOk ? (r as Req) : undefined;
    case 'entries':
      return scopeOk && Array.isArray(r.ranges) && r.ranges.length <= RANGES && r.ranges.every((x) => Number.isInteger(x) && x >= 0 && x < RANGES) ? (r as Req) : undefined;
    case 'get':
      return Array.isArray(r.keys) && r.keys.length <= 10_000 && r.keys.every((k) => Array.isArray(k) && k.length === 2 && k.every((x) => typeof x === 'string')) ? (r as Req) : undefined;
    default:
      return undefined;
  }
}
