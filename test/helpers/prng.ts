/** Seeded PRNG (mulberry32): the same sequence on every run, so a failing case reproduces. */
export { prng } from '../../src/index.js';
