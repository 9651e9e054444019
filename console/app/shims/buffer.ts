// src/ uses Node's global Buffer (key prefixes, UTF-8 decoding of template documents, the JWK of
// a public key); esbuild injects this one, the browser port of Node's Buffer, wherever the bundle
// names `Buffer`. That port lacks Node's 'base64url' encoding, which src/identity.ts uses for the
// JWK: added here.
import { Buffer } from 'buffer';

const toString = Buffer.prototype.toString;
Buffer.prototype.toString = function (this: Buffer, encoding?: string, start?: number, end?: number): string {
  if (encoding !== 'base64url') return toString.call(this, encoding as BufferEncoding, start, end);
  return toString.call(this, 'base64', start, end).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
};

export { Buffer };
