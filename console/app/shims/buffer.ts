// src/ uses Node's global Buffer (key prefixes, UTF-8 decoding of template documents); esbuild
// injects this one, the browser port of Node's Buffer, wherever the bundle names `Buffer`.
export { Buffer } from 'buffer';
