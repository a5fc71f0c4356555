/**
 * Prints one plain closing line, `N passed, N failed, N skipped`, after vitest's own report,
 * so CI logs have a runner-neutral summary.
 */
import type { Reporter, RunnerTestFile, RunnerTask } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onFinished(files: RunnerTestFile[] = []): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const visit = (t: RunnerTask) => {
      if (t.type === 'test') {
        const state = t.result?.state;
        if (t.mode === 'skip' || t.mode === 'todo') skipped++;
        else if (state === 'pass') passed++;
        else if (state === 'fail') failed++;
        else skipped++;
      } else if ('tasks' in t) {
        for (const c of t.tasks) visit(c);
      }
    };
    for (const f of files) {
      if (f.result?.state === 'fail' && !f.tasks.length) failed++; // a file that failed to load
      for (const t of f.tasks) visit(t);
    }
    process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
