/** The values the CBOR codec (cbor.ts) encodes and decodes. */

/** A CBOR tag with its content (tag 18 wraps COSE_Sign1). */
export class CborTag {
  constructor(readonly tag: number | bigint, readonly value: CborValue) {}
}

/** A CBOR simple value other than false, true, null and undefined (0..19 or 32..255). */
export class CborSimple {
  constructor(readonly value: number) {}
}

/**
 * A floating-point number as decoded with `markFloats`, so that callers can tell `1.0` from `1`:
 * where the protocol says "uint", a float is the wrong type, whatever its value.
 */
export class CborFloat {
  constructor(readonly value: number) {}
}

export type CborValue =
  | number
  | bigint
  | string
  | boolean
  | null
  | undefined
  | Uint8Array
  | CborValue[]
  | Map<CborValue, CborValue>
  | CborTag
  | CborSimple
  | CborFloat
  | { readonly [key: string]: CborValue };

/** Deepest nesting the codec writes or reads; a decoder's `maxDepth` cannot go past it. */
export const MAX_DEPTH = 64;
