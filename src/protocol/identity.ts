/**
 * Node identity (PROTOCOL §2): Ed25519 keys, self-certifying node ids, key files, and the one
 * verification policy every verifier of the system applies.
 */
import crypto from 'node:crypto';
import { open, link, unlink, readFile, stat } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';
import * as ed from '@noble/ed25519';
import { sha512 } from '@noble/hashes/sha2.js';
import { b32, isB32Id16, sha256, toHex, fromHex, equalBytes } from './bytes.js';
import { QisError } from './errors.js';
import { mkdirs } from './mkdirs.js';

ed.hashes.sha512 = sha512;

declare const nodeIdBrand: unique symbol;
/** 26-character lowercase base32 node id: `b32(H(publicKey)[0..16])`. */
export type NodeId = string & { readonly [nodeIdBrand]: true };

/** A node's key pair. `secretKey` is the 32-byte RFC 8032 seed. */
export interface NodeKey {
  readonly secretKey: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly nodeId: NodeId;
}

/**
 * Ed25519 implementations. `node` is OpenSSL through node:crypto (about 10× faster here);
 * `noble` is @noble/ed25519 in strict RFC 8032 mode. Both accept exactly the same signatures:
 * the test suite pins them to all 151 Wycheproof cases.
 */
export type Ed25519Backend = 'node' | 'noble';
export const ED25519_BACKENDS: readonly Ed25519Backend[] = ['node', 'noble'];

/** `nodeId = b32(H(publicKey)[0..16])`. */
export function nodeIdOf(publicKey: Uint8Array): NodeId {
  return b32(sha256(publicKey).subarray(0, 16)) as NodeId;
}

/** True when `text` is a well-formed node id (26 base32 characters encoding 16 bytes). */
export function isNodeId(text: string): text is NodeId {
  return isB32Id16(text);
}

// DER prefixes that wrap a raw Ed25519 seed (PKCS#8) and public key (SPKI), RFC 8410.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

const privateKeyObjects = new WeakMap<NodeKey, crypto.KeyObject>();

function privateKeyObject(key: NodeKey): crypto.KeyObject {
  let ko = privateKeyObjects.get(key);
  if (!ko) {
    ko = crypto.createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, key.secretKey]), format: 'der', type: 'pkcs8' });
    privateKeyObjects.set(key, ko);
  }
  return ko;
}

/** The key pair of a 32-byte seed. */
export function keyFromSeed(seed: Uint8Array): NodeKey {
  if (!(seed instanceof Uint8Array) || seed.length !== 32) {
    throw new QisError('ERR_INVALID_ARGUMENT', 'an Ed25519 seed is 32 bytes');
  }
  const secretKey = new Uint8Array(seed);
  const ko = crypto.createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, secretKey]), format: 'der', type: 'pkcs8' });
  const spki = crypto.createPublicKey(ko).export({ format: 'der', type: 'spki' });
  const publicKey = new Uint8Array(spki.subarray(SPKI_PREFIX.length));
  const key: NodeKey = Object.freeze({ secretKey, publicKey, nodeId: nodeIdOf(publicKey) });
  privateKeyObjects.set(key, ko);
  return key;
}

/** A new random key pair. */
export function generateKey(): NodeKey {
  return keyFromSeed(crypto.randomBytes(32));
}

/** Ed25519 signature (64 bytes) of `message`. Both backends give the same bytes (RFC 8032 is deterministic). */
export function signEd25519(key: NodeKey, message: Uint8Array, backend: Ed25519Backend = 'node'): Uint8Array {
  if (backend === 'noble') return ed.sign(message, key.secretKey);
  return crypto.sign(null, message, privateKeyObject(key)); // a Buffer, which is a Uint8Array
}

// Peers are cached (a bounded LRU) by public key: their node id (a SHA-256) and their public
// KeyObject (a JWK import, about a tenth of a verification), each made once per key. A broker sees
// the same few thousand keys again and again, and a node querying its cohort again the same peers.
// Enough for a large cohort read again and again; each entry is one small KeyObject and a string.
const PEER_CACHE_MAX = 16_384;
interface Peer {
  readonly nodeId: NodeId;
  /** Undefined until first needed; null: the bytes are not a valid Ed25519 public key. */
  ko: crypto.KeyObject | null | undefined;
  /** The value of `uses` when it was last moved to the end. */
  used: number;
}
/** Look-ups so far: an entry moved to the end more than PEER_CACHE_MAX / 2 ago may be near the front. */
let uses = 0;
const peers = new Map<string, Peer>();
// The last key looked up and its entry: a packet's check asks for its kid twice (node id, then
// KeyObject), and the second ask costs a 32-byte compare instead of a cache lookup.
const lastKey = new Uint8Array(32);
let lastPeer: Peer | undefined;

