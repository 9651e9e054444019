/**
 * The regional broker's durable store: exactly one outcome packet per (template, node), the one
 * with the highest seq (PROTOCOL §6), independent of Aedes and MQTT.
 *
 * On disk it is one append-only log of CRC-framed records (a put or a removal), replayed at open
 * and rewritten by compaction; in memory it is an index (template, node) → entry, a topic-level
 * trie for `match`, and packet bytes packed into slabs. docs/store.md has the record format, the
 * fsync guarantees, the compaction rule and the measured figures; the parts are in broker/store/
 * (docs/ARCHITECTURE.md, "Layout" says which part owns what). This file is the entry point: import from here.
 *
 * Only `../src/index.js` and node built-ins are imported (test/boundaries.test.ts).
 */
import * as fs from 'node:fs/promises';
import { openLogStore } from './store/log-store.js';
import type { Store, StoreOptions } from './store/types.js';
export type { FsyncPolicy, KeyState, KeyWatcher, PutResult, RecoveryReport, RemoveResult, Store, StoreKey, StoreOptions, StoreStats, StoredPacket, Tombstone } from './store/types.js';
export { STORE_DEFAULTS } from './store/types.js';
export { STORE_FILES } from './store/format.js';
export { argError, checkStoredPacket, noop, parseFilter, show, type Checked } from './store/common.js';

/**
 * Opens (or creates) the store in `options.dir` and replays its log. A torn or corrupt tail is
 * cut off and corrupt regions in the middle are skipped; both are reported in `store.recovery`.
 * @throws QisError ERR_INVALID_ARGUMENT (options) | ERR_FILE_IO (the directory, the lock or the log)
 * @example
 * await using store = await openStore({ dir: '/var/lib/qis/store' });
 * if ((store.seqOf(p.tplId, p.nodeId) ?? -1) < p.seq) await store.put(p); // then PUBACK
 * for (const r of store.match('qis/1/o/<tplId>/<L1>/#')) send(r.topic, r.packet);
 */
export function openStore(options: StoreOptions): Promise<Store> {
  // The parts get the file system from here, the one module that imports node:fs/promises, so
  // a test that swaps it for this module (t.mockImport) reaches every part.
  return openLogStore(options, fs);
}
