import t from 'tap';
import { address, keyFromSeed, outcomeTopic, signPacket, toHex, verifyPacket, type PacketFields } from '../src/index.js';
import { bearing, situation } from './helpers/fixtures.js';
import { prng } from './helpers/prng.js';
import { python } from './helpers/python.js';

// An independent implementation of PROTOCOL §1–5 in Python (cbor2 for decoding, its own
// deterministic encoder written from §1, `cryptography` for Ed25519). For each case it signs the
// same fields with the same seed, and verifies the packet this project made.
const PY = String.raw`
import sys, json, struct, hashlib, base64, unicodedata, cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

def head(major, n):
    if n < 24: return bytes([major << 5 | n])
    for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 256 ** size: return bytes([major << 5 | ai]) + n.to_bytes(size, "big")

def enc(v):
    if v is True: return b"\xf5"
    if v is False: return b"\xf4"
    if v is None: return b"\xf6"
    if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 64: v = int(v)
    if isinstance(v, int): return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, float): return b"\xfb" + struct.pack(">d", v)
    if isinstance(v, str): b = v.encode(); return head(3, len(b)) + b
    if isinstance(v, bytes): return head(2, len(v)) + v
    if isinstance(v, list): return head(4, len(v)) + b"".join(enc(x) for x in v)
    if isinstance(v, dict):
        items = sorted((enc(k), enc(x)) for k, x in v.items())
        return head(5, len(items)) + b"".join(k + x for k, x in items)
    raise TypeError(v)

def b32(b): return base64.b32encode(b).decode().lower().rstrip("=")

def sig_structure(prot, topic, payload): return enc(["Signature1", prot, topic.encode(), payload])

def sign(seed, topic, f):
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    m = {1: 1, 2: bytes.fromhex(f["fp"]), 3: f["seq"], 4: f["ts"]}
    for k, name in ((5, "out"), (6, "conf"), (7, "n"), (8, "ctx"), (9, "exp")):
        if name in f: m[k] = f[name]
    if f.get("del"): m[10] = True
    prot = enc({1: -19})
    payload = enc(m)
    sig = key.sign(sig_structure(prot, topic, payload))
    return b"\xd2" + enc([prot, {4: pub}, payload, sig])

def verify(topic, packet):
    msg = cbor2.loads(packet)
    assert isinstance(msg, cbor2.CBORTag) and msg.tag == 18, "tag 18"
    prot, unprot, payload, sig = msg.value
    assert cbor2.loads(prot) == {1: -19}, "protected {1: -19}"
    kid = unprot[4]
    assert len(kid) == 32
    assert b32(hashlib.sha256(kid).digest()[:16]) == topic.split("/")[-1], "kid owns the topic"
    Ed25519PublicKey.from_public_bytes(kid).verify(sig, sig_structure(prot, topic, payload))
    return cbor2.loads(payload)

def address(tpl_id, values):
    t = base64.b32decode(tpl_id.upper() + "======")[:16]
    acc, levels = t, []
    for v in values:
        b = unicodedata.normalize("NFC", v).encode()
        acc += len(b).to_bytes(2, "big") + b
        levels.append(b32(hashlib.sha256(acc).digest())[:10])
    return levels, hashlib.sha256(acc).digest()[:16].hex()

out = []
for case in json.load(sys.stdin):
    r = {}
    if "address" in case:
        r["levels"], r["fp"] = address(case["address"]["tplId"], case["address"]["canon"])
    else:
        r["packet"] = sign(case["seed"], case["topic"], case["fields"]).hex()
        try:
            p = verify(case["topic"], bytes.fromhex(case["ours"]))
            r["verified"] = True
            r["seq"] = p[3]
        except Exception as e:
            r["verified"] = False
            r["error"] = repr(e)
    out.append(r)
print(json.dumps(out))
`;

interface PyResult { packet?: string; verified?: boolean; seq?: number; error?: string; levels?: string[]; fp?: string }

const NOW = 1_795_000_000_000;

