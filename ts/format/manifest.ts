/**
 * BackupManifest (`index.json.blob`), spec datastore.md §5. JSON inside an unencrypted blob.
 * Serialized like serde_json's `to_string_pretty` of a Value without preserve_order: keys
 * sorted, 2-space indent. Parsers must not depend on key order or whitespace.
 */
import { createHash } from 'node:crypto';
import { decodeBlob, encodeBlob } from './blob.js';
import { FormatError } from './errors.js';

export const MANIFEST_BLOB_NAME = 'index.json.blob';
export type CryptMode = 'none' | 'encrypt' | 'sign-only';
export type BackupType = 'host' | 'vm' | 'ct';

export interface FileInfo {
  filename: string;
  cryptMode: CryptMode;
  size: number;
  /** 32-byte checksum: index csum for indexes, SHA-256 of the encoded file for blobs. */
  csum: Buffer;
}

export interface VerifyState {
  state: 'ok' | 'failed';
  upid: string;
}

export class BackupManifest {
  backupType: BackupType;
  backupId: string;
  backupTime: number;
  files: FileInfo[] = [];
  /** Not covered by the signature: verify_state, notes, chunk_upload_stats, key-fingerprint… */
  unprotected: Record<string, unknown> = {};
  signature: string | null = null;

  constructor(backupType: BackupType, backupId: string, backupTime: number) {
    this.backupType = backupType;
    this.backupId = backupId;
    this.backupTime = backupTime;
  }

  addFile(filename: string, size: number, csum: Buffer, cryptMode: CryptMode = 'none'): void {
    if (this.files.some((f) => f.filename === filename)) {
      throw new Error(`manifest: duplicate file name ${filename}`);
    }
    this.files.push({ filename, size, csum, cryptMode });
  }

  lookup(filename: string): FileInfo | undefined {
    return this.files.find((f) => f.filename === filename);
  }

  get verifyState(): VerifyState | undefined {
    const v = this.unprotected['verify_state'] as VerifyState | undefined;
    return v && typeof v === 'object' && (v.state === 'ok' || v.state === 'failed') ? v : undefined;
  }

  toJSONValue(): Record<string, unknown> {
    return {
      'backup-type': this.backupType,
      'backup-id': this.backupId,
      'backup-time': this.backupTime,
      files: this.files.map((f) => ({
        filename: f.filename,
        'crypt-mode': f.cryptMode,
        size: f.size,
        csum: f.csum.toString('hex'),
      })),
      unprotected: this.unprotected,
      signature: this.signature,
    };
  }

  /** Pretty JSON with sorted keys, as PBS writes it. */
  toJSON(): string {
    return JSON.stringify(sortKeys(this.toJSONValue()), null, 2);
  }

  /** The `index.json.blob` bytes. */
  toBlob(): Buffer {
    return encodeBlob(Buffer.from(this.toJSON(), 'utf8'), true);
  }

  static fromJSON(text: string, what = MANIFEST_BLOB_NAME): BackupManifest {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new FormatError(`${what}: not valid JSON (${(e as Error).message})`);
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new FormatError(`${what}: not a JSON object`);
    const o = v as Record<string, unknown>;
    const type = o['backup-type'];
    const id = o['backup-id'];
    const time = o['backup-time'];
    if (type !== 'host' && type !== 'vm' && type !== 'ct') throw new FormatError(`${what}: bad backup-type ${String(type)}`);
    if (typeof id !== 'string' || !id) throw new FormatError(`${what}: missing backup-id`);
    if (typeof time !== 'number' || !Number.isSafeInteger(time)) throw new FormatError(`${what}: bad backup-time`);
    const m = new BackupManifest(type, id, time);
    const files = o['files'];
    if (!Array.isArray(files)) throw new FormatError(`${what}: files is not an array`);
    for (const f of files) {
      if (!f || typeof f !== 'object') throw new FormatError(`${what}: bad file entry`);
      const fi = f as Record<string, unknown>;
      const name = fi['filename'];
      const size = fi['size'];
      const csum = fi['csum'];
      const mode = fi['crypt-mode'] ?? 'none';
      if (typeof name !== 'string' || !name) throw new FormatError(`${what}: file entry without filename`);
      if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new FormatError(`${what}: ${name}: bad size`);
      if (typeof csum !== 'string' || !/^[0-9a-f]{64}$/.test(csum)) throw new FormatError(`${what}: ${name}: bad csum`);
      if (mode !== 'none' && mode !== 'encrypt' && mode !== 'sign-only') throw new FormatError(`${what}: ${name}: bad crypt-mode`);
      m.files.push({ filename: name, size, csum: Buffer.from(csum, 'hex'), cryptMode: mode });
    }
    const unprotected = o['unprotected'];
    if (unprotected && typeof unprotected === 'object' && !Array.isArray(unprotected)) {
      m.unprotected = unprotected as Record<string, unknown>;
    }
    const sig = o['signature'];
    m.signature = typeof sig === 'string' ? sig : null;
    return m;
  }

  static fromBlob(blob: Uint8Array, what = MANIFEST_BLOB_NAME): BackupManifest {
    return BackupManifest.fromJSON(decodeBlob(blob, 16 * 1024 * 1024, what).toString('utf8'), what);
  }
}

/** Checksum PBS records for a `.blob` file: SHA-256 of the whole encoded file. */
export function blobCsum(encoded: Uint8Array): Buffer {
  return createHash('sha256').update(encoded).digest();
}

export function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object' && !Buffer.isBuffer(v)) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v as object).sort()) out[k] = sortKeys((v as Record<string, unknown>)[k]);
    return out;
  }
  return v;
}
