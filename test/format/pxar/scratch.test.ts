import { readFileSync } from 'node:fs';
import { test } from 'vitest';
import { PxarDecoder } from '../../../ts/format/pxar/decoder.js';
import { PxarEncoder } from '../../../ts/format/pxar/encoder.js';
import { basicMetadata } from '../../../ts/format/pxar/metadata.js';
test('scratch', async () => {
  const buf = readFileSync('test/fixtures/pbs/backup-client-pxar-data.mpxar');
  const d = new PxarDecoder([buf]);
  let n = 0;
  for await (const ev of d) { if (n++ < 5 || ev.type === 'end') console.log(ev.type, ev.entry.path.toString(), ev.entry.kind, ev.entry.metadata.mode.toString(8), ev.entry.payloadOffset, ev.entry.size); }
  const parts: Buffer[] = []; let plen = 0;
  const e = new PxarEncoder({ variant: 'split', output: { write: (b) => parts.push(Buffer.from(b)) }, payloadOutput: { write: (b) => { plen += b.length; } } });
  const m = (mode: number) => ({ ...basicMetadata(mode), uid: 1000, gid: 1000 });
  e.begin(m(0o40777));
  const zeros = Buffer.alloc(1 << 20);
  for (let i = 0; i < 10; i++) { e.enterDirectory(Buffer.from('folder_' + i), m(0o40777)); for (let j = 0; j < 10; j++) { e.beginFile(Buffer.from('file_' + j), m(0o100777), zeros.length); e.writeFileData(zeros); e.endFile(); } e.leaveDirectory(); }
  e.finish();
  const out = Buffer.concat(parts);
  console.log(out.length, buf.length, out.equals(buf), plen);
});
