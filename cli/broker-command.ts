/** `qis broker`: runs the regional broker from a config file and/or flags, or checks them. */
import { stringify } from 'yaml';
import { QisError } from '../src/index.js';
import { BROKER_FLAGS, configFromFlags, loadBrokerConfig, resolveBrokerOptions } from '../broker/config.js';
import { BROKER_DEFAULTS, type BrokerOptions } from '../broker/options.js';
import type { Command, FlagSpec, Flags, Io } from './run.js';


/** The default of a key path, for help text (scalars only). */
function defaultOf(key: string): string {
  let v: unknown = BROKER_DEFAULTS;
  for (const k of key.split('.')) v = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[k] : undefined;
  return typeof v === 'string' || typeof v === 'number' ? ` (default ${v})` : '';
}

const KEY_FLAGS: Record<string, FlagSpec> = Object.fromEntries(
  BROKER_FLAGS.map((f) => {
    // `multiple` tells a framework that keeps every occurrence to do so for this flag.
    const spec = { type: 'string' as const, value: f.value, help: `${f.help}${defaultOf(f.key)}`, ...(f.list ? { multiple: true } : {}) };
    return [f.name, spec] as const;
  }),
);

const DETAILS = `Settings: the defaults shown above, then the --config file, then the flags. Mappings merge
key by key; a list flag (--listen, --admission.template, --admission.curator, --acl.*) replaces the file's list, so
several listeners, templates or ACL rules belong in the file. Every key of the file is also a
flag: its dotted path in kebab case (admission.maxSkewMs: --admission.max-skew-ms 60000).
Relative paths are relative to the working directory. Everything is checked before anything
starts; a bad key or value is ERR_CONFIG_INVALID naming the file or flag, the key path and what
was expected.

Config file (YAML or JSON; see examples/broker.yaml):

  listeners:
    - { type: tcp, host: 0.0.0.0, port: 1883 }
    - { type: ws,  host: 0.0.0.0, port: 8080, path: /mqtt }
    - { type: tls, host: 0.0.0.0, port: 8883, cert: server.pem, key: server.key, ca: ca.pem, requestCert: true }
  dataDir: /var/lib/qis-broker
  fsync: always                 # always | interval | never
  admission: { maxSkewMs: 300000, registry: open, ratePerSecond: 1000, burst: 10000 }  # rate per identity (anonymous: per address)
  acl:
    publish:
      - { allow: true, topic: "sensors/#", clients: [gw-1] }
      - { allow: false, topic: "#" }
  http: { host: 127.0.0.1, port: 9100 }   # /healthz and /metrics
  log: { level: info }

Examples:
  qis broker --config broker.yaml --check            validate and print the resolved options
  qis broker --config broker.yaml --fsync interval   run until Ctrl-C / SIGTERM, then close cleanly
  qis broker --listen tcp://127.0.0.1:0 --data-dir ./tmp-broker   (port 0: chosen by the OS)`;

/** `tcp://127.0.0.1:1883`, `ws://[::1]:8080/mqtt`. */
function formatAddress(a: { type: string; host: string; port: number; path?: string }): string {
  const host = a.host.includes(':') ? `[${a.host}]` : a.host;
  return `${a.type}://${host}:${a.port}${a.path ?? ''}`;
}

/** The key flags as argv again, for configFromFlags (which also names them in its errors). */
function keyArgv(flags: Flags): string[] {
  const argv: string[] = [];
  for (const f of BROKER_FLAGS) {
    const v: unknown = flags[f.name];
    for (const one of Array.isArray(v) ? (v as unknown[]) : [v]) if (typeof one === 'string') argv.push(`--${f.name}=${one}`);
  }
  return argv;
}

/**
 * createBroker, with a listen address that another process holds said as ERR_ADDRESS_IN_USE
 * (the usual failed start: a second broker, or the demo, on the port) instead of as a file error.
 */
export async function startBroker(options: BrokerOptions): Promise<Awaited<ReturnType<typeof import('../broker/server.js').createBroker>>> {
  // Loaded only here: --check and --help need neither Aedes nor the store.
  const { createBroker } = await import('../broker/server.js');
  try {
    return await createBroker(options);
  } catch (e) {
    for (let c: unknown = e; c instanceof Error; c = c.cause) {
      if ((c as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new QisError('ERR_ADDRESS_IN_USE', `${c.message}: another process listens there; stop it, or choose another port (port 0: any free port)`, { cause: e });
      }
    }
    throw e;
  }
}

/** Starts the broker, reports where it listens, and closes it on SIGINT/SIGTERM. */
async function serve(options: BrokerOptions, json: boolean, io: Io): Promise<{ signal: string }> {
  let onSignal: (s: NodeJS.Signals) => void = () => {};
  const stopped = new Promise<NodeJS.Signals>((resolve) => (onSignal = resolve));
  // Installed before the start, so a signal during the start still closes what was opened.
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const broker = await startBroker(options);
    try {
      const addresses = broker.addresses();
      if (json) io.stdout.write(JSON.stringify({ event: 'listening', id: options.id ?? null, addresses }) + '\n');
      else for (const a of addresses) io.stdout.write(`listening ${formatAddress(a)}\n`);
      const signal = await stopped;
      if (!json) io.stderr.write(`qis broker: ${signal}: closing\n`);
      // SIGTERM always ends the process: a close that has not finished within the grace period
      // (a client that never reads, a stuck disk) or a second signal exits at once, logged.
      const force = (why: string): void => {
        broker.logger.error({ graceMs: options.limits.shutdownGraceMs, why }, 'broker did not close in time; exiting');
        io.stderr.write(`qis broker: ${why}: exiting without a clean close\n`);
        process.exit(1);
      };
      const timer = setTimeout(() => force(`not closed within ${options.limits.shutdownGraceMs} ms`), options.limits.shutdownGraceMs);
      timer.unref();
      const again = (s: NodeJS.Signals): void => force(`second ${s}`);
      process.once('SIGINT', again);
      process.once('SIGTERM', again);
      try {
        await broker.close();
      } finally {
        clearTimeout(timer);
        process.off('SIGINT', again);
        process.off('SIGTERM', again);
      }
      return { signal };
    } catch (e) {
      await broker.close();
      throw e;
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export const brokerCommand: Command = {
  path: ['broker'],
  summary: 'run the regional broker (until Ctrl-C), or --check its config',
  flags: {
    config: { type: 'string', value: 'FILE', help: 'YAML or JSON config file (without it: the defaults and the flags)' },
    check: { type: 'boolean', help: 'validate, print the resolved options and exit without starting' },
    ...KEY_FLAGS,
  },
  details: DETAILS,
  async run(flags, io) {
    const overrides = configFromFlags(keyArgv(flags));
    const file = typeof flags.config === 'string' ? flags.config : undefined;
    const config = file === undefined ? {} : await loadBrokerConfig(file);
    const options = resolveBrokerOptions(config, overrides);
    if (flags.check === true) {
      const what = file === undefined ? 'the flags' : file;
      return { json: { ok: true, config: file ?? null, options }, human: `${what}: valid; the broker would start with:\n\n${stringify(options)}` };
    }
    const json = flags.json === true;
    const { signal } = await serve(options, json, io);
    if (json) io.stdout.write(JSON.stringify({ ok: true, event: 'closed', signal }) + '\n');
    else io.stderr.write('qis broker: closed\n');
    return { json: { ok: true, event: 'closed', signal }, human: '', quiet: true };
  },
};
