/**
 * Templates by id (issue 7): fetched from the registry (`qis/1/t/<tplId>`) over the node's own
 * connection, verified (curator signature, hash, valid template) and cached in
 * `<dataDir>/templates/`, so later calls need no broker.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { QisError } from '../protocol/errors.js';
import { isTplId, type Template } from '../protocol/template.js';
import { templateTopic, verifyTemplateDoc } from '../protocol/template-doc.js';
import type { Connection } from './connection.js';
import { ensureDir, writeFileDurable } from './durable.js';
import { DEFAULTS, positive, throwIfAborted } from './options.js';
import { readRetained } from './sync.js';

export class Templates {
  readonly #conn: Connection;
  /** Templates fetched or read from the cache, by id. */
  readonly #templates = new Map<string, Template>();

  constructor(conn: Connection) {
    this.#conn = conn;
  }

  /** The template itself, or the one a template id names. */
  resolve(t: Template | string, signal: AbortSignal | undefined, timeoutMs?: number): Promise<Template> {
    if (typeof t !== 'string') return Promise.resolve(t);
    return this.template(t, { ...(signal ? { signal } : {}), ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
  }

  async template(tplId: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Template> {
    const conn = this.#conn;
    conn.checkOpen();
    throwIfAborted(options.signal);
    if (typeof tplId !== 'string' || !isTplId(tplId)) throw new QisError('ERR_INVALID_ARGUMENT', `a template id is 26 lowercase base32 characters, got ${JSON.stringify(tplId)}`);
    positive('timeoutMs', options.timeoutMs);
    const known = this.#templates.get(tplId);
    if (known) return known;
    const dir = join(conn.o.dataDir, 'templates');
    const file = join(dir, `${tplId}.cose`);
    const cached = await this.#cached(tplId, file);
    if (cached) return cached;
    const deadline = conn.now() + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    const { messages } = await readRetained(conn, templateTopic(tplId), deadline, options.signal);
    const last = messages[messages.length - 1];
    if (!last) throw new QisError('ERR_TEMPLATE_NOT_FOUND', `the broker at ${conn.o.url} holds no template document ${tplId}`);
    const v = verifyTemplateDoc(tplId, last.payload, conn.o.backend);
    await ensureDir(dir);
    await writeFileDurable(file, v.bytes);
    this.#templates.set(tplId, v.template);
    return v.template;
  }

  /** The cached template, if its file is there and still verifies. */
  async #cached(tplId: string, file: string): Promise<Template | undefined> {
    let cached: Uint8Array | undefined;
    try {
      cached = new Uint8Array(await readFile(file));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new QisError('ERR_FILE_IO', `${file}: ${(e as Error).message}`, { cause: e });
    }
    if (!cached) return undefined;
    try {
      const v = verifyTemplateDoc(tplId, cached, this.#conn.o.backend);
      this.#templates.set(tplId, v.template);
      return v.template;
    } catch {
      return undefined; // a damaged cache file is fetched again (and replaced)
    }
  }
}
