/**
 * The decoded form of one pxar directory entry, shared by the sequential decoder and the
 * random-access accessor. Paths and names are raw bytes; positions are absolute byte offsets
 * in the metadata stream (the whole archive for unified/v1 archives).
 */
import type { Metadata } from './metadata.js';

export type EntryKind = 'file' | 'directory' | 'symlink' | 'hardlink' | 'device' | 'fifo' | 'socket';

export interface PxarEntry {
  /** Path relative to the archive root, components joined with '/'; empty for the root. */
  path: Buffer;
  /** Last path component; empty for the root. */
  name: Buffer;
  kind: EntryKind;
  /** For hardlinks: empty metadata (mode 0), as the HARDLINK item carries none. */
  metadata: Metadata;
  /** Position of the entry's FILENAME header (what HARDLINK offsets refer to); undefined for the root. */
  linkOffset?: number;
  /** Position of the ENTRY header (HARDLINK header for hardlinks). */
  entryOffset: number;
  /** Regular files: data length. */
  size?: number;
  /** Regular files of split archives: PAYLOAD_REF offset (position of the PAYLOAD header in the payload stream). */
  payloadOffset?: number;
  /** Regular files of unified archives: position of the first data byte in the archive. */
  contentOffset?: number;
  /** Symlinks: target bytes. */
  symlinkTarget?: Buffer;
  /** Hardlinks: target path as stored (relative to the archive root). */
  hardlinkTarget?: Buffer;
  /** Hardlinks: position of the target's FILENAME header (`linkOffset − stored offset`). */
  hardlinkTargetOffset?: number;
  /** Devices: numbers as stored. */
  device?: { major: number; minor: number };
}
