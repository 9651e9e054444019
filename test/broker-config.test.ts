import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { QisError, fromHex, isQisError, operatorIdOf, type ErrorCode } from '../src/index.js';

/** An operator's public key (any 32 bytes name an operator id). */
const OP_HEX = '11'.repeat(32);
import { BROKER_FLAGS, configFromFlags, loadBrokerConfig, parseBrokerConfig, resolveBrokerOptions } from '../broker/config.js';
import { BROKER_DEFAULTS, type BrokerConfig, type BrokerOptions } from '../broker/options.js';
import { brokerCommand } from '../cli/broker-command.js';
import { QIS, ROOT, qis } from './helpers/cli.js';
import { bearing } from './helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-broker-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const CERT = join(dir, 'server.pem');
const KEY = join(dir, 'server.key');
const CA = join(dir, 'ca.pem');
for (const f of [CERT, KEY, CA]) writeFileSync(f, '-----BEGIN PLACEHOLDER-----\n');
const TPL = bearing.tplId;

/** The QisError `fn` throws (fails the test when it throws something else or nothing). */
function refusal(fn: () => unknown): QisError {
  try {
    fn();
  } catch (e) {
    if (isQisError(e)) return e;
    throw e;
  }
  throw new Error('expected a QisError, nothing was thrown');
}

/** Parses `yaml` as `bad.yaml`, resolves it, and expects `code` with a message matching `re`. */
function refuses(t: Test, yaml: string, re: RegExp, code: ErrorCode = 'ERR_CONFIG_INVALID'): void {
  const e = refusal(() => resolveBrokerOptions(parseBrokerConfig(yaml, 'bad.yaml')));
  t.equal(e.code, code, `${JSON.stringify(yaml)}: ${e.message}`);
  t.match(e.message, re, yaml);
}

t.test('broker config - an empty file and no flags give exactly the defaults', async (t) => {
  t.same(resolveBrokerOptions(parseBrokerConfig('', 'empty.yaml')), BROKER_DEFAULTS);
  t.same(resolveBrokerOptions(parseBrokerConfig('# only comments\n', 'c.yaml')), BROKER_DEFAULTS);
  t.same(resolveBrokerOptions({}), BROKER_DEFAULTS);
  t.ok(Object.isFrozen(resolveBrokerOptions({}).admission), 'frozen');
});

t.test('broker config - nested sections merge key by key over the defaults; lists replace', async (t) => {
  const o = resolveBrokerOptions(
    parseBrokerConfig(
      [
        'listeners: [{type: ws, host: 0.0.0.0, port: 8080, path: /mqtt}]',
        'admission: {maxSkewMs: 1000}',
        'acl: {publish: [{allow: false, topic: "secret/#", clients: [a, b]}, {allow: true, topic: "home/%u/#", users: [alice]}]}',
        'http: {host: 127.0.0.1, port: 9100}',
        'verifyWorkers: 0',
        'verifyNice: 19',
        'verifyInline: 0',
        'id: eu-1',
        'cluster: rediss://redis.example:6380',
      ].join('\n'),
      'x.yaml',
    ),
  );
  t.same(o.listeners, [{ type: 'ws', host: '0.0.0.0', port: 8080, path: '/mqtt' }]);
  t.same(o.admission, { ...BROKER_DEFAULTS.admission, maxSkewMs: 1000 });
  t.same(o.acl, { publish: [{ allow: false, topic: 'secret/#', clients: ['a', 'b'] }, { allow: true, topic: 'home/%u/#', users: ['alice'] }], subscribe: [], refusedPublish: 'drop' });
  t.same(o.http, { host: '127.0.0.1', port: 9100 });
  t.equal(o.verifyWorkers, 0);
  t.equal(o.verifyNice, 19);
  t.equal(o.verifyInline, 0);
  t.equal(o.id, 'eu-1');
  t.equal(o.cluster, 'rediss://redis.example:6380');
  t.equal(o.fsync, BROKER_DEFAULTS.fsync);
  t.equal(o.log.level, 'info');
  t.notOk('http' in resolveBrokerOptions({}), 'http stays off unless configured');
});

t.test('broker config - JSON is YAML', async (t) => {
  const o = resolveBrokerOptions(parseBrokerConfig('{"fsync": "interval", "fsyncIntervalMs": 50, "log": {"level": "debug"}}', 'x.json'));
  t.equal(o.fsync, 'interval');
  t.equal(o.fsyncIntervalMs, 50);
  t.equal(o.log.level, 'debug');
});

