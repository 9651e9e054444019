/** `qis bridge modbus|sparkplug`: runs the firmware bridge from a config file, or --check it. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { address, cohortFilter, isQisError, loadKeyFile, outcomeTopic, type ErrorCode, type NodeId } from '../src/index.js';
import type { BridgeEvent, ModbusBridgeConfig, ModbusMachine, SparkplugBridgeConfig } from '../firmware-bridge/index.js';
import type { Command, CommandResult, Io } from './run.js';

const MAPPING = `Mapping (the same for both bridges), per machine:
  situation: { FIELD: CONSTANT | { reading: NAME } }    every field of the template
  context:   { KEY: NUMBER | { reading: NAME } }        keys of the template's context
  outcomes:                                            each rule publishes one packet when it fires
    - when: { change: NAME, from: 0 }                  a reading changes (from / to optional)
      outcome: failure                                 a label, a number, or { reading: NAME }
      conf: 0.9                                        optional; also n, and template: FILE
    - when: { threshold: NAME, above: 90 }             crossing upwards (or below: N, downwards);
                                                       hysteresis: N re-arms only once back by N,
                                                       debounce: 2s fires only if it stays past
    - when: { every: 10m }                             periodic (ms, s, m, h)
Packets are built only from current readings (not stale: device down; not bad: exception),
with ts = when they were read; a rule that cannot publish is reported once per reason. A
reading's first value ever is a baseline and fires nothing; last values and threshold states
are kept in <dataDir>/<machine>/bridge-triggers.json, so a change during a restart fires.
Paths (templates, dataDir, passwordFile, ca, cert, key) are relative to the config file. Every
machine is its own node: its key, outbox and seq state live in <dataDir>/<machine>/.
TLS: broker (and sparkplug) take ca, cert, key (PEM files) and rejectUnauthorized with mqtts://.
http: { host: 127.0.0.1, port: 9101 } serves /healthz and /metrics (off unless given).
A published line says acked=true once the qis broker acknowledged (waits up to 5 s); acked=false
means queued in the outbox, and a later acknowledged line says when it drained.`;

const MODBUS_DETAILS = `Config (YAML or JSON; see examples/modbus-bridge.yaml):

  broker: mqtt://127.0.0.1:1883          # the qis broker (or { url, username, passwordFile })
  dataDir: ./bridge-data
  reconnect: { baseMs: 500, capMs: 30000 }   # per-device backoff (full jitter)
  machines:
    - name: press-7
      template: press-bearing.yaml
      device: { host: 192.0.2.10, port: 502, unitId: 1, pollMs: 1000, timeoutMs: 1000 }
      readings:
        fault_code: { table: holding, address: 0, type: uint16 }
        run_hours:  { table: input, address: 0, type: uint32, wordOrder: big, scale: 0.1 }
        load_kn:    { table: holding, address: 2, type: float32 }
        sealed:     { table: coil, address: 0 }
      situation: { machine_model: KX-200, bearing_type: roller, load_kn: { reading: load_kn }, sealed: { reading: sealed } }
      context: { run_hours: { reading: run_hours } }
      outcomes:
        - { when: { change: fault_code, from: 0 }, outcome: failure }

Tables: holding, input (types int16, uint16, int32, uint32, int64, uint64, float32, float64,
string with length; byteOrder ABCD, DCBA, BADC or CDAB; bit 0-15 for one bit of a register;
value = raw × scale + offset), coil, discrete (true/false). address is the 0-based protocol
address, or register notation as a string ("40001" = holding 0, "30001" = input 0).
Neighbouring readings are read in blocks (device.maxGap, default 10; device.maxBlock, default
100). Machines at one host and port share one connection. Each machine has its own poll loop:
a dead or slow device never stalls another endpoint; it is reported (device-down, with the
code) and reconnected with backoff. Exception responses are reported
with the device, reading and exception code, and leave only that reading out.

${MAPPING}

--check validates the config, reads every device once and prints the readings and the packet
each rule would publish from them, without publishing (exit 1 if a device could not be read).`;

const SPARKPLUG_DETAILS = `Config (YAML or JSON):

  broker: mqtt://127.0.0.1:1883            # the qis broker
  dataDir: ./bridge-data
  sparkplug: { url: mqtt://factory:1883, group: plant1, rebirthIntervalMs: 5000, hostId: qis }   # hostId: publish Sparkplug 3.0 primary host STATE
  machines:
    - name: press-7
      template: press-bearing.yaml
      source: { edgeNode: line-1, device: press-7 }   # device: omit for node metrics
      readings:
        fault_code: Faults/Code                       # a metric name from the birth
        run_hours: { metric: Counters/RunMinutes, scale: 0.016667 }
      situation: …  context: …  outcomes: …           # as for modbus

Subscribes to spBv1.0/<group>/#, keeps NBIRTH/DBIRTH names and alias tables and checks seq
(0-255, wrapping). On a seq gap, an unknown alias, or data from a node whose birth it has not
seen, it publishes NCMD Node Control/Rebirth=true (at most once per rebirthIntervalMs per node)
and ignores that node's data until the NBIRTH. Historical metrics never change live values.

${MAPPING}

--check validates the config and prints each machine's mapping, without connecting.`;

function line(e: BridgeEvent): string {
  const { type, ...rest } = e;
  const kv = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${new Date().toISOString()} ${type} ${kv}\n`;
}

/** Runs a bridge until SIGINT/SIGTERM, printing its events. */
async function serve(start: (onEvent: (e: BridgeEvent) => void) => Promise<{ close(): Promise<void> }>, json: boolean, io: Io): Promise<CommandResult> {
  let onSignal: (s: NodeJS.Signals) => void = () => {};
  const stopped = new Promise<NodeJS.Signals>((resolve) => (onSignal = resolve));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const bridge = await start((e) => io.stdout.write(json ? JSON.stringify(e) + '\n' : line(e)));
    let signal: NodeJS.Signals;
    try {
      signal = await stopped;
      if (!json) io.stderr.write(`qis bridge: ${signal}: closing\n`);
    } finally {
      await bridge.close();
    }
    if (json) io.stdout.write(JSON.stringify({ ok: true, event: 'closed', signal }) + '\n');
    else io.stderr.write('qis bridge: closed\n');
    return { json: { ok: true, event: 'closed', signal }, human: '', quiet: true };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function nodeIdOf(dataDir: string, machine: string): Promise<NodeId | undefined> {
  const f = join(dataDir, machine, 'key.json');
  return existsSync(f) ? loadKeyFile(f).then((k) => k.nodeId) : Promise.resolve(undefined);
}

interface CheckedMachine {
  machine: string;
  device: string;
  ok: boolean;
  error?: { code: ErrorCode; message: string };
  exceptions: { reading: string; exception: number; message: string }[];
  readings: Record<string, unknown>;
  packets: Record<string, unknown>[];
}

/** Reads one device once and builds each rule's packet from the readings. */
async function checkMachine(config: ModbusBridgeConfig, m: ModbusMachine): Promise<CheckedMachine> {
  const { openTransport, endpointKey, MachineMapper, readMachine, isSkip } = await import('../firmware-bridge/index.js');
  const device = `${endpointKey(m)}/${m.device.unitId}`;
  const out: CheckedMachine = { machine: m.name, device, ok: true, exceptions: [], readings: {}, packets: [] };
  const mapper = new MachineMapper(m);
  let client;
  try {
    client = await openTransport(m, m.device.timeoutMs, device);
    const values = await readMachine(client, m, (reading, e) => out.exceptions.push({ reading, exception: e.exception, message: e.message }));
    mapper.update(values, Date.now());
    out.readings = Object.fromEntries(values);
  } catch (e) {
    out.ok = false;
    out.error = { code: isQisError(e) ? e.code : 'ERR_INTERNAL', message: (e as Error).message };
    return out;
  } finally {
    client?.close();
  }
  const nodeId = await nodeIdOf(config.dataDir, m.name);
  for (const rule of m.rules) {
    const e = mapper.build(rule);
    if (isSkip(e)) {
      out.packets.push({ rule: rule.key, skipped: e.reason });
      continue;
    }
    try {
      const addr = address(e.template, e.situation);
      out.packets.push({
        rule: rule.key,
        when: rule.when,
        template: `${e.template.doc.name} v${e.template.doc.version}`,
        topic: nodeId ? outcomeTopic(addr, nodeId) : `${cohortFilter(addr).slice(0, -1)}<node id: created on first run>`,
        situation: e.situation,
        outcome: e.outcome,
        ...(e.ctx ? { ctx: e.ctx } : {}),
        ...(e.conf === undefined ? {} : { conf: e.conf }),
        ...(e.n === undefined ? {} : { n: e.n }),
      });
    } catch (err) {
      out.packets.push({ rule: rule.key, error: { code: isQisError(err) ? err.code : 'ERR_INTERNAL', message: (err as Error).message } });
    }
  }
  return out;
}

function renderCheck(file: string, machines: CheckedMachine[]): string {
  const out = [`${file}: valid config; ${machines.length} machine(s); nothing was published`, ''];
  for (const m of machines) {
    out.push(`machine ${m.machine}  device ${m.device}: ${m.ok ? 'read' : `NOT READ: ${m.error!.code}: ${m.error!.message}`}`);
    for (const [k, v] of Object.entries(m.readings)) out.push(`  reading ${k.padEnd(16)} ${JSON.stringify(v)}`);
    for (const x of m.exceptions) out.push(`  reading ${x.reading.padEnd(16)} exception ${x.exception}: ${x.message}`);
    for (const p of m.packets) {
      if ('skipped' in p) out.push(`  ${String(p['rule'])}: would publish nothing yet (${String(p['skipped'])})`);
      else if ('error' in p) out.push(`  ${String(p['rule'])}: ${JSON.stringify(p['error'])}`);
      else out.push(`  ${String(p['rule'])} (${JSON.stringify(p['when'])}) would publish:`, `    topic     ${String(p['topic'])}`, `    situation ${JSON.stringify(p['situation'])}`, `    outcome   ${JSON.stringify(p['outcome'])}${p['ctx'] ? `  ctx ${JSON.stringify(p['ctx'])}` : ''}${p['conf'] !== undefined ? `  conf ${String(p['conf'])}` : ''}`);
    }
    out.push('');
  }
  return out.join('\n');
}

function describeSparkplug(c: SparkplugBridgeConfig): Record<string, unknown> {
  return {
    ok: true,
    config: c.file,
    broker: c.broker.url,
    dataDir: c.dataDir,
    sparkplug: { url: c.sparkplug.url, group: c.sparkplug.group, filter: `spBv1.0/${c.sparkplug.group}/#`, rebirthIntervalMs: c.sparkplug.rebirthIntervalMs },
    machines: c.machines.map((m) => ({
      name: m.name,
      source: { edgeNode: m.edgeNode, ...(m.device === undefined ? {} : { device: m.device }) },
      template: `${m.template.doc.name} v${m.template.doc.version} (${m.template.tplId})`,
      readings: Object.fromEntries(m.readings),
      rules: m.rules.map((r) => ({ rule: r.key, when: r.when, outcome: r.outcome, template: r.template.tplId })),
    })),
  };
}

const FLAGS = {
  config: { type: 'string', value: 'FILE', help: 'the bridge config (YAML or JSON)', required: true },
  check: { type: 'boolean', help: 'validate the config (modbus: also read each device once) and print what would be published; publish nothing' },
} as const;

export const bridgeModbusCommand: Command = {
  path: ['bridge', 'modbus'],
  summary: 'poll Modbus TCP devices and publish their outcomes, one node per machine (until Ctrl-C)',
  flags: FLAGS,
  details: MODBUS_DETAILS,
  async run(flags, io) {
    const { loadModbusConfig, startModbusBridge } = await import('../firmware-bridge/index.js');
    const config = await loadModbusConfig(flags.config as string);
    if (flags.check === true) {
      const machines = await Promise.all(config.machines.map((m) => checkMachine(config, m)));
      const ok = machines.every((m) => m.ok);
      return { json: { ok, config: config.file, broker: config.broker.url, dataDir: config.dataDir, machines }, human: renderCheck(config.file, machines), status: ok ? 0 : 1 };
    }
    return serve((onEvent) => startModbusBridge(config, { onEvent }), flags.json === true, io);
  },
};

export const bridgeSparkplugCommand: Command = {
  path: ['bridge', 'sparkplug'],
  summary: 'map Sparkplug B metrics from a factory broker to outcomes, one node per machine (until Ctrl-C)',
  flags: FLAGS,
  details: SPARKPLUG_DETAILS,
  async run(flags, io) {
    const { loadSparkplugConfig, startSparkplugBridge } = await import('../firmware-bridge/index.js');
    const config = await loadSparkplugConfig(flags.config as string);
    if (flags.check === true) {
      const d = describeSparkplug(config);
      return { json: d, human: `${config.file}: valid config; nothing was published\n\n${JSON.stringify(d, null, 2)}` };
    }
    return serve((onEvent) => startSparkplugBridge(config, { onEvent }), flags.json === true, io);
  },
};

export const bridgeCommands: readonly Command[] = [bridgeModbusCommand, bridgeSparkplugCommand];
