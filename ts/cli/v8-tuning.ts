/**
 * The V8 settings of a `pxb` process that can be made once it runs (bin/pxb.js gives node only
 * what must be set before: the semi-space size and the platform's thread count), applied by the
 * launcher before it loads the command line's bundle, and by the build's code-cache trainer
 * (scripts/train-code-cache.mjs) the same way: V8 accepts a code cache only under the flags it
 * was made with. Library users get none of this: a library does not set process-wide flags.
 * (Node keeps V8's flags changeable after start for `v8.setFlagsFromString`: it starts V8 with
 * --no-freeze-flags-after-init.)
 *
 * Why not on node's command line: node's built-in modules come with code caches made under
 * V8's default flags, and V8 rejects them once a flag differs (it hashes nearly all of them:
 * each of the four, and --max-old-space-size, did; --stack-size did not), so
 * each built-in module pxb loads was compiled from source: ~11 ms of every run here (the
 * modules a backup loads: 15.7 ms instead of 4.8 with the four flags on the command line).
 * The semi-space size is put back to its default value (the heap keeps the size it was made
 * with) while the modules the bundle needs are loaded, then the other flags are set:
 * - TurboFan inlines at most 300 bytes of bytecode into a function (V8's default: 920): its
 *   compilations took ~0.2 s of CPU in a 0.4 s first no-change backup, on the cores the walk
 *   and the JavaScript thread need (linux tree, alternating: first no-change 0.375 s against
 *   0.39, 8 pairs, CPU -4 %; full backup 2.75 s against 2.80, 5 pairs; restore 1.98 s against
 *   2.04, 4 pairs; 500k small files: full backup equal). 150 was no better (again after the
 *   encoder's loops were split: 150, 300 and 600 gave 0.41, 0.415 and 0.43 s medians). No
 *   inlining at all (--no-turbo-inlining) made the first no-change another 3 % faster but a
 *   full backup of 500k small files 5 % slower. Maglev (--maglev): equal.
 * - After a full garbage collection the old generation may grow by half (V8 picks up to 4x when
 *   the program spends little time in GC, as a backup does): objects promoted by scavenges and
 *   dead soon after (directory state, listings) are then collected during the backup instead of
 *   piling up until its end (linux tree, full backup, 6 alternating triples: peak RSS 107.6 MiB
 *   median against 112.7, 2.81 s against 2.78; --initial-old-space-size=8 gave 108.5 MiB at
 *   2.84 s and two synchronous collections during start-up; 500k small files: 123-140 MiB
 *   against 156, time equal; restore and first no-change backup equal).
 */
import v8 from 'node:v8';

/**
 * Built-in modules the bundle loads when it starts (one left out is only compiled slower). By
 * `process.getBuiltinModule` (node >= 20.16; older ones skip this): a static import would load
 * them before the flag is put back.
 */
const BUILTINS = ['fs', 'fs/promises', 'path', 'os', 'vm', 'module', 'url', 'events', 'process', 'child_process', 'net', 'crypto', 'timers/promises', 'perf_hooks'];

/** V8 flags set once the built-in modules are loaded. */
export const RUNTIME_V8_FLAGS = ['--max-inlined-bytecode-size-cumulative=300', '--heap-growing-percent=50'];

let tuned = false;

/**
 * Apply pxb's V8 settings to this process (once; module doc). bin/pxb.js puts the semi-space
 * flag back itself before it loads anything else (the loader of the bundle, this module
 * included, needs built-in modules too); here it is done again for other callers (the trainer).
 */
export function tuneV8(): void {
  if (tuned) return;
  tuned = true;
  v8.setFlagsFromString('--max-semi-space-size=0');
  for (const m of BUILTINS) process.getBuiltinModule?.(`node:${m}`);
  for (const f of RUNTIME_V8_FLAGS) v8.setFlagsFromString(f);
}
