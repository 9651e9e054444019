/**
 * The Redis store's data (broker/cluster.ts describes the keys): the record format
 * `K|ver|seq|exp|at|topic|packet` and the Lua scripts that compare seqs, write and announce a
 * change in one atomic step.
 */
import type { Redis } from 'ioredis';
import { ID_CHARS } from '../store/common.js';

// ------------------------------------------------------------------------------ Lua

// Each script: KEYS[1] = the entries hash, KEYS[2] = the version counter. Returns
// {1, new value, previous value or ''} when it wrote, {0, '', current value or ''} when not.
// A header is `K|ver|seq|exp|at|`; seqs are compared as numbers (exact to 2^53 in Lua's doubles).
const HEAD = "'^(%u)|%d+|(%d+)|(%-?%d+)|(%-?%d+)|'";

/** ARGV: field, seq, exp, topic, packet, now ms, tombstone TTL ms, channel. */
export const PUT_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local k, s, e, at = string.match(cur, ${HEAD})
  if tonumber(ARGV[2]) <= tonumber(s) and not (k == 'T' and tonumber(at) + tonumber(ARGV[7]) <= tonumber(ARGV[6])) then
    return {0, '', cur}
  end
end
local ver = string.format('%d', redis.call('INCR', KEYS[2]))
local val = 'L|' .. ver .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|-1|' .. ARGV[4] .. '|' .. ARGV[5]
redis.call('HSET', KEYS[1], ARGV[1], val)
redis.call('PUBLISH', ARGV[8], ARGV[1] .. '|' .. val)
return {1, val, cur or ''}
`;

/** ARGV: field, seq, now ms, tombstone TTL ms, channel. */
export const REMOVE_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local k, s, e, at = string.match(cur, ${HEAD})
  if tonumber(ARGV[2]) <= tonumber(s) and not (k == 'T' and tonumber(at) + tonumber(ARGV[4]) <= tonumber(ARGV[3])) then
    return {0, '', cur}
  end
end
local ver = string.format('%d', redis.call('INCR', KEYS[2]))
local val = 'T|' .. ver .. '|' .. ARGV[2] .. '|-1|' .. ARGV[3] .. '||'
redis.call('HSET', KEYS[1], ARGV[1], val)
redis.call('PUBLISH', ARGV[5], ARGV[1] .. '|' .. val)
return {1, val, cur or ''}
`;

/** The expiry sweep of one packet. ARGV: field, seq, now ms, channel. Only a live packet with that seq whose exp has passed. */
export const EXPIRE_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {0, '', ''} end
local k, s, e, at = string.match(cur, ${HEAD})
if k ~= 'L' or s ~= ARGV[2] or tonumber(e) < 0 or tonumber(ARGV[3]) <= tonumber(e) * 1000 then
  return {0, '', cur}
end
local ver = string.format('%d', redis.call('INCR', KEYS[2]))
local val = 'T|' .. ver .. '|' .. s .. '|-1|' .. ARGV[3] .. '||'
redis.call('HSET', KEYS[1], ARGV[1], val)
redis.call('PUBLISH', ARGV[4], ARGV[1] .. '|' .. val)
return {1, val, cur}
`;

/** Drops a tombstone past its TTL. ARGV: field, now ms, tombstone TTL ms, channel. */
export const PRUNE_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {0, '', ''} end
local k, s, e, at = string.match(cur, ${HEAD})
if k ~= 'T' or tonumber(at) + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return {0, '', cur} end
redis.call('HDEL', KEYS[1], ARGV[1])
local ver = string.format('%d', redis.call('INCR', KEYS[2]))
local val = 'F|' .. ver .. '|' .. s .. '|-1|' .. at .. '||'
redis.call('PUBLISH', ARGV[4], ARGV[1] .. '|' .. val)
return {1, val, cur}
`;

export type ScriptReply = [number, Buffer, Buffer];
export interface ScriptedRedis extends Redis {
  qisPutBuffer(...args: (string | Buffer)[]): Promise<ScriptReply>;
  qisRemoveBuffer(...args: (string | Buffer)[]): Promise<ScriptReply>;
  qisExpireBuffer(...args: (string | Buffer)[]): Promise<ScriptReply>;
  qisPruneBuffer(...args: (string | Buffer)[]): Promise<ScriptReply>;
}

// ------------------------------------------------------------------------------ records

/** `<tplId>/<nodeId>` */
export const FIELD_CHARS = 2 * ID_CHARS + 1;
export const PIPE = 0x7c;

export interface Rec {
  readonly kind: 'L' | 'T' | 'F';
  readonly ver: number;
  readonly seq: number;
  readonly exp: number;
  readonly at: number;
  readonly topic: string;
  /** A view into the buffer the record was decoded from. */
  readonly packet: Buffer;
}

/** Decodes `K|ver|seq|exp|at|topic|packet` starting at buf[from]; undefined when malformed. */
export function decodeRec(buf: Buffer, from = 0): Rec | undefined {
  const cuts: number[] = [];
  let i = from;
  while (cuts.length < 6) {
    const j = buf.indexOf(PIPE, i);
    if (j < 0) return undefined;
    cuts.push(j);
    i = j + 1;
  }
  const [c0, c1, c2, c3, c4, c5] = cuts as [number, number, number, number, number, number];
  const kind = buf.toString('latin1', from, c0);
  if ((kind !== 'L' && kind !== 'T' && kind !== 'F') || c0 !== from + 1) return undefined;
  const ver = Number(buf.toString('latin1', c0 + 1, c1));
  const seq = Number(buf.toString('latin1', c1 + 1, c2));
  const exp = Number(buf.toString('latin1', c2 + 1, c3));
  const at = Number(buf.toString('latin1', c3 + 1, c4));
  if (![ver, seq, exp, at].every(Number.isSafeInteger)) return undefined;
  const topic = buf.toString('latin1', c4 + 1, c5);
  const packet = buf.subarray(c5 + 1);
  if (kind === 'L' && (topic.length === 0 || packet.length === 0)) return undefined;
  return { kind, ver, seq, exp, at, topic, packet };
}