/** A public key's key in `peers`: its bytes as a latin1 string. */
const peerId = (publicKey: Uint8Array): string => Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('latin1');

/** The entry of the key looked up last, if `publicKey` is that key. */
const lastLookedUp = (publicKey: Uint8Array): Peer | undefined => (lastPeer && equalBytes(publicKey, lastKey) ? lastPeer : undefined);

function peer(publicKey: Uint8Array): Peer {
  const last = lastLookedUp(publicKey);
  if (last) return last;
  const id = peerId(publicKey);
  let p = peers.get(id);
  lastKey.set(publicKey);
  if (p) {
    // Least recently used goes first: moved to the end when used, so a cohort read again and
    // again keeps its keys while a stream of one-off keys passes through. Only once it is in the
    // older half (a move costs a delete and an insert, and a newer entry is not evicted soon).
    if (uses - p.used > PEER_CACHE_MAX / 2) {
      peers.delete(id);
      peers.set(id, p);
      p.used = uses;
    }
    uses++;
    return (lastPeer = p);
  }
  p = { nodeId: nodeIdOf(publicKey), ko: undefined, used: uses++ };
  if (peers.size >= PEER_CACHE_MAX) {
    const oldest = peers.keys().next();
    if (!oldest.done) peers.delete(oldest.value);
  }
  peers.set(id, p);
  return (lastPeer = p);
}

/**
 * True when checking a packet signed by `publicKey` now evicts no other key from the peer cache:
 * the key is cached, or the cache holds fewer than `room` keys (at most its own size). The
 * broker's main thread verifies a packet itself only then (broker/verifier.ts), so that its own
 * checks never churn the cache: each evicted key's KeyObject holds native memory until a full
 * collection, which the main thread does not force.
 */
export function peerCachedOrRoom(publicKey: Uint8Array, room: number = PEER_CACHE_MAX): boolean {
  if (publicKey.length !== 32) return false;
  if (peers.size < Math.min(room, PEER_CACHE_MAX)) return true;
  return lastLookedUp(publicKey) !== undefined || peers.has(peerId(publicKey));
}

/** {@link nodeIdOf} of a 32-byte public key, from the peer cache (hashed once per key seen). */
export function peerNodeId(publicKey: Uint8Array): NodeId {
  return publicKey.length === 32 ? peer(publicKey).nodeId : nodeIdOf(publicKey);
}

function publicKeyObject(publicKey: Uint8Array): crypto.KeyObject | undefined {
  const p = peer(publicKey);
  if (p.ko === undefined) {
    try {
      // JWK import: about 10× faster than SPKI DER under OpenSSL 3, same key, same checks at verify time.
      const x = Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('base64url');
      p.ko = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
    } catch {
      p.ko = null;
    }
  }
  return p.ko ?? undefined;
}

/**
 * The system's one Ed25519 verification policy: strict RFC 8032 §5.1.7 (canonical S < L,
 * canonical encodings of R and A, cofactorless equation), exact lengths. OpenSSL applies it
 * natively; noble is run with `zip215: false`, which is the same rule. Returns false for any
 * malformed input rather than throwing.
 */
