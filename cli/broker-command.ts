/** `qis broker`: runs the regional broker from a config file and/or flags, or checks them. */
import { stringify } from 'yaml';
import type { Logger } from 'pino';
import { QisError, isQisError } from '../src/index.js';
import { BROKER_FLAGS, configFromFlags, loadBrokerConfig, resolveBrokerOptions } from '../broker/config.js';
import { createLogger } from '../broker/log.js';
import { BROKER_DEFAULTS, type BrokerConfig, type BrokerOptions } from '../broker/options.js';
import type { QisBroker } from '../broker/server.js';
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

/** \`qis broker\`'s own defaults over BROKER_DEFAULTS: the HTTP endpoint is on (createBroker's is off). */
export const CLI_DEFAULTS: BrokerConfig = Object.freeze({ http: Object.freeze({ host: '127.0.0.1', port: 9100 }) });

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
  http: { host: 127.0.0.1, port: 9100 }   # /healthz, /metrics, console (the default; off: none)
  log: { level: info }

HTTP: on by default at 127.0.0.1:9100 (/healthz, /metrics, the console); --http HOST:PORT moves it,
--http off (http: off) turns it off. A port another process holds is ERR_ADDRESS_IN_USE.

Logs: JSON lines on stdout when it is not a terminal (a service, a pipe), readable lines on a
terminal; --json forces JSON. Connects, disconnects (with the reason) and refusals at info.

SIGHUP: reads the config file and the flags again and applies, without dropping a client, the
ACLs (acl.*), auth (the password file read again), admission.operators and log.level; it logs
what changed and what needs a restart. An invalid file is logged with its code (e.g.
ERR_CONFIG_INVALID, ERR_PASSWORD_FILE_INVALID) and the running config is kept.

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
export async function startBroker(options: BrokerOptions, logger?: Logger): Promise<QisBroker> {
  // Loaded only here: --check and --help need neither Aedes nor the store.
  const { createBroker } = await import('../broker/server.js');
  try {
    return await createBroker(options, logger ? { logger } : {});
  } catch (e) {
    if (isQisError(e) && e.code === 'ERR_ADDRESS_IN_USE') throw e;
    for (let c: unknown = e; c instanceof Error; c = c.cause) {
      if ((c as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new QisError('ERR_ADDRESS_IN_USE', `${c.message}: another process listens there; stop it, or choose another port (port 0: any free port)`, { cause: e });
      }
    }
    throw e;
  }
}

/**
 * How the running broker speaks on stdout: `json` (--json: JSON events and JSON logs), `piped`
 * (not a terminal: the logger's JSON lines only) or `tty` (readable lines).
 */
interface Output {
  readonly mode: 'json' | 'piped' | 'tty';
  readonly logger: Logger;
}

/**
 * Starts the broker, reports where it listens, reloads on SIGHUP (`reread` gives the new
 * options) and closes it on SIGINT/SIGTERM. Piped, stdout carries the logger's JSON lines only
 * (no plain `listening …` line among them); stderr stays empty unless the process fails.
 */
async function serve(options: BrokerOptions, out: Output, reread: () => Promise<BrokerOptions>, io: Io): Promise<{ signal: string }> {
  const { mode, logger } = out;
  let onSignal: (s: NodeJS.Signals) => void = () => {};
  const stopped = new Promise<NodeJS.Signals>((resolve) => (onSignal = resolve));
  let broker: QisBroker | undefined;
  // SIGHUP's default ends the process (exit 129): installed before the start, so a reload sent
  // early does not kill it either; one reload at a time, and one more if SIGHUP came meanwhile.
  let reloading: Promise<void> | undefined;
  let again = false;
  const onHup = (): void => {
    if (reloading) {
      again = true;
      return;
    }
    reloading = (async () => {
      do {
        again = false;
        if (broker) await reload(broker, reread, logger);
        else logger.warn('SIGHUP before the broker started: nothing reloaded');
      } while (again);
    })().finally(() => (reloading = undefined));
  };
  // Installed before the start, so a signal during the start still closes what was opened.
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.on('SIGHUP', onHup);
  try {
    broker = await startBroker(options, logger);
    const b = broker;
    try {
      const addresses = b.addresses();
      // Piped, the logger's 'broker listening' line (with the addresses) says it.
      if (mode === 'json') io.stdout.write(JSON.stringify({ event: 'listening', id: options.id ?? null, addresses }) + '\n');
      else if (mode === 'tty') for (const a of addresses) io.stdout.write(`listening ${formatAddress(a)}\n`);
      const signal = await stopped;
      logger.info({ signal }, 'closing');
      // SIGTERM always ends the process: a close that has not finished within the grace period
      // (a client that never reads, a stuck disk) or a second signal exits at once, logged.
      const force = (why: string): void => {
        logger.error({ graceMs: options.limits.shutdownGraceMs, why }, 'broker did not close in time; exiting without a clean close');
        process.exit(1);
      };
      const timer = setTimeout(() => force(`not closed within ${options.limits.shutdownGraceMs} ms`), options.limits.shutdownGraceMs);
      timer.unref();
      const second = (s: NodeJS.Signals): void => force(`second ${s}`);
      process.once('SIGINT', second);
      process.once('SIGTERM', second);
      try {
        await b.close();
      } finally {
        clearTimeout(timer);
        process.off('SIGINT', second);
        process.off('SIGTERM', second);
      }
      return { signal };
    } catch (e) {
      await b.close();
      throw e;
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onHup);
    await reloading;
  }
}

/** One SIGHUP: the new options applied, or the coded reason they were not (the running ones kept). */
async function reload(broker: QisBroker, reread: () => Promise<BrokerOptions>, logger: Logger): Promise<void> {
  try {
    const r = await broker.reload(reread());
    logger.info({ changed: r.changed, needRestart: r.needRestart }, r.changed.length ? `config reloaded: ${r.changed.join(', ')}` : 'config reloaded: nothing reloadable changed');
    if (r.needRestart.length) logger.warn({ needRestart: r.needRestart }, `changed in the config but applied only by a restart: ${r.needRestart.join(', ')}`);
  } catch (e) {
    const code = isQisError(e) ? e.code : 'ERR_INTERNAL';
    logger.error({ code, err: (e as Error).message }, 'config reload refused; the running config is kept');
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
    const resolve = async (): Promise<BrokerOptions> => resolveBrokerOptions(file === undefined ? {} : await loadBrokerConfig(file), overrides, CLI_DEFAULTS);
    const options = await resolve();
    if (flags.check === true) {
      const what = file === undefined ? 'the flags' : file;
      return { json: { ok: true, config: file ?? null, options }, human: `${what}: valid; the broker would start with:\n\n${stringify(options)}` };
    }
    // One format per stream: readable lines on a terminal, JSON lines otherwise (and with --json).
    const mode = flags.json === true ? 'json' : (io.stdout as { isTTY?: boolean }).isTTY === true ? 'tty' : 'piped';
    const logger = createLogger({ level: options.log.level, base: { broker: options.id ?? 'qis' }, stream: io.stdout, pretty: mode === 'tty' });
    const { signal } = await serve(options, { mode, logger }, resolve, io);
    if (flags.json === true) io.stdout.write(JSON.stringify({ ok: true, event: 'closed', signal }) + '\n');
    return { json: { ok: true, event: 'closed', signal }, human: '', quiet: true };
  },
};