t.test('broker config - each bad value is ERR_CONFIG_INVALID naming the file, the key path and what was expected', async (t) => {
  const L = (s: string): string => `listeners: [{type: tcp, host: h, port: 1}, ${s}]`;
  const cases: [string, RegExp][] = [
    ['fsync: sometimes', /^bad\.yaml: fsync: expected one of always, interval, never, got "sometimes"$/],
    [L('{type: tcp, host: h, port: 88x}'), /^bad\.yaml: listeners\[1\]\.port: expected an integer port 0\.\.65535.*got "88x"$/],
    [L('{type: tcp, host: h, port: 65536}'), /listeners\[1\]\.port: expected an integer port 0\.\.65535.*got 65536/],
    [L('{type: tcp, host: h, port: 1.5}'), /listeners\[1\]\.port: .*got 1\.5/],
    [L('{type: udp, host: h, port: 1}'), /listeners\[1\]\.type: expected one of tcp, tls, ws, got "udp"/],
    [L('{host: h, port: 1}'), /listeners\[1\]\.type: expected one of tcp, tls, ws, got nothing/],
    [L('{type: tcp, host: "", port: 1}'), /listeners\[1\]\.host: expected a host name or address, got ""/],
    [L('{type: tcp, port: 2}'), /listeners\[1\]\.host: expected a host name or address, got nothing/],
    [L('{type: tcp, host: h, port: 1}'), /listeners\[1\]: expected a host:port not already taken by listeners\[0\], got "h:1"/],
    [L('{type: tcp, host: h, port: 2, path: /x}'), /listeners\[1\]\.path: unknown key for a tcp listener \(expected one of: type, host, port\)/],
    [L('{type: ws, host: h, port: 2}'), /listeners\[1\]\.path: expected a URL path starting with '\/'.*got nothing/],
    [L('{type: ws, host: h, port: 2, path: mqtt}'), /listeners\[1\]\.path: expected a URL path starting with '\/'.*got "mqtt"/],
    [L('{type: tls, host: h, port: 2, key: k}'), /listeners\[1\]\.cert: expected a PEM certificate file path, got nothing/],
    [L('{type: tls, host: h, port: 2, cert: c}'), /listeners\[1\]\.key: expected a PEM private key file path, got nothing/],
    [L(`{type: tls, host: h, port: 2, cert: ${CERT}, key: ${KEY}, requestCert: yes}`), /listeners\[1\]\.requestCert: expected true or false, got "yes"/],
    [L(`{type: tls, host: h, port: 2, cert: ${CERT}, key: ${KEY}, requestCert: true}`), /listeners\[1\]\.ca: expected a CA file when requestCert is true/],
    [L(`{type: tls, host: h, port: 2, cert: ${join(dir, 'missing.pem')}, key: ${KEY}}`), /listeners\[1\]\.cert: expected a readable PEM file \(ENOENT\), got ".*missing\.pem"/],
    [L(`{type: tls, host: h, port: 2, cert: ${CERT}, key: ${KEY}, ca: ${join(dir, 'no-ca.pem')}}`), /listeners\[1\]\.ca: expected a readable PEM file/],
    ['listeners: []', /^bad\.yaml: listeners: expected at least one listener, got a list$/],
    ['listeners: {type: tcp}', /listeners: expected a list of listeners, got a mapping/],
    ['listeners: [tcp]', /listeners\[0\]: expected a listener mapping/],
    ['dataDir: ""', /dataDir: expected a directory path \(non-empty string\), got ""/],
    ['dataDir: 5', /dataDir: expected a directory path .*got 5/],
    ['fsyncIntervalMs: 0', /fsyncIntervalMs: expected a positive integer \(milliseconds\), got 0/],
    ['fsyncIntervalMs: "100"', /fsyncIntervalMs: expected a positive integer .*got "100"/],
    ['admission: {maxSkewMs: -1}', /^bad\.yaml: admission\.maxSkewMs: expected an integer >= 0 \(milliseconds\), got -1$/],
    ['admission: {maxSkewMs: 300_000}', /admission\.maxSkewMs: .*got "300_000"/],
    ['admission: {registry: shut}', /admission\.registry: expected one of open, closed, got "shut"/],
    [`admission: {templates: [${TPL}, ${TPL.toUpperCase()}]}`, /admission\.templates\[1\]: expected a template id \(26 lowercase base32 characters\)/],
    ['admission: {templates: abc}', /admission\.templates: expected a list of template ids, got "abc"/],
    ['admission: {ratePerSecond: -0.5}', /admission\.ratePerSecond: expected a number >= 0.*got -0\.5/],
    ['admission: {burst: 0}', /admission\.burst: expected an integer >= 1, got 0/],
    ['admission: {enrolment: maybe}', /admission\.enrolment: expected one of off, required/],
    ['admission: {operators: [nobody]}', /admission\.operators\[0\]: expected an operator: its id/],
    ['admission: {maxSkew: 5}', /admission\.maxSkew: unknown key \(expected one of: maxSkewMs, registry, templates, curators, ratePerSecond, burst, enrolment, operators\)/],
    ['acl: {publish: [{allow: true, topic: "a/#/b"}]}', /acl\.publish\[0\]\.topic: expected an MQTT topic filter.*'#' must be the whole last level.*got "a\/#\/b"/],
    ['acl: {publish: [{allow: true, topic: "a/b#"}]}', /acl\.publish\[0\]\.topic: .*'#' must be the whole last level/],
    ['acl: {subscribe: [{allow: true, topic: "a/x+/c"}]}', /acl\.subscribe\[0\]\.topic: .*'\+' must be a whole level/],
    ['acl: {subscribe: [{allow: true, topic: ""}]}', /acl\.subscribe\[0\]\.topic: .*it is empty/],
    ['acl: {publish: [{allow: yes, topic: "a"}]}', /acl\.publish\[0\]\.allow: expected true or false, got "yes"/],
    ['acl: {publish: [{topic: "a"}]}', /acl\.publish\[0\]\.allow: expected true or false, got nothing/],
    ['acl: {publish: [{allow: true, topic: "a", clients: gw}]}', /acl\.publish\[0\]\.clients: expected a list of client ids, got "gw"/],
    ['acl: {publish: [{allow: true, topic: "a", clients: [""]}]}', /acl\.publish\[0\]\.clients\[0\]: expected a client id/],
    ['acl: {publish: [{allow: true, topic: "a", users: [""]}]}', /acl\.publish\[0\]\.users\[0\]: expected a user name/],
    ['auth: {allowAnonymous: maybe}', /auth\.allowAnonymous: expected true or false/],
    ['auth: {clientIds: ["a*b"]}', /auth\.clientIds\[0\]: expected a client id pattern/],
    ['auth: {loginSkewMs: -1}', /auth\.loginSkewMs: expected an integer >= 0/],
    ['acl: {publish: [{allow: true, topic: "a", client: [x]}]}', /acl\.publish\[0\]\.client: unknown key \(expected one of: allow, topic, clients, users\)/],
    ['acl: {retain: []}', /acl\.retain: unknown key \(expected one of: publish, subscribe, refusedPublish\)/],
    ['http: {host: h}', /^bad\.yaml: http\.port: expected an integer port 0\.\.65535.*got nothing$/],
    ['http: {port: 9100}', /http\.host: expected a host name or address, got nothing/],
    ['http: {host: h, port: -1}', /http\.port: .*got -1/],
    ['http: {host: h, port: 1, path: /m}', /http\.path: unknown key \(expected one of: host, port\)/],
    ['log: {level: loud}', /log\.level: expected one of fatal, error, warn, info, debug, trace, silent, got "loud"/],
    ['log: debug', /log: expected a mapping, got "debug"/],
    ['cluster: http://redis:6379', /cluster: expected a redis:\/\/ or rediss:\/\/ URL with a host, got "http:\/\/redis:6379"/],
    ['cluster: "redis://"', /cluster: expected a redis:\/\/ or rediss:\/\/ URL with a host/],
    ['verifyWorkers: 65', /verifyWorkers: expected an integer 0\.\.64.*got 65/],
    ['verifyWorkers: -1', /verifyWorkers: .*got -1/],
    ['verifyNice: 20', /verifyNice: expected an integer 0\.\.19 \(the niceness of the verify threads\), got 20/],
    ['verifyNice: -5', /verifyNice: .*got -5/],
    ['verifyInline: 1.5', /verifyInline: expected an integer 0\.\.100000 \(verifications a second on the main thread while the verify threads are idle; 0: never\), got 1\.5/],
    ['verifyInline: 100001', /verifyInline: .*got 100001/],
    ['verifyInline: fast', /verifyInline: .*got "fast"/],
    ['sweepIntervalMs: 0', /sweepIntervalMs: expected a positive integer \(milliseconds\), got 0/],
    ['id: ""', /^bad\.yaml: id: expected a broker id \(non-empty string\), got ""$/],
    ['datadir: x', /^bad\.yaml: datadir: unknown key \(expected one of: listeners, dataDir, fsync, fsyncIntervalMs, admission, acl, limits, http, log, cluster, verifyWorkers, verifyNice, verifyInline, sweepIntervalMs, id, federation, auth\)$/],
    ['fsync: null', /fsync: expected one of always, interval, never, got null/],
    ['- a\n- b', /^bad\.yaml: expected a mapping of broker options.*got a list$/],
    ['just text', /^bad\.yaml: expected a mapping of broker options.*got "just text"$/],
  ];
  for (const [yaml, re] of cases) refuses(t, yaml, re);
});

