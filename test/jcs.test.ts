import t from 'tap';
import { jcs } from '../src/index.js';

// RFC 8785 §3.2.2, the input as a JSON text exactly as printed in the RFC.
const rfcInputText = String.raw`{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`;

// The same input written as a JS value: € $ U+000F LF A ' B " \ \ " /
const rfcInputValue = {
  numbers: [333333333.33333329, 1e30, 4.5, 2e-3, 0.000000000000000000000000001],
  string: '\u20ac$\u000f\nA\'B"\\\\"/',
  literals: [null, true, false],
};

// RFC 8785 §3.2.2 output, written out: inside the JSON string, \u000f and \n are escapes, then
// A ' B, then \" \\ \\ \" (escaped quote, two escaped backslashes, escaped quote), then /.
const rfcOutput =
  '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],' +
  '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}';

// RFC 8785 §3.2.4: the UTF-8 bytes of that output.
const rfcOutputHex = `
7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72
75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a
5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31
65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37
5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30
30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d`.replace(/\s+/g, '');

t.test('jcs - RFC 8785 §3.2.2 example gives the published text and bytes', async (t) => {
  t.strictSame(JSON.parse(rfcInputText), rfcInputValue, 'the JS input is the RFC input');
  t.equal(Buffer.from(rfcOutput, 'utf8').toString('hex'), rfcOutputHex, 'the expected text is the RFC bytes');
  t.equal(jcs(rfcInputValue), rfcOutput);
  t.equal(jcs(JSON.parse(rfcInputText)), rfcOutput, 'from the parsed RFC text');
  const bytes = Buffer.from(jcs(rfcInputValue), 'utf8');
  t.equal(bytes.toString('hex'), rfcOutputHex, 'UTF-8 bytes as in RFC 8785 §3.2.4');
  t.ok(bytes.toString('hex').includes('22e282ac24'), 'the euro sign is raw UTF-8 e282ac, not escaped');
});

t.test('jcs - RFC 8785 §3.2.3 member order by UTF-16 code units', async (t) => {
  const input = {
    '\u20ac': 'Euro Sign',
    '\r': 'Carriage Return',
    '\ufb33': 'Hebrew Letter Dalet With Dagesh',
    '1': 'One',
    '\ud83d\ude00': 'Emoji: Grinning Face',
    '\u0080': 'Control',
    '\u00f6': 'Latin Small Letter O With Diaeresis',
  };
  const expected =
    '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",' +
    '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}';
  const out = jcs(input);
  t.equal(out, expected);
  // The order told by the values, independent of how the keys print:
  const order = [...out.matchAll(/:"([^"]*)"/g)].map((m) => m[1]);
  t.strictSame(order, [
    'Carriage Return',
    'One',
    'Control',
    'Latin Small Letter O With Diaeresis',
    'Euro Sign',
    'Emoji: Grinning Face',
    'Hebrew Letter Dalet With Dagesh',
  ]);
  t.ok(out.indexOf('\ud83d\ude00') < out.indexOf('\ufb33'), 'the emoji (U+D83D…) sorts before U+FB33 although its code point is higher');
});

t.test('jcs - number serialisation', async (t) => {
  t.equal(jcs(-0), '0');
  t.equal(jcs(1e21), '1e+21');
  t.equal(jcs(1e20), '100000000000000000000');
  t.equal(jcs(1e-7), '1e-7');
  t.equal(jcs(1e-6), '0.000001');
  t.equal(jcs(0.1 + 0.2), '0.30000000000000004');
  t.equal(jcs(4.5), '4.5');
  t.equal(jcs(-1), '-1');
  t.equal(jcs([-0, 0]), '[0,0]');
  // RFC 8785 Appendix B, from the IEEE 754 bit patterns.
  const appendixB: Array<[string, string]> = [
    ['0000000000000000', '0'],
    ['8000000000000000', '0'],
    ['0000000000000001', '5e-324'],
    ['8000000000000001', '-5e-324'],
    ['7fefffffffffffff', '1.7976931348623157e+308'],
    ['ffefffffffffffff', '-1.7976931348623157e+308'],
    ['4340000000000000', '9007199254740992'],
    ['c340000000000000', '-9007199254740992'],
    ['4430000000000000', '295147905179352830000'],
    ['44b52d02c7e14af5', '9.999999999999997e+22'],
    ['44b52d02c7e14af6', '1e+23'],
    ['44b52d02c7e14af7', '1.0000000000000001e+23'],
    ['444b1ae4d6e2ef4e', '999999999999999700000'],
    ['444b1ae4d6e2ef4f', '999999999999999900000'],
    ['444b1ae4d6e2ef50', '1e+21'],
    ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7'],
    ['3eb0c6f7a0b5ed8d', '0.000001'],
    ['41b3de4355555553', '333333333.3333332'],
    ['41b3de4355555554', '333333333.33333325'],
    ['41b3de4355555555', '333333333.3333333'],
    ['41b3de4355555556', '333333333.3333334'],
    ['41b3de4355555557', '333333333.33333343'],
    ['becbf647612f3696', '-0.0000033333333333333333'],
    ['43143ff3c1cb0959', '1424953923781206.2'],
  ];
  for (const [bits, text] of appendixB) t.equal(jcs(Buffer.from(bits, 'hex').readDoubleBE(0)), text, `0x${bits}`);
  for (const bits of ['7fffffffffffffff', '7ff0000000000000']) {
    t.throws(() => jcs(Buffer.from(bits, 'hex').readDoubleBE(0)), { code: 'ERR_TEMPLATE_INVALID' }, `0x${bits} refused`);
  }
});

