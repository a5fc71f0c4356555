/**
 * PBS task ids (UPIDs, spec protocol.md "UPID format"), used where PBS records the task that
 * did something: `verify_state.upid` in manifests and `upid` in `.gc-status`.
 *
 *   UPID:<node>:<pid %08X>:<pstart %08X>:<task-id %08X>:<starttime %08X>:<worker-type>:<worker-id>:<authid>:
 *
 * The worker id is escaped like a systemd unit name (`/` → `-`, every byte other than
 * `[A-Za-z0-9_.]`, and a leading `.`, → `\xNN`), as PBS does. Local pxb runs are "tasks" of
 * the current process; task ids count up per process.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

let taskCounter = 0;
let ownStart: number | undefined;

/** Process start time in clock ticks after boot (field 22 of /proc/self/stat), 0 if unknown. */
function processStartTicks(): number {
  if (ownStart === undefined) {
    try {
      const stat = readFileSync('/proc/self/stat', 'latin1');
      const v = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
      ownStart = Number.isSafeInteger(v) && v >= 0 ? v : 0;
    } catch {
      ownStart = 0;
    }
  }
  return ownStart;
}

/** systemd unit-name escaping of a worker id (PBS `escape_unit(id, false)`). */
export function escapeWorkerId(id: string): string {
  let out = '';
  const bytes = Buffer.from(id, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (c === 0x2f) {
      out += '-';
    } else if ((i === 0 && c === 0x2e) || !(isAlnum(c) || c === 0x5f || c === 0x2e)) {
      out += `\\x${c.toString(16)}`;
    } else {
      out += String.fromCharCode(c);
    }
  }
  return out;
}

function isAlnum(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

const hex8 = (n: number) => (n >>> 0).toString(16).toUpperCase().padStart(8, '0');

/** A new UPID for a task of this process started now. */
export function newUpid(workerType: string, workerId: string | null, authId: string, startTime = Math.floor(Date.now() / 1000)): string {
  // PBS node names: [a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?
  const node = hostname().split('.')[0].replace(/[^A-Za-z0-9-]/g, '-').replace(/^-+|-+$/g, '') || 'localhost';
  const wid = workerId === null ? '' : escapeWorkerId(workerId);
  return `UPID:${node}:${hex8(process.pid)}:${hex8(processStartTicks())}:${hex8(taskCounter++)}:${hex8(startTime)}:${workerType}:${wid}:${authId}:`;
}

/** Start time (epoch seconds) recorded in a UPID, or null if `upid` is not one. */
export function upidStartTime(upid: string): number | null {
  const m = /^UPID:[^:]+:[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:[0-9A-Fa-f]{8,16}:([0-9A-Fa-f]{8}):[^:\s]+:[^:\s]*:[^:\s]+:$/.exec(upid);
  return m ? parseInt(m[1], 16) : null;
}
