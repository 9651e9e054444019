/**
 * The template documents a broker holds (qis/1/t/<tplId>), by tplId, with each template's depth
 * (admission needs it); read from `<dataDir>/templates` at start. Admission of new documents is
 * templates.ts.
 */
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { checkTemplateDoc } from '../admission.js';
import type { AdmissionOptions } from '../options.js';

export const TEMPLATE_PREFIX = 'qis/1/t/';

/** The template documents a broker holds, by tplId; `dir` is where they are written. */
export class TemplateBook {
  readonly #docs = new Map<string, { depth: number; packet: Uint8Array }>();
  constructor(
    readonly dir: string,
    readonly admission: AdmissionOptions,
  ) {}

  /** Reads the documents kept in `dir` (created when missing); a stored document that fails its checks is logged and skipped. */
  static async open(dir: string, admission: AdmissionOptions, logger: Logger): Promise<TemplateBook> {
    const book = new TemplateBook(dir, admission);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(dir)) {
      const m = /^([a-z2-7]{26})\.cose$/.exec(name);
      if (!m?.[1]) continue;
      const bytes = new Uint8Array(await readFile(join(dir, name)));
      const c = checkTemplateDoc(`${TEMPLATE_PREFIX}${m[1]}`, bytes, admission);
      if (c.ok) book.#docs.set(c.tplId, { depth: c.depth, packet: bytes });
      else logger.warn({ file: name, code: c.code }, 'stored template document refused');
    }
    return book;
  }

  get size(): number {
    return this.#docs.size;
  }
  has(tplId: string): boolean {
    return this.#docs.has(tplId);
  }
  depthOf(tplId: string): number | undefined {
    return this.#docs.get(tplId)?.depth;
  }
  /** The signed bytes held for `tplId`. */
  packetOf(tplId: string): Uint8Array | undefined {
    return this.#docs.get(tplId)?.packet;
  }
  set(tplId: string, depth: number, packet: Uint8Array): void {
    this.#docs.set(tplId, { depth, packet });
  }
  /** Every document as (topic qis/1/t/<tplId>, signed bytes). */
  documents(): [string, Uint8Array][] {
    return [...this.#docs].map(([id, t]): [string, Uint8Array] => [`${TEMPLATE_PREFIX}${id}`, t.packet]);
  }
}
