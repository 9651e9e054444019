// A real file handle with some of its methods replaced, for tests that make the store's writes or
// syncs fail, slow down or wait (mocked into node:fs/promises' `open` with tap's mockImport).
import type { FileHandle } from 'node:fs/promises';

/** `fh` with the methods named in `over` replaced; every other method is fh's own, bound to it. */
export function withMethods(fh: FileHandle, over: { readonly write?: FileHandle['write']; readonly datasync?: FileHandle['datasync'] }): FileHandle {
  return new Proxy(fh, {
    get(target, prop) {
      const own = prop === 'write' || prop === 'datasync' ? over[prop] : undefined;
      if (own) return own;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
