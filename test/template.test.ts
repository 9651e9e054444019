import t from 'tap';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { canon, compileTemplate, loadTemplate, parseTemplate, b32 } from '../src/index.js';
import { bearingDoc } from './helpers/fixtures.js';

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

t.test('template - tplId is b32 of the first 16 bytes of SHA-256 over the RFC 8785 text', async (t) => {
  // The canonical text written out by hand: members sorted, no whitespace.
  const canonical =
    '{"context":["ambient_c","rpm"],"fields":[{"kind":"category","name":"machine_model"},' +
    '{"kind":"category","name":"bearing_type","values":["ball","roller","plain"]},' +
    '{"bins":[0,10,50,200],"kind":"number","name":"load_kn"},{"kind":"boolean","name":"sealed"}],' +
    '"name":"bearing-failure","outcome":{"kind":"category","labels":["no_failure","failure"]},"version":1}';
  const tpl = compileTemplate(bearingDoc);
  t.equal(tpl.canonicalJson, canonical);
  const digest = createHash('sha256').update(canonical, 'utf8').digest();
  t.equal(tpl.tplId, b32(new Uint8Array(digest.subarray(0, 16))));
  t.equal(tpl.tplId, 'oot5cp3icuyzffz454i2beg6a4', 'the id of the shared vector');
});

