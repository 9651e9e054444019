#!/usr/bin/env node
/** `qis`: the qis-mqtt command line. Dispatches `qis <command> [<subcommand>] [flags]`. */
import { packageVersion as version } from '../broker/build-info.js';
import { EXIT_OK, EXIT_USAGE, runCommand, reportError, stdoutGone, usage, type Command, type Io } from './run.js';

/**
 * Command modules, loaded only when used: `qis publish` on a gateway should not pay for loading
 * the broker. The first word of a command names its module; `qis --help` loads them all.
 */
const MODULES: Readonly<Record<string, () => Promise<readonly Command[]>>> = {
  core: async () => (await import('./core-commands.js')).coreCommands,
  node: async () => (await import('./node-commands.js')).nodeCommands,
  outbox: async () => (await import('./outbox-commands.js')).outboxCommands,
  broker: async () => [(await import('./broker-command.js')).brokerCommand, ...(await import('./enrol-commands.js')).brokerPasswdCommands],
  enrol: async () => (await import('./enrol-commands.js')).enrolCommands,
  demo: async () => [(await import('./demo.js')).demoCommand],
  bridge: async () => (await import('./bridge-command.js')).bridgeCommands,
  template: async () => (await import('./template-commands.js')).templateCommands,
  darwin: async () => (await import('./darwin-commands.js')).darwinCommands,
};
const MODULE_OF: Readonly<Record<string, keyof typeof MODULES>> = {
  keygen: 'core',
  address: 'core',
  packet: 'core',
  decode: 'core',
  publish: 'node',
  flush: 'outbox',
  status: 'outbox',
  withdraw: 'outbox',
  query: 'node',
  watch: 'node',
  broker: 'broker',
  demo: 'demo',
  bridge: 'bridge',
  template: 'template',
  report: 'darwin',
  templates: 'darwin',
  operator: 'enrol',
  enrol: 'enrol',
  revoke: 'enrol',
};

/** The commands of `first`'s module; all of them for an unknown word (so a command missing from MODULE_OF still works). */
async function load(first?: string): Promise<readonly Command[]> {
  const mod = first === undefined ? undefined : MODULE_OF[first];
  const names = mod ? [mod] : (Object.keys(MODULES) as (keyof typeof MODULES)[]);
  return (await Promise.all(names.map((n) => MODULES[n]!()))).flat();
}


function overview(commands: readonly Command[]): string {
  const rows = commands.map((c) => `  ${c.path.join(' ').padEnd(16)} ${c.summary}`);
  return [
    'qis: share what happened to machines as signed outcome packets over MQTT',
    '',
    'Usage: qis <command> [flags]      qis <command> --help      qis --version',
    '',
    'Commands:',
    ...rows,
    '',
    'Every command takes --json (machine-readable output; errors as {"ok":false,"code":"ERR_…"}).',
    'Exit status: 0 success, 1 refused or failed (with an error code), 2 usage error.',
    '',
  ].join('\n');
}

/** Finds the command whose path is the longest prefix of argv. */
function find(commands: readonly Command[], argv: string[]): { cmd: Command; rest: string[] } | undefined {
  let best: { cmd: Command; rest: string[] } | undefined;
  for (const cmd of commands) {
    if (cmd.path.every((w, i) => argv[i] === w) && (!best || cmd.path.length > best.cmd.path.length)) {
      best = { cmd, rest: argv.slice(cmd.path.length) };
    }
  }
  return best;
}

export async function main(argv: string[], io: Io): Promise<number> {
  const first = argv[0];
  if (first === undefined) {
    io.stderr.write(overview(await load()));
    return EXIT_USAGE;
  }
  if (first === '--help' || first === '-h' || first === 'help') {
    io.stdout.write(overview(await load()));
    return EXIT_OK;
  }
  if (first === '--version' || first === '-v') {
    io.stdout.write(`${version()}\n`);
    return EXIT_OK;
  }
  const commands = await load(first);
  const found = find(commands, argv);
  const group = commands.filter((c) => c.path[0] === first && c.path.length > 1);
  if (!found && group.length > 0 && (argv[1] === undefined || argv[1] === '--help' || argv[1] === '-h')) {
    // `qis packet` or `qis packet --help`: the group's subcommands.
    const text = [`qis ${first}: ${group.map((c) => c.path[1]).join(', ')}`, '', ...group.map((c) => `  ${c.path.join(' ').padEnd(16)} ${c.summary}`), '', `See: qis ${first} <subcommand> --help`, ''].join('\n');
    if (argv[1] === undefined) {
      io.stderr.write(text);
      return EXIT_USAGE;
    }
    io.stdout.write(text);
    return EXIT_OK;
  }
  if (!found) {
    const hint = group.length > 0 ? `; "${first}" takes: ${group.map((c) => c.path.slice(1).join(' ')).join(', ')}` : '';
    return reportError(usage(`unknown command "${argv.slice(0, 2).join(' ')}"${hint} (see: qis --help)`), argv.includes('--json'), io);
  }
  return runCommand(found.cmd, found.rest, io);
}

// A reader that stops early (`qis watch | head -1`) closes the pipe: the next write fails with
// EPIPE. That is the reader's choice, not a failure: stop quietly instead of dying with a stack.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE' && !stdoutGone.signal.aborted) throw e;
  if (!stdoutGone.signal.aborted) stdoutGone.abort();
});
const io: Io = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
main(process.argv.slice(2), io).then(
  (status) => {
    process.exitCode = status;
  },
  (e: unknown) => {
    process.exitCode = reportError(e, process.argv.includes('--json'), io);
  },
);
