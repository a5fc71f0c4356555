import { describe, expect, it } from 'vitest';
import { quotedPath } from '../../ts/cli/output.js';

describe('quotedPath', () => {
  it('keeps printable UTF-8, escapes quotes, backslashes and line breaks', () => {
    expect(quotedPath(Buffer.from('root.pxar/dir/ünïcode file.txt'))).toBe('"root.pxar/dir/ünïcode file.txt"');
    expect(quotedPath(Buffer.from('a"b\\c'))).toBe('"a\\"b\\\\c"');
    // a name that would forge a second catalog line
    expect(quotedPath(Buffer.from('x" 1\nf "root.pxar/etc/shadow'))).toBe('"x\\" 1\\nf \\"root.pxar/etc/shadow"');
    expect(quotedPath(Buffer.from('t\tr\r'))).toBe('"t\\tr\\r"');
  });

  it('escapes terminal control sequences, bidi overrides and bytes that are not UTF-8', () => {
    expect(quotedPath(Buffer.from('\x1b[2J\x00\x7f'))).toBe('"\\x1b[2J\\x00\\x7f"');
    expect(quotedPath(Buffer.from('\u009b31m'))).toBe('"\\u{9b}31m"'); // C1 CSI
    expect(quotedPath(Buffer.from('evil\u202etxt.exe'))).toBe('"evil\\u{202e}txt.exe"');
    expect(quotedPath(Buffer.from([0x6e, 0xff, 0xfe, 0x80, 0xc3]))).toBe('"n\\xff\\xfe\\x80\\xc3"');
    expect(quotedPath(Buffer.from([0xed, 0xa0, 0x80]))).toBe('"\\xed\\xa0\\x80"'); // a UTF-16 surrogate, not UTF-8
    expect(quotedPath(Buffer.from('😀'))).toBe('"😀"');
  });
});
