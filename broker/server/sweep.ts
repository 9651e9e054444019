/** The periodic sweep: forgets idle rate-limit buckets and removes expired packets from the store. */
import type { BrokerContext } from './context.js';

/** Runs every `options.sweepIntervalMs` (the timer does not hold the process); returns the stop. */
export function startSweep(ctx: BrokerContext): () => void {
  const sweep = setInterval(() => sweepOnce(ctx), ctx.options.sweepIntervalMs);
  sweep.unref();
  return () => clearInterval(sweep);
}

export function sweepOnce(ctx: BrokerContext): void {
  ctx.rate.prune(ctx.now());
  ctx.limits.prune(ctx.now());
  ctx.store.sweepExpired(ctx.now()).then(
    (gone) => {
      if (gone.length > 0) {
        ctx.metrics.expired.inc(gone.length);
        ctx.logger.info({ count: gone.length }, 'expired packets swept');
      }
    },
    (e: unknown) => ctx.logger.error({ err: e }, 'sweep failed'),
  );
}
