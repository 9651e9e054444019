// Loads the test vectors kept in test/vectors (copied from the project's shared vectors; see
// test/vectors/README.md for sources and licences).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export function vector<T = unknown>(name: string): T {
  return JSON.parse(readFileSync(fileURLToPath(new URL(`../vectors/${name}`, import.meta.url)), 'utf8')) as T;
}

export const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
export const toHexString = (b: Uint8Array): string => Buffer.from(b).toString('hex');
