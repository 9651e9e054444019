/**
 * The revocation lists a broker holds (PROTOCOL §10), kept one file per operator in its data
 * directory and read back at start. Admission of a new list is enrolment.ts; this file only keeps
 * them (and imports nothing of the broker, so the context can hold one without an import circle).
 */
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { QisError, REVOCATION_TOPIC_PREFIX, revocationIndex, verifyRevocation, type VerifiedRevocation } from '../../src/index.js';

/** Most operators whose revocation lists one broker keeps (each list is at most 512 bytes). */
export const MAX_REVOCATION_LISTS = 10_000;

/** The revocation lists a broker holds, by operator id; `dir` is where they are written. */
export class RevocationBook {
  readonly #lists = new Map<string, VerifiedRevocation>();
  #revoked: Map<string, ReadonlySet<string>> = new Map();
  private constructor(readonly dir: string) {}

  /** Reads the lists kept in `dir` (created when missing); a stored list that fails its checks is logged and skipped. */
  static async open(dir: string, logger: Logger): Promise<RevocationBook> {
    const book = new RevocationBook(dir);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(dir)) {
      const m = /^([a-z2-7]{26})\.cose$/.exec(name);
      if (!m?.[1]) continue;
      try {
        book.set(verifyRevocation(`${REVOCATION_TOPIC_PREFIX}${m[1]}`, new Uint8Array(await readFile(join(dir, name)))));
      } catch (e) {
        logger.warn({ file: name, code: e instanceof QisError ? e.code : 'ERR_INTERNAL' }, 'stored revocation list refused');
      }
    }
    return book;
  }

  get size(): number {
    return this.#lists.size;
  }
  get(operatorId: string): VerifiedRevocation | undefined {
    return this.#lists.get(operatorId);
  }
  set(list: VerifiedRevocation): void {
    this.#lists.set(list.operatorId, list);
    this.#revoked = revocationIndex(this.#lists.values());
  }
  /** Revoked node ids per operator id (the policy's `revoked`). */
  revoked(): ReadonlyMap<string, ReadonlySet<string>> {
    return this.#revoked;
  }
  /** Every list as (topic, signed bytes). */
  documents(): [string, Uint8Array][] {
    return [...this.#lists.values()].map((l): [string, Uint8Array] => [l.topic, l.bytes]);
  }
}
