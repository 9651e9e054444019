import t from 'tap';
import { createHash } from 'node:crypto';
import { address, cohortFilter, outcomeTopic, parseOutcomeTopic, b32, type NodeId } from '../src/index.js';
import { bearing, situation, fixedKey } from './helpers/fixtures.js';

// An independent rendering of PROTOCOL §4 with node:crypto, to check the library against.
function reference(idBytes: Uint8Array, values: string[]): { levels: string[]; fp: string } {
  const parts: Buffer[] = [Buffer.from(idBytes)];
  const levels: string[] = [];
  let digest = Buffer.alloc(0);
  for (const v of values) {
    const body = Buffer.from(v, 'utf8');
    const len = Buffer.alloc(2);
    len.writeUInt16BE(body.length);
    parts.push(len, body);
    digest = createHash('sha256').update(Buffer.concat(parts)).digest();
    levels.push(b32(new Uint8Array(digest)).slice(0, 10));
  }
  return { levels, fp: digest.subarray(0, 16).toString('hex') };
}

t.test('fingerprint - levels and fp match an independent computation of PROTOCOL §4', async (t) => {
  const models = ['KX-200', 'A', 'Ünïcødé-Mödel', 'x'.repeat(300), '機械'];
  for (const machine_model of models) {
    for (const bearing_type of ['ball', 'roller', 'plain']) {
      for (const load_kn of [-1, 0, 5, 10, 42.5, 199, 200, 5000]) {
        for (const sealed of [true, false]) {
          const a = address(bearing, { machine_model, bearing_type, load_kn, sealed });
          const bin = load_kn < 0 ? 'b-' : load_kn >= 200 ? 'b+' : `b${load_kn < 10 ? 0 : load_kn < 50 ? 1 : 2}`;
          const ref = reference(bearing.idBytes, [machine_model.normalize('NFC'), bearing_type, bin, String(sealed)]);
          if (a.levels.join() !== ref.levels.join() || Buffer.from(a.fp).toString('hex') !== ref.fp) {
            t.fail(`mismatch for ${machine_model}/${bearing_type}/${load_kn}/${sealed}`);
            return;
          }
        }
      }
    }
  }
  t.pass('all combinations agree');
});

t.test('fingerprint - same bucket, same address; any routed change moves it; context is ignored', async (t) => {
  const a = address(bearing, situation);
  t.same(address(bearing, { ...situation, load_kn: 11 }).levels, a.levels, 'same bin');
  t.same(address(bearing, { ...situation, rpm: 1480, ambient_c: 21 }).fp, a.fp, 'context values do not route');
  const moved = address(bearing, { ...situation, sealed: false });
  t.same(moved.levels.slice(0, 3), a.levels.slice(0, 3), 'shared prefix keeps its levels');
  t.not(moved.levels[3], a.levels[3]);
  const first = address(bearing, { ...situation, machine_model: 'KX-201' });
  t.ok(first.levels.every((l, i) => l !== a.levels[i]), 'a change at L1 changes every level below');
});

t.test('fingerprint - missing or bad routed values are refused with the field named', async (t) => {
  const { sealed: _s, ...noSealed } = situation;
  t.throws(() => address(bearing, noSealed), { code: 'ERR_FIELD_MISSING', message: /"sealed"/ });
  t.throws(() => address(bearing, { ...situation, bearing_type: 'needle' }), { code: 'ERR_FIELD_VALUE', message: /bearing_type/ });
  t.throws(() => address(bearing, { ...situation, load_kn: NaN }), { code: 'ERR_FIELD_VALUE', message: /load_kn/ });
  t.throws(() => address(bearing, { ...situation, machine_model: 'x'.repeat(70000) }), { code: 'ERR_FIELD_VALUE', message: /65535/ });
  t.throws(() => address(bearing, null as never), { code: 'ERR_INVALID_ARGUMENT' });
});