function fieldCases(): PacketFields[] {
  const a = address(bearing, situation);
  const rand = prng(2026);
  const cases: PacketFields[] = [
    { fp: a.fp, seq: 7, ts: NOW, out: 'failure', conf: 0.94, n: 3, ctx: { ambient_c: 21.5, rpm: 1480 } },
    { fp: a.fp, seq: 8, ts: NOW, del: true },
    { fp: a.fp, seq: 9, ts: NOW, out: -1834.25, exp: 1_800_000_000 },
    { fp: a.fp, seq: 10, ts: NOW, out: { hours: 1834, mode: 'spall', 'température': -3 }, conf: 1, n: 250 },
    { fp: a.fp, seq: 2 ** 40 + 3, ts: 2 ** 45, out: 'no_failure', ctx: { rpm: 0, ambient_c: -0.5, 'Δp_bar': 1e-9 } },
    { fp: a.fp, seq: Number.MAX_SAFE_INTEGER, ts: 0, out: 0, conf: 0, n: 65536 },
  ];
  for (let i = 0; i < 24; i++) {
    cases.push({
      fp: a.fp,
      seq: Math.floor(rand() * 2 ** 50),
      ts: Math.floor(rand() * 2 ** 44),
      out: i % 2 ? Math.round(rand() * 1e6) / 100 : ['failure', 'no_failure', 'éé', '水'][i % 4]!,
      ...(i % 3 ? { conf: Math.round(rand() * 100) / 100 } : {}),
      ...(i % 4 ? { ctx: { rpm: Math.floor(rand() * 5000), ambient_c: Math.round(rand() * 800 - 300) / 10 } } : {}),
    });
  }
  return cases;
}

t.test('interop-python - an independent Python implementation signs the same bytes and verifies ours', async (t) => {
  const key = keyFromSeed(new Uint8Array(32).map((_, i) => i * 7 + 1));
  const topic = outcomeTopic(address(bearing, situation), key.nodeId);
  const fields = fieldCases();
  const ours = fields.map((f) => signPacket(key, topic, f));
  const input = fields.map((f, i) => ({
    seed: toHex(key.secretKey),
    topic,
    fields: { ...f, fp: toHex(f.fp) },
    ours: toHex(ours[i]!),
  }));
  const results = JSON.parse(await python(PY, JSON.stringify(input))) as PyResult[];
  t.equal(results.length, fields.length);
  results.forEach((r, i) => {
    t.equal(r.verified, true, `Python verifies our packet #${i} ${r.error ?? ''}`);
    t.equal(r.seq, fields[i]!.seq, `Python reads seq #${i}`);
    t.equal(r.packet, toHex(ours[i]!), `Python's packet #${i} is byte-identical to ours`);
    t.equal(verifyPacket(topic, Buffer.from(r.packet!, 'hex'), { now: NOW }).seq, fields[i]!.seq, `we verify Python's packet #${i}`);
  });
  // Not vacuous: a packet bound to another topic fails in Python too.
  const other = outcomeTopic(address(bearing, { ...situation, sealed: false }), key.nodeId);
  const [wrong] = JSON.parse(await python(PY, JSON.stringify([{ ...input[0], topic: other }]))) as PyResult[];
  t.equal(wrong!.verified, false, 'Python refuses our packet under another topic');
});

t.test('interop-python - Python computes the same levels and fp, non-ASCII and NFC included', async (t) => {
  const situations = [
    situation,
    { ...situation, machine_model: 'Gr\u00fcnwald-7' },
    { ...situation, machine_model: 'Gru\u0308nwald-7' },
    { ...situation, machine_model: '水泵-200', load_kn: 5000, sealed: false },
    { ...situation, load_kn: -3 },
  ];
  const addrs = situations.map((s) => address(bearing, s));
  const input = addrs.map((a) => ({ address: { tplId: a.tplId, canon: a.canon } }));
  const results = JSON.parse(await python(PY, JSON.stringify(input))) as PyResult[];
  results.forEach((r, i) => {
    t.same(r.levels, addrs[i]!.levels, `levels #${i}`);
    t.equal(r.fp, toHex(addrs[i]!.fp), `fp #${i}`);
  });
  t.same(addrs[1]!.levels, addrs[2]!.levels, 'composed and decomposed ü route the same (NFC)');
});
