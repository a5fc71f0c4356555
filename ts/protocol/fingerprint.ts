/**
 * Certificate fingerprints in PBS's format: SHA-256 of the DER certificate, lowercase hex
 * bytes joined by `:` (what `pxb serve` prints and what a client pins with `--fingerprint`).
 */
import { createHash } from 'node:crypto';

export function certificateFingerprint(derBytes: Uint8Array): string {
  return createHash('sha256').update(derBytes).digest('hex').replace(/(..)(?!$)/g, '$1:');
}

/** A user-given fingerprint (any case, with or without colons) in PBS format. */
export function normalizeFingerprint(fp: string): string {
  const hex = fp.trim().replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`invalid certificate fingerprint ${JSON.stringify(fp)} (expected 32 hex bytes, e.g. aa:bb:…)`);
  return hex.replace(/(..)(?!$)/g, '$1:');
}