t.test('fingerprint - cohort filters: exact, widened, whole template', async (t) => {
  const a = address(bearing, situation);
  const base = `qis/1/o/${a.tplId}`;
  t.equal(cohortFilter(a), `${base}/${a.levels.join('/')}/+`);
  t.equal(cohortFilter(a, 1), `${base}/${a.levels.slice(0, 3).join('/')}/#`);
  t.equal(cohortFilter(a, 2), `${base}/${a.levels.slice(0, 2).join('/')}/#`);
  t.equal(cohortFilter(a, 4), `${base}/#`);
  t.throws(() => cohortFilter(a, 5), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => cohortFilter(a, -1), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => cohortFilter(a, 1.5), { code: 'ERR_INVALID_ARGUMENT' });
});

t.test('fingerprint - outcome topics round-trip through parseOutcomeTopic', async (t) => {
  const a = address(bearing, situation);
  const key = fixedKey(1);
  const topic = outcomeTopic(a, key.nodeId);
  t.equal(topic, `qis/1/o/${a.tplId}/${a.levels.join('/')}/${key.nodeId}`);
  const p = parseOutcomeTopic(topic, 4);
  t.equal(p.tplId, a.tplId);
  t.same(p.levels, a.levels);
  t.equal(p.nodeId, key.nodeId);
  const bad = [
    topic.replace('qis/1/o', 'qis/2/o'),
    topic.replace('qis/1/o', 'qis/1/t'),
    `qis/1/o/${a.tplId}/${key.nodeId}`,
    topic.replace(a.levels[1]!, 'UPPERCASE0'),
    topic.replace(a.levels[1]!, 'short'),
    topic.replace(a.tplId, 'a'.repeat(26) + 'a'),
    topic.replace(key.nodeId, (key.nodeId.slice(0, 25) + 'b') as NodeId),
    topic + '/extra',
    `${topic.slice(0, -1)}1`,
    '',
  ];
  for (const b of bad) t.throws(() => parseOutcomeTopic(b), { code: 'ERR_TOPIC_INVALID' }, b);
  t.throws(() => parseOutcomeTopic(topic, 3), { code: 'ERR_TOPIC_INVALID', message: /4 levels/ });
});

t.test("fingerprint - a cohort's next topic (parsed by the last topic's prefix) checks the same", async (t) => {
  const a = address(bearing, situation);
  const first = outcomeTopic(a, fixedKey(1).nodeId);
  const second = fixedKey(2).nodeId;
  const p1 = parseOutcomeTopic(first, 4);
  const p2 = parseOutcomeTopic(outcomeTopic(a, second), 4);
  t.equal(p2.nodeId, second, 'its own node id');
  t.equal(p2.tplId, a.tplId);
  t.same(p2.levels, a.levels);
  t.equal(p2.levels, p1.levels, 'the cohort shares one levels array');
  t.ok(Object.isFrozen(p2.levels), 'which cannot be changed');
  t.throws(() => parseOutcomeTopic(outcomeTopic(a, second), 3), { code: 'ERR_TOPIC_INVALID', message: /4 levels/ }, 'depth still checked');
  // Same prefix, same length, not a node id: refused as when parsed alone.
  const prefix = first.slice(0, -26);
  for (const id of [second.toUpperCase(), second.slice(0, 25) + 'b', second.slice(0, 25) + '1', '/' + second.slice(1), second.slice(0, 25) + '\n']) {
    parseOutcomeTopic(first);
    t.throws(() => parseOutcomeTopic(prefix + id), { code: 'ERR_TOPIC_INVALID' }, JSON.stringify(id));
  }
  // Longer or shorter by a level: the whole pattern decides.
  t.throws(() => parseOutcomeTopic(`${prefix}${'a'.repeat(10)}/${second}`, 4), { code: 'ERR_TOPIC_INVALID', message: /5 levels/ });
  t.equal(parseOutcomeTopic(`${prefix}${'a'.repeat(10)}/${second}`).levels.length, 5);
  t.equal(parseOutcomeTopic(first).levels.length, 4);
});
