/**
 * What a running broker takes from new options without dropping a client (`qis broker` on
 * SIGHUP): the ACLs, who may log in (`auth`, the password file read again), the trusted
 * operators and the log level. New connections, publishes and subscriptions follow the new
 * options at once; connected clients keep their identity. Anything else that changed (listeners,
 * data directory, limits, federation, …) needs a restart and is said so, not applied.
 */
import { isDeepStrictEqual } from 'node:util';
import type { BrokerOptions } from '../options.js';
import type { BrokerContext } from './context.js';

export interface ReloadReport {
  /** Key paths applied (`acl.publish`, `auth`, `admission.operators`, `log.level`). */
  readonly changed: readonly string[];
  /** Top-level keys that differ but take effect only after a restart. */
  readonly needRestart: readonly string[];
}

/** The reloadable parts, by key path, as read from options. */
const RELOADABLE: Record<string, (o: BrokerOptions) => unknown> = {
  'acl.publish': (o) => o.acl.publish,
  'acl.subscribe': (o) => o.acl.subscribe,
  'acl.refusedPublish': (o) => o.acl.refusedPublish,
  auth: (o) => o.auth,
  'admission.operators': (o) => o.admission.operators,
  'log.level': (o) => o.log.level,
};

/**
 * Applies the reloadable parts of `pending` (options, or their reading, which may fail) to the
 * running broker. The password file is read first: when the options or the file are invalid this
 * throws (counted in qis_config_reloads_total{result="refused"}) and nothing has changed.
 * @throws QisError ERR_CONFIG_INVALID (from `pending`) | ERR_FILE_IO | ERR_PASSWORD_FILE_INVALID
 */
export async function applyReload(ctx: BrokerContext, pending: BrokerOptions | Promise<BrokerOptions>): Promise<ReloadReport> {
  let next: BrokerOptions;
  try {
    next = await pending;
    // Always read again: the password file changes without its path changing.
    await ctx.auth.reload(next.auth ?? {});
  } catch (e) {
    ctx.metrics.reloads.inc({ result: 'refused' });
    throw e;
  }
  const cur = ctx.options;
  const changed = Object.keys(RELOADABLE).filter((k) => !isDeepStrictEqual(RELOADABLE[k]?.(cur), RELOADABLE[k]?.(next)));
  if (next.auth?.passwordFile !== undefined && !changed.includes('auth')) changed.push('auth.passwordFile (read again)');
  const { auth: _old, ...rest } = cur;
  ctx.options = Object.freeze({
    ...rest,
    acl: next.acl,
    ...(next.auth !== undefined ? { auth: next.auth } : {}),
    admission: Object.freeze({ ...cur.admission, operators: next.admission.operators }),
    log: next.log,
  });
  ctx.logger.level = next.log.level;
  const needRestart = Object.keys({ ...cur, ...next }).filter((k) => {
    const key = k as keyof BrokerOptions;
    if (key === 'acl' || key === 'auth' || key === 'log') return false;
    if (key === 'admission') return !isDeepStrictEqual({ ...cur.admission, operators: [] }, { ...next.admission, operators: [] });
    return !isDeepStrictEqual(cur[key], next[key]);
  });
  ctx.metrics.reloads.inc({ result: 'applied' });
  return { changed, needRestart };
}