export function verifyEd25519(
  signature: Uint8Array,
  message: Uint8Array,
  publicKey: Uint8Array,
  backend: Ed25519Backend = 'node',
): boolean {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  if (backend === 'noble') {
    try {
      return ed.verify(signature, message, publicKey, { zip215: false });
    } catch {
      return false;
    }
  }
  const ko = publicKeyObject(publicKey);
  if (!ko) return false;
  try {
    return crypto.verify(null, message, ko, signature);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------- key files

/** Key file contents (PROTOCOL-independent, documented in README). */
export interface KeyFileJson {
  secretKey: string;
  publicKey: string;
  nodeId: string;
}

/** The JSON form of a key. */
export function keyToJson(key: NodeKey): KeyFileJson {
  return { secretKey: toHex(key.secretKey), publicKey: toHex(key.publicKey), nodeId: key.nodeId };
}

/**
 * Checks a parsed key file: the form, then that publicKey and nodeId belong to secretKey.
 * @throws QisError ERR_KEY_FILE_INVALID | ERR_KEY_MISMATCH
 */
export function keyFromJson(json: unknown, source = 'key'): NodeKey {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new QisError('ERR_KEY_FILE_INVALID', `${source}: expected a JSON object with secretKey, publicKey and nodeId`);
  }
  const o = json as Record<string, unknown>;
  const field = (name: keyof KeyFileJson, re: RegExp, what: string): string => {
    const v = o[name];
    if (typeof v !== 'string' || !re.test(v)) {
      throw new QisError('ERR_KEY_FILE_INVALID', `${source}: "${name}" must be ${what}`);
    }
    return v;
  };
  const secretHex = field('secretKey', /^[0-9a-fA-F]{64}$/, '64 hex digits (the 32-byte Ed25519 seed)');
  const publicHex = field('publicKey', /^[0-9a-fA-F]{64}$/, '64 hex digits (the 32-byte public key)');
  const nodeId = field('nodeId', /^[a-z2-7]{26}$/, 'a 26-character lowercase base32 node id');
  const key = keyFromSeed(fromHex(secretHex) as Uint8Array);
  if (!equalBytes(key.publicKey, fromHex(publicHex) as Uint8Array)) {
    throw new QisError('ERR_KEY_MISMATCH', `${source}: publicKey does not belong to secretKey`);
  }
  if (key.nodeId !== nodeId) {
    throw new QisError('ERR_KEY_MISMATCH', `${source}: nodeId ${nodeId} does not belong to secretKey (its id is ${key.nodeId})`);
  }
  return key;
}

function ioError(path: string, e: unknown): QisError {
  const code = (e as NodeJS.ErrnoException).code ?? 'error';
  const message = (e as Error).message;
  // Node's fs messages already begin with the code ("ENOENT: no such file…"): say it once.
  return new QisError('ERR_FILE_IO', `${path}: ${message.startsWith(`${code}:`) ? message : `${code}: ${message}`}`, { cause: e });
}

/**
 * Writes a key file with mode 0600, atomically (temp file, fsync, link into place) and never
 * over an existing file.
 * @throws QisError ERR_KEY_EXISTS | ERR_FILE_IO
 */
export async function saveKeyFile(path: string, key: NodeKey): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  try {
    await mkdirs(dir, 0o700);
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(JSON.stringify(keyToJson(key), null, 2) + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new QisError('ERR_KEY_EXISTS', `${path} already exists; refusing to overwrite a node key`);
      }
      throw e;
    }
    const dh = await open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch (e) {
    if (e instanceof QisError) throw e;
    throw ioError(path, e);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/**
 * Loads and checks a key file. On POSIX systems a file that group or others can read or write
 * is refused, as ssh refuses such a private key.
 * @throws QisError ERR_FILE_IO | ERR_KEY_PERMISSIONS | ERR_KEY_FILE_INVALID | ERR_KEY_MISMATCH
 */
export async function loadKeyFile(path: string): Promise<NodeKey> {
  let text: string;
  try {
    const st = await stat(path);
    // A directory's mode (0755) would otherwise read as a permissions problem.
    if (st.isDirectory()) throw new QisError('ERR_FILE_IO', `${path} is a directory, not a key file`);
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      throw new QisError(
        'ERR_KEY_PERMISSIONS',
        `${path} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}; a key file must not be accessible to group or others (chmod 600 ${path})`,
      );
    }
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (e instanceof QisError) throw e;
    throw ioError(path, e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new QisError('ERR_KEY_FILE_INVALID', `${path}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
  return keyFromJson(json, path);
}

/**
 * Loads the key file at `path`, or makes a new key and saves it there when the file does not
 * exist (a node's `key.json`, a broker's `broker-key.json`).
 * @throws QisError ERR_FILE_IO | ERR_KEY_PERMISSIONS | ERR_KEY_FILE_INVALID | ERR_KEY_MISMATCH | ERR_KEY_EXISTS
 */
export async function loadOrCreateKeyFile(path: string): Promise<NodeKey> {
  try {
    return await loadKeyFile(path);
  } catch (e) {
    const missing = e instanceof QisError && e.code === 'ERR_FILE_IO' && (e.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
    if (!missing) throw e;
  }
  const key = generateKey();
  await saveKeyFile(path, key);
  return key;
}