t.test('broker config - a good TLS listener resolves, its files checked', async (t) => {
  const o = resolveBrokerOptions(parseBrokerConfig(`listeners: [{type: tls, host: 0.0.0.0, port: 8883, cert: ${CERT}, key: ${KEY}, ca: ${CA}, requestCert: true}]`, 'x.yaml'));
  t.same(o.listeners, [{ type: 'tls', host: '0.0.0.0', port: 8883, cert: CERT, key: KEY, ca: CA, requestCert: true }]);
  t.same(resolveBrokerOptions({ listeners: [{ type: 'tcp', host: 'h', port: 0 }, { type: 'tcp', host: 'h', port: 0 }] }).listeners.length, 2, 'port 0 twice is fine');
});

t.test('broker config - YAML errors and duplicate keys are ERR_CONFIG_INVALID naming the file and line', async (t) => {
  refuses(t, 'fsync: always\ndataDir: /a\nfsync: never\n', /^bad\.yaml:3:1: duplicate key fsync/);
  refuses(t, 'admission:\n  burst: 1\n  burst: 2\n', /^bad\.yaml:3:3: duplicate key burst/);
  refuses(t, '{"fsync": "always", "fsync": "never"}', /^bad\.yaml:1:\d+: duplicate key "fsync"/);
  refuses(t, 'listeners: [\n', /^bad\.yaml:\d+:\d+: /);
  refuses(t, 'fsync: always\n---\nfsync: never\n', /^bad\.yaml:2:1: .*multiple documents/);
  refuses(t, 'a: *nowhere\n', /^bad\.yaml: .*alias/i);
});

