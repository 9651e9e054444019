/** The package's version, for `qis --version` and `qis_build_info`. */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The version in qis-mqtt's package.json, found above this file (it sits in broker/ when run
 * from source, dist/broker/ when built, dist/cli/ in the bundle); 'unknown' when none is found.
 */
export function packageVersion(): string {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'qis-mqtt' && typeof pkg.version === 'string') return (cached = pkg.version);
    } catch {
      // no package.json here: look one level up
    }
  }
  return (cached = 'unknown');
}
