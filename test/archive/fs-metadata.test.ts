import { describe, it, expect } from 'vitest';
import { chattrFrom, statFlagsFrom } from '../../ts/archive/fs-metadata.js';

describe('statFlagsFrom', () => {
  it('ignores chattr bits that map to no pxar flag (ext4 EXTENTS on every file)', () => {
    expect(statFlagsFrom(0x80000, 0)).toBe(0n);
    expect(statFlagsFrom(0x80000 | 0x1000, 1)).toBe(0n); // EXTENTS, INDEX, FAT read-only: none mapped
  });

  it('maps the chattr and FAT bits PBS keeps', () => {
    expect(statFlagsFrom(0x80000 | 0x10, 0)).toBe(0x400000n); // IMMUTABLE next to EXTENTS
    expect(statFlagsFrom(0x20 | 0x80, 0)).toBe(0x10000n | 0x20000n); // APPEND, NOATIME
    expect(statFlagsFrom(0, 2 | 32)).toBe(0x2000n | 0x8000n); // FAT HIDDEN, ARCHIVE
    expect(chattrFrom(statFlagsFrom(0x20000000 | 0x8 | 0x80000, 0))).toBe(0x20000000 | 0x8);
  });
});