t.test('broker config - a config built in code is checked too, named "config" and "overrides"', async (t) => {
  const e = refusal(() => resolveBrokerOptions({ fsync: 'sometimes' } as unknown as BrokerConfig));
  t.equal(e.code, 'ERR_CONFIG_INVALID');
  t.match(e.message, /^config: fsync: expected one of always, interval, never/);
  const o = refusal(() => resolveBrokerOptions({}, { admission: { burst: 0 } }));
  t.match(o.message, /^overrides: admission\.burst: expected an integer >= 1, got 0/);
});

t.test('broker config - loadBrokerConfig reads a file; a missing one is ERR_FILE_IO', async (t) => {
  const f = join(dir, 'load.yaml');
  writeFileSync(f, 'fsync: never\nadmission:\n  maxSkewMs: x\n');
  await t.rejects(loadBrokerConfig(f), { code: 'ERR_CONFIG_INVALID', message: new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: admission\\.maxSkewMs: .*got "x"$`) });
  writeFileSync(f, 'fsync: never\n');
  t.equal(resolveBrokerOptions(await loadBrokerConfig(f)).fsync, 'never');
  await t.rejects(loadBrokerConfig(join(dir, 'none.yaml')), { code: 'ERR_FILE_IO' });
});

t.test('broker config - every key flag maps to its key and overrides the file', async (t) => {
  const file = parseBrokerConfig(
    ['dataDir: /from/file', 'fsync: always', 'admission: {maxSkewMs: 1, burst: 7}', 'log: {level: warn}', 'http: {host: 10.0.0.1, port: 9100}'].join('\n'),
    'f.yaml',
  );
  const flags = configFromFlags([
    '--data-dir', '/from/flag',
    '--fsync=interval',
    '--fsync-interval-ms', '250',
    '--admission.max-skew-ms', '60000',
    '--admission.registry', 'closed',
    '--admission.template', TPL,
    '--admission.curator', TPL,
    '--admission.rate-per-second', '2.5',
    '--admission.burst', '20',
    '--admission.enrolment', 'required',
    '--admission.operator', OP_HEX,
    '--acl.publish', 'allow:plant/+/telemetry',
    '--acl.publish', 'deny:#',
    '--acl.subscribe', 'allow:plant/#',
    '--http', '127.0.0.1:0',
    '--log-level', 'debug',
    '--cluster', 'redis://127.0.0.1:6379',
    '--verify-workers', '2',
    '--verify-nice', '10',
    '--verify-inline', '500',
    '--sweep-interval-ms', '1000',
    '--id', 'eu-west-1',
    '--auth.allow-anonymous', 'false',
    '--auth.password-file', '/etc/qis/passwd',
    '--auth.node-login', 'true',
    '--auth.login-skew-ms', '60000',
    '--auth.client-id', '%u',
    '--auth.client-id', 'gw-%u-*',
    '--acl.refused-publish', 'disconnect',
    '--limits.max-packet-size', '2048',
    '--limits.max-connect-packet-size', '1024',
    '--limits.max-connections', '50',
    '--limits.max-connections-per-address', '5',
    '--limits.max-keepalive', '60',
    '--limits.connect-timeout-ms', '3000',
    '--limits.max-subscriptions-per-client', '10',
    '--limits.max-retained', '0',
    '--limits.max-retained-bytes', '4096',
    '--limits.drain-timeout-ms', '5000',
    '--limits.queue-limit', '8',
    '--limits.connect-rate-per-second', '2.5',
    '--limits.connect-burst', '4',
    '--limits.shutdown-grace-ms', '2000',
    '--limits.max-cold-floors', '300',
  ]);
  const o: BrokerOptions = resolveBrokerOptions(file, flags);
  t.same(o, {
    listeners: BROKER_DEFAULTS.listeners,
    dataDir: '/from/flag',
    fsync: 'interval',
    fsyncIntervalMs: 250,
    admission: { maxSkewMs: 60000, registry: 'closed', templates: [TPL], curators: [TPL], ratePerSecond: 2.5, burst: 20, enrolment: 'required', operators: [operatorIdOf(fromHex(OP_HEX)!)] },
    acl: { publish: [{ allow: true, topic: 'plant/+/telemetry' }, { allow: false, topic: '#' }], subscribe: [{ allow: true, topic: 'plant/#' }], refusedPublish: 'disconnect' },
    limits: {
      maxPacketSize: 2048,
      maxConnectPacketSize: 1024,
      maxConnections: 50,
      maxConnectionsPerAddress: 5,
      maxKeepalive: 60,
      connectTimeoutMs: 3000,
      maxSubscriptionsPerClient: 10,
      maxRetained: 0,
      maxRetainedBytes: 4096,
      drainTimeoutMs: 5000,
      queueLimit: 8,
      connectRatePerSecond: 2.5,
      connectBurst: 4,
      shutdownGraceMs: 2000,
      maxColdFloors: 300,
    },
    http: { host: '127.0.0.1', port: 0 },
    log: { level: 'debug' },
    cluster: 'redis://127.0.0.1:6379',
    verifyWorkers: 2,
    verifyNice: 10,
    verifyInline: 500,
    sweepIntervalMs: 1000,
    id: 'eu-west-1',
    auth: { allowAnonymous: false, passwordFile: '/etc/qis/passwd', nodeLogin: true, loginSkewMs: 60000, clientIds: ['%u', 'gw-%u-*'] },
  });
  const keys = new Set(BROKER_FLAGS.map((f) => f.key.split('.')[0]));
  t.same([...keys].sort(), Object.keys({ ...BROKER_DEFAULTS, http: 0, cluster: 0, verifyWorkers: 0, verifyNice: 0, verifyInline: 0, id: 0, federation: 0, auth: 0 }).sort(), 'a flag for every top-level key');
  t.same(resolveBrokerOptions(file, configFromFlags([])).dataDir, '/from/file', 'no flags: the file');
});

t.test('broker config - --listen forms; --listen replaces the listeners of the file', async (t) => {
  const file = parseBrokerConfig('listeners: [{type: tcp, host: 1.2.3.4, port: 1}]', 'f.yaml');
  const o = resolveBrokerOptions(
    file,
    configFromFlags([
      '--listen', 'tcp://0.0.0.0:1883',
      '--listen', 'ws://127.0.0.1:8080/mqtt',
      '--listen', `tls://[::1]:8883?cert=${encodeURIComponent(CERT)}&key=${encodeURIComponent(KEY)}&ca=${encodeURIComponent(CA)}&requestCert=true`,
      '--listen=tcp://localhost:0',
    ]),
  );
  t.same(o.listeners, [
    { type: 'tcp', host: '0.0.0.0', port: 1883 },
    { type: 'ws', host: '127.0.0.1', port: 8080, path: '/mqtt' },
    { type: 'tls', host: '::1', port: 8883, cert: CERT, key: KEY, ca: CA, requestCert: true },
    { type: 'tcp', host: 'localhost', port: 0 },
  ]);
  const bad = (argv: string[], code: ErrorCode, re: RegExp): void => {
    const e = refusal(() => resolveBrokerOptions(file, configFromFlags(argv)));
    t.equal(e.code, code, e.message);
    t.match(e.message, re);
  };
  bad(['--listen', 'tcp://h:88x'], 'ERR_CONFIG_INVALID', /^--listen tcp:\/\/h:88x \(listeners\[0\]\.port\): expected an integer port 0\.\.65535.*got "88x"$/);
  bad(['--listen', 'tcp://h:1', '--listen', 'udp://h:2'], 'ERR_CONFIG_INVALID', /^--listen udp:\/\/h:2 \(listeners\[1\]\.type\): expected one of tcp, tls, ws, got "udp"/);
  bad(['--listen', 'tcp://h'], 'ERR_CONFIG_INVALID', /listeners\[0\]\.port\): .*got nothing/);
  bad(['--listen', 'ws://h:1'], 'ERR_CONFIG_INVALID', /^--listen ws:\/\/h:1 \(listeners\[0\]\.path\): expected a URL path starting with '\/'/);
  bad(['--listen', 'tcp://h:1/x'], 'ERR_CONFIG_INVALID', /listeners\[0\]\.path\): unknown key for a tcp listener/);
  bad(['--listen', 'tls://h:1?cert=/nonexistent.pem&key=k'], 'ERR_CONFIG_INVALID', /^--listen tls:\/\/h:1\?cert=\/nonexistent\.pem&key=k \(listeners\[0\]\.cert\): expected a readable PEM file/);
  bad(['--listen', `tls://h:1?cert=${CERT}&key=${KEY}&requestCert=maybe`], 'ERR_CONFIG_INVALID', /listeners\[0\]\.requestCert\): expected true or false, got "maybe"/);
  bad(['--listen', `tls://h:1?cert=${CERT}&key=${KEY}&pfx=x`], 'ERR_CONFIG_INVALID', /listeners\[0\]\.pfx\): unknown key for a tls listener/);
  bad(['--listen', 'tcp://h:1?port=2'], 'ERR_CLI_USAGE', /"port" belongs in the URL itself/);
  bad(['--listen', 'h:1883'], 'ERR_CLI_USAGE', /^--listen expects tcp:\/\/HOST:PORT/);
});

