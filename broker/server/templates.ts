/**
 * Template documents (qis/1/t/<tplId>): checked, written durably to `<dataDir>/templates`, kept in
 * memory (admission needs each template's depth), published retained at start and forwarded to
 * peers when new.
 */
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Client } from 'aedes';
import type { Logger } from 'pino';
import { writeFileDurable } from '../../src/index.js';
import { checkTemplateDoc } from '../admission.js';
import type { AdmissionOptions } from '../options.js';
import type { AedesPublishPacket, BrokerContext, Done } from './context.js';
import { refuse } from './respond.js';

/** Largest template document (a template is a few hundred bytes of JSON). */
export const MAX_TEMPLATE_BYTES = 64 * 1024;
/** Most template documents one broker keeps. */
export const MAX_TEMPLATES = 10_000;

const TEMPLATE_PREFIX = 'qis/1/t/';

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

/** A template document published by a client or a peer (`origin`): checked, written durably, kept; forwarded to peers when new. */
export function admitTemplate(ctx: BrokerContext, client: Client | null, packet: AedesPublishPacket, cb: Done, origin?: string): void {
  const book = ctx.templates;
  const topic = packet.topic;
  // Template documents are small and few; they are kept forever, so both are bounded.
  const size = (packet.payload as Buffer).length;
  if (size > MAX_TEMPLATE_BYTES) return refuse(ctx, client, topic, 'ERR_PACKET_TOO_LARGE', `template document of ${size} bytes; at most ${MAX_TEMPLATE_BYTES}`, cb);
  if (!book.has(topic.slice(TEMPLATE_PREFIX.length)) && book.size >= MAX_TEMPLATES) {
    return refuse(ctx, client, topic, 'ERR_TEMPLATE_UNKNOWN', `this broker already holds ${MAX_TEMPLATES} template documents`, cb);
  }
  const c = checkTemplateDoc(topic, packet.payload as Buffer, book.admission);
  if (!c.ok) return refuse(ctx, client, topic, c.code, c.message, cb);
  const bytes = Uint8Array.from(packet.payload as Buffer);
  const old = book.packetOf(c.tplId);
  const isNew = old === undefined || Buffer.compare(old, bytes) !== 0;
  writeFileDurable(join(book.dir, `${c.tplId}.cose`), bytes).then(
    () => {
      book.set(c.tplId, c.depth, bytes);
      packet.retain = true;
      ctx.metrics.admitted.inc({ kind: 'template' });
      // Only a new document travels on: the same bytes again would circle a ring for ever.
      if (isNew) ctx.federation?.admitted(topic, bytes, origin);
      cb(null);
    },
    (e: unknown) => refuse(ctx, client, topic, 'ERR_FILE_IO', (e as Error).message, cb),
  );
}
