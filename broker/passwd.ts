/**
 * Password files for MQTT username/password login, like mosquitto_passwd's: one
 * `user:scrypt$N$r$p$<salt base64>$<hash base64>` line per user, `#` comments and blank lines
 * ignored. scrypt (node:crypto, RFC 7914) is memory-hard, so a stolen file is slow to brute-force;
 * every hash has its own random salt. Reading bounds the file, the line count and the scrypt
 * parameters, so a hostile file cannot make the broker allocate or spin without limit.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { QisError, writeFileDurable } from '../src/index.js';

/** scrypt cost parameters. Default N = 2^14, r = 8, p = 1 (16 MiB, tens of ms): RFC 7914's interactive-login figure. */
export interface ScryptParams {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}
export const DEFAULT_SCRYPT: ScryptParams = Object.freeze({ N: 16_384, r: 8, p: 1 });
const MAX_N = 1 << 20;
const MAX_R = 32;
const MAX_P = 16;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
/** Bounds on what a file and a login may hold. */
export const MAX_PASSWD_FILE_BYTES = 1 << 20;
export const MAX_PASSWORD_BYTES = 1024;

/** User name → stored hash line (`scrypt$…`). */
export type PasswdEntries = ReadonlyMap<string, string>;

function invalid(message: string): never {
  throw new QisError('ERR_PASSWORD_FILE_INVALID', message);
}

function derive(password: Uint8Array, salt: Uint8Array, p: ScryptParams): Promise<Buffer> {
  const options: ScryptOptions = { N: p.N, r: p.r, p: p.p, maxmem: 256 * p.N * p.r + (1 << 20) };
  return new Promise((resolve, reject) => scrypt(password, salt, KEY_BYTES, options, (e, key) => (e ? reject(e) : resolve(key))));
}

const asBytes = (password: string | Uint8Array): Uint8Array => (typeof password === 'string' ? Buffer.from(password, 'utf8') : password);

function checkUser(user: string): void {
  if (user === '' || /[:\r\n]/.test(user) || user.length > 256) invalid(`user name "${user}" must be 1 to 256 characters without ":" or line breaks`);
}

/** A new salted hash of `password` (the part after `user:`). */
export async function hashPassword(password: string | Uint8Array, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const pw = asBytes(password);
  if (pw.length > MAX_PASSWORD_BYTES) throw new QisError('ERR_INVALID_ARGUMENT', `a password is at most ${MAX_PASSWORD_BYTES} bytes`);
  parseParams(String(params.N), String(params.r), String(params.p));
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(pw, salt, params);
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

function parseParams(n: string, r: string, p: string): ScryptParams {
  const N = Number(n);
  const R = Number(r);
  const P = Number(p);
  if (!Number.isSafeInteger(N) || N < 2 || N > MAX_N || (N & (N - 1)) !== 0) invalid(`scrypt N must be a power of 2 up to ${MAX_N}, not ${n}`);
  if (!Number.isSafeInteger(R) || R < 1 || R > MAX_R) invalid(`scrypt r must be 1 to ${MAX_R}, not ${r}`);
  if (!Number.isSafeInteger(P) || P < 1 || P > MAX_P) invalid(`scrypt p must be 1 to ${MAX_P}, not ${p}`);
  return { N, r: R, p: P };
}

function parseHash(hash: string): { params: ScryptParams; salt: Buffer; key: Buffer } {
  const parts = hash.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') invalid('a hash is scrypt$N$r$p$salt$hash');
  const [, n, r, p, salt, key] = parts as [string, string, string, string, string, string];
  const b64 = /^[A-Za-z0-9+/]+={0,2}$/;
  if (!b64.test(salt) || !b64.test(key)) invalid('salt and hash are base64');
  const k = Buffer.from(key, 'base64');
  if (k.length < 16 || k.length > 64) invalid('the hash is 16 to 64 bytes');
  return { params: parseParams(n, r, p), salt: Buffer.from(salt, 'base64'), key: k };
}

/** Parses a password file's text. @throws QisError ERR_PASSWORD_FILE_INVALID (naming the line) */
export function parsePasswd(text: string, source = 'password file'): Map<string, string> {
  if (text.length > MAX_PASSWD_FILE_BYTES) invalid(`${source} is larger than ${MAX_PASSWD_FILE_BYTES} bytes`);
  const entries = new Map<string, string>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('#')) continue;
    const colon = line.lastIndexOf(':');
    try {
      if (colon <= 0) invalid('expected user:scrypt$N$r$p$salt$hash');
      const user = line.slice(0, colon);
      checkUser(user);
      parseHash(line.slice(colon + 1));
      if (entries.has(user)) invalid(`user "${user}" is listed twice`);
      entries.set(user, line.slice(colon + 1));
    } catch (e) {
      if (e instanceof QisError) invalid(`${source} line ${i + 1}: ${e.message}`);
      throw e;
    }
  }
  return entries;
}

/** Reads and parses a password file. @throws QisError ERR_FILE_IO | ERR_PASSWORD_FILE_INVALID */
export async function readPasswdFile(path: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new QisError('ERR_FILE_IO', `${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}: ${(e as Error).message}`, { cause: e });
  }
  return parsePasswd(text, path);
}

// A hash to spend the same time on for an unknown user, so timing does not tell which users exist.
let decoy: Promise<string> | undefined;

/** True when `password` is `user`'s. Unknown users cost as much as known ones. Never throws on a wrong password. */
export async function verifyPassword(entries: PasswdEntries, user: string, password: string | Uint8Array): Promise<boolean> {
  const pw = asBytes(password);
  if (pw.length > MAX_PASSWORD_BYTES) return false;
  const stored = entries.get(user);
  const h = parseHash(stored ?? (await (decoy ??= hashPassword(randomBytes(16)))));
  const key = await derive(pw, h.salt, h.params);
  return stored !== undefined && key.length === h.key.length && timingSafeEqual(key, h.key);
}

/**
 * Adds or replaces `user` in the file (created if missing), keeping the other lines as they are;
 * written atomically with mode 0600.
 * @throws QisError ERR_FILE_IO | ERR_PASSWORD_FILE_INVALID
 */
export async function setPassword(path: string, user: string, password: string | Uint8Array, params: ScryptParams = DEFAULT_SCRYPT): Promise<void> {
  checkUser(user);
  let text = '';
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new QisError('ERR_FILE_IO', `${path}: ${(e as Error).message}`, { cause: e });
  }
  parsePasswd(text, path);
  const line = `${user}:${await hashPassword(password, params)}`;
  const lines = text.split('\n').filter((l, i, all) => !(i === all.length - 1 && l === ''));
  const at = lines.findIndex((l) => l.slice(0, l.lastIndexOf(':')) === user && !l.startsWith('#'));
  if (at >= 0) lines[at] = line;
  else lines.push(line);
  await writeFileDurable(path, lines.join('\n') + '\n', 0o600);
}
