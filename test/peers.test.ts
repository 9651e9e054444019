import t from 'tap';
import { DEBIAN_PACKAGE_OF, requirePythonModules } from './helpers/python.js';

t.test('peers - a missing Python module fails in one line naming it, not with a traceback', async (t) => {
  const err = await requirePythonModules('json', 'qis_no_such_module_for_test').then(
    () => undefined,
    (e: Error) => e,
  );
  t.ok(err instanceof Error, 'rejects');
  t.match(err!.message, /^test peer missing: Python module 'qis_no_such_module_for_test' not found/);
  t.notMatch(err!.message, /Traceback|\n/, 'one line, no traceback');
});

t.test('peers - each Python module a test imports names the Debian package that brings it', async (t) => {
  t.equal(DEBIAN_PACKAGE_OF.serial_asyncio, 'python3-serial-asyncio', 'pymodbus imports serial_asyncio, a Recommends that --no-install-recommends skips');
  t.equal(DEBIAN_PACKAGE_OF.pymodbus, 'python3-pymodbus');
});

t.test('peers - the Python peers .ci/run installs are importable here', async (t) => {
  await t.resolves(requirePythonModules('cbor2', 'cryptography', 'pymodbus.server', 'serial', 'serial_asyncio'));
});