t.test('jcs - strings: only the required escapes', async (t) => {
  t.equal(jcs('\u0000\u0008\t\n\u000b\f\r\u001f'), '"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f"', 'control characters, lowercase hex');
  t.equal(jcs('"\\/'), '"\\"\\\\/"', 'quote and backslash escaped, solidus not');
  t.equal(jcs('\u007f\u2028\u2029é😀'), '"\u007f\u2028\u2029é😀"', 'no other character escaped');
});

t.test('jcs - nested objects sorted, arrays keep their order', async (t) => {
  const v = { b: { d: 1, c: [{ f: 1, e: 2 }, 3, 'z', 'a'] }, a: null, '10': true, '9': false };
  t.equal(jcs(v), '{"10":true,"9":false,"a":null,"b":{"c":[{"e":2,"f":1},3,"z","a"],"d":1}}', 'integer-like keys sort as text');
  t.equal(jcs({}), '{}');
  t.equal(jcs([]), '[]');
  t.equal(jcs(Object.assign(Object.create(null) as object, { y: 1, x: 2 })), '{"x":2,"y":1}', 'null-prototype object');
  t.equal(jcs(JSON.parse('{"__proto__":1,"a":2}')), '{"__proto__":1,"a":2}', 'an own __proto__ member is a member');
  t.equal(jcs({ a: 1 }), jcs(JSON.parse(' { "a" : 1.0 } ')), 'whitespace and 1.0 vanish');
});

t.test('jcs - values JSON cannot carry refused', async (t) => {
  class Point {
    x = 1;
  }
  const refused: Array<[unknown, string]> = [
    [NaN, 'NaN'],
    [Infinity, 'Infinity'],
    [-Infinity, '-Infinity'],
    [undefined, 'undefined'],
    [{ a: undefined }, 'undefined member'],
    [[1, undefined], 'undefined element'],
    [{ a: [1, NaN] }, 'nested NaN'],
    ['\ud800', 'lone high surrogate'],
    ['a\udc00b', 'lone low surrogate'],
    ['\ude00\ud83d', 'reversed surrogate pair'],
    [{ '\ud800': 1 }, 'lone surrogate in a member name'],
    [new Date(0), 'Date'],
    [{ when: new Date(0) }, 'nested Date'],
    [new Point(), 'class instance'],
    [new Map([['a', 1]]), 'Map'],
    [10n, 'bigint'],
    [() => 1, 'function'],
    [Symbol('s'), 'symbol'],
  ];
  for (const [v, what] of refused) t.throws(() => jcs(v), { code: 'ERR_TEMPLATE_INVALID' }, `${what} refused`);
  let deep: unknown = 1;
  for (let i = 0; i < 1000; i++) deep = [deep];
  t.throws(() => jcs(deep), { code: 'ERR_TEMPLATE_INVALID' }, '1000 levels of nesting refused, not a stack overflow');
});

t.test('jcs - a sparse array gives valid JSON or is refused', async (t) => {
  // A hole is not a JSON value: the output must still parse (JSON.stringify writes null) or be
  // refused; it must never be the invalid text "[1,,2]".
  // eslint-disable-next-line no-sparse-arrays
  const sparse = [1, , 2];
  let out: string | undefined;
  try {
    out = jcs(sparse);
  } catch (e) {
    t.match(e, { code: 'ERR_TEMPLATE_INVALID' }, 'refused');
    return;
  }
  t.doesNotThrow(() => JSON.parse(out as string), `output ${out} is valid JSON`);
});
