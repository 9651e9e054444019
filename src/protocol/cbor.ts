/**
 * The project's one CBOR codec (RFC 8949), written for PROTOCOL §1.
 *
 * Encoding is deterministic: definite lengths, shortest integer heads, an integer-valued
 * number as a CBOR integer and any other number as float64, map keys sorted by their encoded
 * bytes (which puts integer keys ascending and shorter text keys first), byte strings untagged.
 *
 * Decoding is general (any valid width, indefinite lengths, half floats, tags, simple values)
 * but strict where leniency would let two verifiers disagree: duplicate map keys, invalid
 * UTF-8, reserved header values, trailing bytes and nesting deeper than `maxDepth` are all
 * refused with ERR_CBOR_MALFORMED. Every length is checked against the bytes that remain
 * before anything is allocated, so hostile headers cannot make it allocate.
 *
 * Why not cbor-x: its decoder keeps the last of duplicate keys, replaces invalid UTF-8,
 * turns tags into Dates and shared references, and its encoder writes integers above 2^32 as
 * float64; each of those breaks byte equality or agreement between regions (README, Dependencies).
 */
export { CborTag, CborSimple, CborFloat, MAX_DEPTH, type CborValue } from './cbor-value.js';
export { encodeCbor, encodeWith, encodeThen, CborWriter } from './cbor-encode.js';
export { decodeCbor, type DecodeOptions } from './cbor-decode.js';