t.test('broker config - flag errors name the flag; unknown flags and missing values are ERR_CLI_USAGE', async (t) => {
  const bad = (argv: string[], code: ErrorCode, re: RegExp): void => {
    const e = refusal(() => resolveBrokerOptions({}, configFromFlags(argv)));
    t.equal(e.code, code, e.message);
    t.match(e.message, re);
  };
  bad(['--admission.max-skew-ms', 'soon'], 'ERR_CONFIG_INVALID', /^--admission\.max-skew-ms \(admission\.maxSkewMs\): expected an integer >= 0 \(milliseconds\), got "soon"$/);
  bad(['--admission.max-skew-ms=-5'], 'ERR_CONFIG_INVALID', /^--admission\.max-skew-ms \(admission\.maxSkewMs\): .*got -5$/);
  bad(['--fsync', 'sometimes'], 'ERR_CONFIG_INVALID', /^--fsync \(fsync\): expected one of always, interval, never, got "sometimes"/);
  bad(['--verify-workers', '100'], 'ERR_CONFIG_INVALID', /^--verify-workers \(verifyWorkers\): expected an integer 0\.\.64/);
  bad(['--verify-nice=-1'], 'ERR_CONFIG_INVALID', /^--verify-nice \(verifyNice\): expected an integer 0\.\.19/);
  bad(['--verify-inline=-1'], 'ERR_CONFIG_INVALID', /^--verify-inline \(verifyInline\): expected an integer 0\.\.100000/);
  bad(['--admission.template', TPL, '--admission.template', 'nope'], 'ERR_CONFIG_INVALID', /^--admission\.template nope \(admission\.templates\[1\]\): expected a template id/);
  bad(['--acl.subscribe', 'allow:a/#/b'], 'ERR_CONFIG_INVALID', /^--acl\.subscribe allow:a\/#\/b \(acl\.subscribe\[0\]\.topic\): expected an MQTT topic filter/);
  bad(['--http', 'h:99999'], 'ERR_CONFIG_INVALID', /^--http h:99999 \(http\.port\): expected an integer port 0\.\.65535.*got 99999/);
  bad(['--cluster', 'mqtt://x'], 'ERR_CONFIG_INVALID', /^--cluster \(cluster\): expected a redis:\/\/ or rediss:\/\/ URL/);
  bad(['--data-dir='], 'ERR_CONFIG_INVALID', /^--data-dir \(dataDir\): expected a directory path/);
  bad(['--acl.publish', 'permit:a'], 'ERR_CLI_USAGE', /^--acl\.publish expects allow:FILTER or deny:FILTER/);
  bad(['--http', '9100'], 'ERR_CLI_USAGE', /^--http expects HOST:PORT/);
  bad(['--dataDir', 'x'], 'ERR_CLI_USAGE', /^unknown flag --dataDir \(broker flags: --listen, --data-dir/);
  bad(['--data-dir'], 'ERR_CLI_USAGE', /^--data-dir needs a value DIR$/);
  bad(['--data-dir', '--fsync', 'never'], 'ERR_CLI_USAGE', /^--data-dir needs a value DIR \(for one that starts with '-', write --data-dir=VALUE\)/);
  bad(['stray'], 'ERR_CLI_USAGE', /unexpected argument "stray"/);
  t.same(configFromFlags(['--fsync', 'never', '--fsync', 'always']), { fsync: 'always' }, 'a repeated scalar flag: the last wins');
  t.same(configFromFlags(['--http', '[::1]:9100']), { http: { host: '::1', port: 9100 } });
});

t.test('broker config - examples/broker.yaml parses and resolves (its tls listener commented out)', async (t) => {
  const o = resolveBrokerOptions(await loadBrokerConfig(join(ROOT, 'examples/broker.yaml')));
  t.same(o.listeners, [
    { type: 'tcp', host: '127.0.0.1', port: 1883 },
    { type: 'ws', host: '127.0.0.1', port: 8080, path: '/mqtt' },
  ]);
  t.same(o.http, { host: '127.0.0.1', port: 9100 });
  t.equal(o.dataDir, './qis-broker-data');
  t.same(o.admission, BROKER_DEFAULTS.admission);
  t.same(o.acl, BROKER_DEFAULTS.acl);
});

t.test('broker cli - --check --json prints the resolved options and exits 0', async (t) => {
  const r = await qis(['broker', '--check', '--config', 'examples/broker.yaml', '--json']);
  t.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { ok: boolean; config: string; options: BrokerOptions };
  t.equal(out.ok, true);
  t.equal(out.config, 'examples/broker.yaml');
  t.same(out.options, resolveBrokerOptions(await loadBrokerConfig(join(ROOT, 'examples/broker.yaml'))));
  const human = await qis(['broker', '--check', '--config', 'examples/broker.yaml', '--fsync', 'never', '--listen', 'tcp://127.0.0.1:0']);
  t.equal(human.status, 0, human.stderr);
  t.match(human.stdout, /examples\/broker\.yaml: valid/);
  t.match(human.stdout, /fsync: never/);
  t.match(human.stdout, /port: 0/);
  t.notMatch(human.stdout, /port: 1883/, '--listen replaced the listeners of the file');
});

t.test('broker cli - a bad config exits 1 with ERR_CONFIG_INVALID naming the key', async (t) => {
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'listeners:\n  - {type: tcp, host: 127.0.0.1, port: 1883}\n  - {type: tcp, host: 127.0.0.1, port: 88x}\n');
  const r = await qis(['broker', '--config', bad]);
  t.equal(r.status, 1);
  t.match(r.stderr, /ERR_CONFIG_INVALID: .*bad\.yaml: listeners\[1\]\.port: expected an integer port 0\.\.65535.*got "88x"/);
  const j = await qis(['broker', '--config', bad, '--json']);
  t.equal(j.status, 1);
  t.match(JSON.parse(j.stdout), { ok: false, code: 'ERR_CONFIG_INVALID', message: /listeners\[1\]\.port/ });
  const flag = await qis(['broker', '--check', '--admission.max-skew-ms', 'x']);
  t.equal(flag.status, 1);
  t.match(flag.stderr, /ERR_CONFIG_INVALID: --admission\.max-skew-ms \(admission\.maxSkewMs\)/);
  const missing = await qis(['broker', '--check', '--config', join(dir, 'none.yaml')]);
  t.equal(missing.status, 1);
  t.match(missing.stderr, /ERR_FILE_IO/);
  const unknown = await qis(['broker', '--check', '--fsnyc', 'never']);
  t.equal(unknown.status, 2);
  t.match(unknown.stderr, /ERR_CLI_USAGE/);
  const form = await qis(['broker', '--check', '--listen', '1883']);
  t.equal(form.status, 2);
  t.match(form.stderr, /ERR_CLI_USAGE: --listen expects/);
});

t.test('broker cli - the command passes every occurrence of a list flag when the framework keeps them', async (t) => {
  // cli/run.ts keeps only the last occurrence of a flag today; the command marks its list flags
  // `multiple` and takes arrays, so that keeping them all is a change to run.ts alone.
  t.equal((brokerCommand.flags.listen as { multiple?: boolean }).multiple, true);
  const io = { stdin: new PassThrough(), stdout: new PassThrough(), stderr: new PassThrough() };
  const flags = { check: true, listen: ['tcp://127.0.0.1:1', 'ws://127.0.0.1:2/mqtt'], 'acl.publish': ['allow:a/#', 'deny:#'] } as unknown as Record<string, string | boolean | undefined>;
  const r = await brokerCommand.run(flags, io);
  const { options } = r.json as { options: BrokerOptions };
  t.same(options.listeners, [{ type: 'tcp', host: '127.0.0.1', port: 1 }, { type: 'ws', host: '127.0.0.1', port: 2, path: '/mqtt' }]);
  t.same(options.acl.publish, [{ allow: true, topic: 'a/#' }, { allow: false, topic: '#' }]);
});

t.test('broker cli - --help explains the config file and lists the key flags', async (t) => {
  const r = await qis(['broker', '--help']);
  t.equal(r.status, 0);
  for (const f of BROKER_FLAGS) t.match(r.stdout, `--${f.name} ${f.value}`);
  t.match(r.stdout, /--config FILE/);
  t.match(r.stdout, /--check/);
  t.match(r.stdout, /listeners:\n\s+- \{ type: tcp/);
  t.match(r.stdout, /--admission\.max-skew-ms/);
  t.match((await qis(['--help'])).stdout, /broker/, 'listed by qis --help');
  t.ok(brokerCommand.flags.listen, 'the command declares the key flags');
});

t.test('broker cli - runs until SIGTERM, prints where it listens, closes and exits 0', async (t) => {
  const data = join(dir, 'run-data');
  const child = spawn(process.execPath, [QIS, 'broker', '--json', '--listen', 'tcp://127.0.0.1:0', '--data-dir', data, '--log-level', 'silent', '--verify-workers', '0', '--http', 'off'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let sent = false;
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const status = await new Promise<number | null>((resolve) => {
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (!sent && out.includes('\n')) {
        sent = true;
        child.kill('SIGTERM');
      }
    });
    child.on('close', (code) => resolve(code));
  });
  t.equal(status, 0, err);
  const [first, last] = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(first, { event: 'listening', addresses: [{ type: 'tcp', host: '127.0.0.1', port: Number }] });
  t.ok(((first?.addresses as { port: number }[])[0]?.port ?? 0) > 0, 'a real port when 0 was asked');
  t.same(last, { ok: true, event: 'closed', signal: 'SIGTERM' });
});
