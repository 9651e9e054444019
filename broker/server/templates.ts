/**
 * Admission of template documents (qis/1/t/<tplId>): checked, written durably to
 * `<dataDir>/templates`, kept in the TemplateBook (template-book.ts), retained, and forwarded to
 * peers when new.
 */
import { join } from 'node:path';
import type { Client } from 'aedes';
import { writeFileDurable } from '../../src/index.js';
import { checkTemplateDoc } from '../admission.js';
import type { AedesPublishPacket, BrokerContext, Done } from './context.js';
import { refuse } from './respond.js';
import { TEMPLATE_PREFIX } from './template-book.js';

/** Largest template document (a template is a few hundred bytes of JSON). */
export const MAX_TEMPLATE_BYTES = 64 * 1024;
/** Most template documents one broker keeps. */
export const MAX_TEMPLATES = 10_000;

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