t.test('template - YAML, JSON and an object give the same id; member order does not matter', async (t) => {
  const yaml = `# comment
name: bearing-failure
version: 1
fields:
  - { name: machine_model, kind: category }
  - { name: bearing_type, kind: category, values: [ball, roller, plain] }
  - { name: load_kn, kind: number, bins: [0, 10, 50, 200] }
  - { name: sealed, kind: boolean }
context: [ambient_c, rpm]
outcome: { labels: [no_failure, failure], kind: category }
`;
  const id = compileTemplate(bearingDoc).tplId;
  t.equal(parseTemplate(yaml).tplId, id);
  t.equal(parseTemplate(JSON.stringify(bearingDoc, null, 2)).tplId, id);
  const dir = mkdtempSync(join(tmpdir(), 'qis-tpl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 't.yaml'), yaml);
  t.equal((await loadTemplate(join(dir, 't.yaml'))).tplId, id);
  await t.rejects(loadTemplate(join(dir, 'missing.yaml')), { code: 'ERR_FILE_IO' });
});

t.test('template - any change to the document changes the id (no defaults are added)', async (t) => {
  const ids = new Set<string>([compileTemplate(bearingDoc).tplId]);
  const variants = [
    { ...clone(bearingDoc), version: 2 },
    { ...clone(bearingDoc), context: ['rpm', 'ambient_c'] },
    { ...clone(bearingDoc), description: 'extra members are hashed too' },
    { ...clone(bearingDoc), fields: [...bearingDoc.fields].reverse() },
  ];
  for (const v of variants) ids.add(compileTemplate(v).tplId);
  t.equal(ids.size, variants.length + 1);
});

t.test('template - validation errors name the offending field', async (t) => {
  const cases: Array<[string, (d: any) => void, RegExp]> = [
    ['duplicate field', (d) => d.fields.push({ name: 'sealed', kind: 'boolean' }), /field "sealed".*defined twice/],
    ['unknown kind', (d) => (d.fields[0].kind = 'text'), /field "machine_model".*kind must be/],
    ['number without bins', (d) => delete d.fields[2].bins, /field "load_kn".*bins/],
    ['bins not increasing', (d) => (d.fields[2].bins = [0, 10, 10]), /field "load_kn".*strictly increasing/],
    ['bins not finite', (d) => (d.fields[2].bins = [0, Infinity]), /fields\[2\]\.bins\[1\]: the number Infinity/],
    ['bins beyond 2^53', (d) => (d.fields[2].bins = [0, 2 ** 60]), /fields\[2\]\.bins\[1\]: the integer .* beyond 2\^53-1/],
    ['bins not numbers', (d) => (d.fields[2].bins = [0, '10']), /field "load_kn".*bins\[1\]/],
    ['empty closed set', (d) => (d.fields[1].values = []), /field "bearing_type" values/],
    ['duplicate closed value', (d) => (d.fields[1].values = ['ball', 'ball']), /"ball" is listed twice/],
    ['a member of another kind', (d) => (d.fields[3].bins = [1]), /field "sealed".*"bins" belongs to kind number/],
    ['labels on a number outcome', (d) => (d.outcome = { kind: 'number', labels: ['a'] }), /outcome.*"labels" belongs to kind category/],
    ['no fields', (d) => (d.fields = []), /fields/],
    ['field without a name', (d) => (d.fields[0].name = ''), /fields\[0\]/],
    ['bad outcome kind', (d) => (d.outcome = { kind: 'text' }), /outcome/],
    ['outcome without labels', (d) => (d.outcome = { kind: 'category' }), /outcome labels/],
    ['context shadows a field', (d) => (d.context = ['sealed']), /context.*routed field/],
    ['version not an integer', (d) => (d.version = 1.5), /version/],
    ['no name', (d) => delete d.name, /name/],
    ['NaN in an extra member', (d) => (d.note = NaN), /cannot be canonicalized/],
  ];
  for (const [what, mutate, re] of cases) {
    const d = clone(bearingDoc) as any;
    mutate(d);
    t.throws(() => compileTemplate(d), { code: 'ERR_TEMPLATE_INVALID', message: re }, what);
  }
  t.throws(() => compileTemplate([]), { code: 'ERR_TEMPLATE_INVALID' }, 'not an object');
});

t.test('template - other extra members are hashed and otherwise ignored; the compiled document is a frozen copy', async (t) => {
  const d = clone(bearingDoc) as any;
  d.fields[2].unit = 'kN';
  d.outcome.description = 'bearing seized or spalled';
  const tpl = compileTemplate(d);
  t.not(tpl.tplId, compileTemplate(bearingDoc).tplId, 'extra members change the id');
  t.match(tpl.canonicalJson, /"unit":"kN"/);
  d.fields[2].bins.push(1000);
  t.same((tpl.doc.fields[2] as unknown as { bins: number[] }).bins, [0, 10, 50, 200], 'later changes to the input do not reach the template');
  t.ok(Object.isFrozen(tpl.doc.fields[2]), 'deeply frozen');
  t.throws(() => parseTemplate('{"name": "a", "name": "b"}'), { code: 'ERR_TEMPLATE_PARSE' }, 'duplicate keys in JSON too');
});

t.test('template - unparsable text is ERR_TEMPLATE_PARSE with the source name', async (t) => {
  t.throws(() => parseTemplate('{"name": ', 'x.json'), { code: 'ERR_TEMPLATE_PARSE', message: /^x\.json: / });
  t.throws(() => parseTemplate('name: a\nname: b\n', 'dup.yaml'), { code: 'ERR_TEMPLATE_PARSE', message: /dup\.yaml/ }, 'duplicate YAML keys');
  t.throws(() => parseTemplate('fields: [1, 2', 'y.yaml'), { code: 'ERR_TEMPLATE_PARSE' });
  t.throws(() => parseTemplate('name: x\nversion: 1\nfields: []\n', 'z.yaml'), { code: 'ERR_TEMPLATE_INVALID', message: /^z\.yaml: / });
});

t.test('template - canon follows PROTOCOL §3 for every kind', async (t) => {
  const num = { name: 'load', kind: 'number', bins: [0, 10, 50, 200] } as const;
  const expectBins: Array<[number, string]> = [
    [-0.001, 'b-'], [-Infinity, 'b-'], [0, 'b0'], [9.999, 'b0'], [10, 'b1'], [49.9, 'b1'], [50, 'b2'], [199.99, 'b2'], [200, 'b+'], [1e9, 'b+'], [Infinity, 'b+'], [-0, 'b0'],
  ];
  for (const [v, c] of expectBins) t.equal(canon(num, v), c, `number ${v}`);
  const many = { name: 'x', kind: 'number', bins: Array.from({ length: 100 }, (_, i) => i * 2) } as const;
  for (let v = 0; v < 198; v += 0.5) t.equal(canon(many, v), `b${Math.floor(v / 2)}`);
  t.equal(canon({ name: 'one', kind: 'number', bins: [5] }, 4), 'b-');
  t.equal(canon({ name: 'one', kind: 'number', bins: [5] }, 5), 'b+');
  t.throws(() => canon(num, NaN), { code: 'ERR_FIELD_VALUE', message: /load.*NaN/ });
  t.throws(() => canon(num, '42'), { code: 'ERR_FIELD_VALUE' });
  t.equal(canon({ name: 'b', kind: 'boolean' }, true), 'true');
  t.equal(canon({ name: 'b', kind: 'boolean' }, false), 'false');
  t.throws(() => canon({ name: 'b', kind: 'boolean' }, 'true'), { code: 'ERR_FIELD_VALUE' });
  t.throws(() => canon({ name: 'c', kind: 'category', values: ['a', 'b'] }, 'z'), { code: 'ERR_FIELD_VALUE', message: /not one of a, b/ }, 'a bare field spec keeps its closed set');
  const cat = { name: 'm', kind: 'category' } as const;
  t.equal(canon(cat, 'KX-200'), 'KX-200', 'no case folding');
  t.equal(canon(cat, 'Cafe\u0301'), 'Caf\u00e9', 'NFC');
  t.throws(() => canon(cat, ''), { code: 'ERR_FIELD_VALUE' });
  t.throws(() => canon(cat, 200), { code: 'ERR_FIELD_VALUE' });
  t.throws(() => canon(cat, 'a\ud800'), { code: 'ERR_FIELD_VALUE', message: /surrogate/ });
});

t.test('template - closed sets compare in NFC and refuse other values', async (t) => {
  const tpl = compileTemplate({ ...clone(bearingDoc), fields: [{ name: 'cafe', kind: 'category', values: ['Caf\u00e9', 'Bar'] }] });
  const set = tpl.closedSets.get('cafe');
  t.equal(canon(tpl.fields[0]!, 'Cafe\u0301', set), 'Caf\u00e9');
  t.throws(() => canon(tpl.fields[0]!, 'cafe', set), { code: 'ERR_FIELD_VALUE', message: /not one of/ });
});
