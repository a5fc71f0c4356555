/**
 * Vitest global setup: compile ts/ into dist/ once per test run (`tsc -p tsconfig.build.json`)
 * and bundle the command line (`scripts/bundle-cli.mjs`), as `npm run build` does, so the CLI
 * tests, which spawn `bin/pxb.js`, run the code under test and not a stale build.
 *
 * tsc exit 2 means type errors with every output emitted: the run goes on (type errors are the
 * typecheck's business, `npm run typecheck`) after printing them. Any other failure (exit 1:
 * outputs skipped, or tsc not runnable) fails the run with the compiler's output.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const OUTPUTS_GENERATED = 2;

export default function setup(): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, encoding: 'utf8' });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error?.message ?? ''}`;
  if (r.status === OUTPUTS_GENERATED) process.stderr.write(`global-setup: dist/ was built, but tsc reported type errors:\n${output}`);
  else if (r.status !== 0) throw new Error(`npx tsc -p tsconfig.build.json failed (exit ${r.status ?? r.signal}):\n${output}`);
  const b = spawnSync(process.execPath, ['scripts/bundle-cli.mjs'], { cwd: root, encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`node scripts/bundle-cli.mjs failed (exit ${b.status ?? b.signal}):\n${b.stdout ?? ''}${b.stderr ?? ''}${b.error?.message ?? ''}`);
}
