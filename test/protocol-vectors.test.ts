import t from 'tap';
import { address, cohortFilter, compileTemplate, keyFromSeed, outcomeTopic, signPacket, verifyPacket, type PacketFields } from '../src/index.js';
import { hex, toHexString, vector } from './helpers/vectors.js';

interface AddressCase { template: unknown; situation: Record<string, unknown>; expect: { tplId: string; levels: string[]; fp: string; filter: string } }
interface PacketCase { seed: string; publicKey: string; nodeId: string; template: unknown; situation: Record<string, unknown>; fields: Record<string, unknown>; topic: string; packet: string; size: number; alg: number }
const v = vector<{ address: AddressCase[]; packet: PacketCase[] }>('protocol-v1.json');

t.test('protocol-v1 - address vectors: tplId, levels, fp and exact filter byte for byte', async (t) => {
  t.ok(v.address.length >= 3);
  for (const c of v.address) {
    const tpl = compileTemplate(c.template);
    const a = address(tpl, c.situation);
    t.equal(a.tplId, c.expect.tplId, 'tplId');
    t.same(a.levels, c.expect.levels, 'levels');
    t.equal(toHexString(a.fp), c.expect.fp, 'fp');
    t.equal(cohortFilter(a), c.expect.filter, 'filter');
  }
});

t.test('protocol-v1 - packet vectors: key, topic and packet bytes from the seed and fields', async (t) => {
  t.ok(v.packet.length >= 2);
  for (const c of v.packet) {
    const key = keyFromSeed(hex(c.seed));
    t.equal(toHexString(key.publicKey), c.publicKey, 'publicKey');
    t.equal(key.nodeId, c.nodeId, 'nodeId');
    const tpl = compileTemplate(c.template);
    const a = address(tpl, c.situation);
    const topic = outcomeTopic(a, key.nodeId);
    t.equal(topic, c.topic, 'topic');
    const f = c.fields;
    t.equal(f['2'], toHexString(a.fp), 'vector fp is the address fp');
    const fields: PacketFields = {
      fp: hex(f['2'] as string),
      seq: f['3'] as number,
      ts: f['4'] as number,
      ...(f['5'] !== undefined ? { out: f['5'] as string | number } : {}),
      ...(f['6'] !== undefined ? { conf: f['6'] as number } : {}),
      ...(f['7'] !== undefined ? { n: f['7'] as number } : {}),
      ...(f['8'] !== undefined ? { ctx: f['8'] as Record<string, number> } : {}),
      ...(f['9'] !== undefined ? { exp: f['9'] as number } : {}),
      ...(f['10'] !== undefined ? { del: f['10'] as boolean } : {}),
    };
    for (const backend of ['node', 'noble'] as const) {
      const bytes = signPacket(key, topic, fields, { backend });
      t.equal(toHexString(bytes), c.packet, `packet bytes (${backend})`);
      t.equal(bytes.length, c.size, 'size');
    }
    const p = verifyPacket(c.topic, hex(c.packet), { now: 1795000000000 });
    t.equal(p.seq, f['3']);
    t.equal(p.alg, c.alg);
    t.equal(p.nodeId, c.nodeId);
  }
});
