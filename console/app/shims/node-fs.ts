// `node:fs`, `node:fs/promises` and `node:path` in the browser bundle: src/ imports them for key files,
// outboxes and template files, none of which the console touches; a call fails loudly.
function unavailable(): never {
  throw new Error('console: the file system is not available in the browser');
}
export const existsSync = unavailable;
export const link = unavailable;
export const mkdir = unavailable;
export const open = unavailable;
export const readFile = unavailable;
export const readdir = unavailable;
export const realpath = unavailable;
export const rename = unavailable;
export const stat = unavailable;
export const unlink = unavailable;
export const writeFile = unavailable;
export const basename = unavailable;
export const dirname = unavailable;
export const join = unavailable;
export const resolve = unavailable;
export default {};
