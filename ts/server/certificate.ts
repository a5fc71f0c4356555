/**
 * The server's TLS identity: a self-signed X.509 v3 certificate (ECDSA P-256, SHA-256) built
 * with node's crypto and a minimal DER encoder (no openssl binary needed), stored in the config
 * directory as `proxy.key` (PKCS#8 PEM, mode 0600) and `proxy.pem`, the names PBS uses.
 *
 * Invariants:
 *  - An existing pair is reused as is; it must parse and the key must match the certificate.
 *    A lone key or certificate is an error, never silently replaced.
 *  - The fingerprint is PBS's format: SHA-256 of the DER certificate as lowercase hex bytes
 *    joined by `:` (what `proxmox-backup-client` compares with `--fingerprint`).
 *  - The certificate names `localhost`, the host name, 127.0.0.1 and ::1 (subjectAltName) and
 *    is valid from one day before creation until 9999-12-31T23:59:59Z (RFC 5280 "no expiry").
 */
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';
import path from 'node:path';
import { writeFileAtomic } from '../backend/fs.js';
import { certificateFingerprint } from '../protocol/fingerprint.js';
import * as der from './der.js';

export const KEY_FILE = 'proxy.key';
export const CERT_FILE = 'proxy.pem';

const OID = {
  ecPublicKey: '1.2.840.10045.2.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  organizationalUnit: '2.5.4.11',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
};

export interface ServerCertificate {
  keyPem: string;
  certPem: string;
  /** DER bytes of the certificate. */
  der: Buffer;
  /** `aa:bb:…` (SHA-256 of the DER certificate). */
  fingerprint: string;
}

export interface CertificateSubject {
  commonName: string;
  dnsNames?: string[];
  ipAddresses?: string[];
}

function ipBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (!isIPv6(ip)) throw new Error(`invalid IP address ${ip}`);
  let text = ip;
  let v4: number[] = [];
  const m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (m) {
    const b = m[2].split('.').map(Number);
    v4 = [(b[0] << 8) | b[1], (b[2] << 8) | b[3]];
    text = m[1].endsWith('::') ? m[1] : m[1].slice(0, -1);
  }
  const words = (t: string) => (t === '' ? [] : t.split(':').map((w) => parseInt(w, 16)));
  const halves = text.split('::');
  let all: number[];
  if (halves.length === 1) all = [...words(text), ...v4];
  else {
    const head = words(halves[0]);
    const tail = [...words(halves[1]), ...v4];
    all = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

function name(subject: CertificateSubject): Buffer {
  const rdn = (type: string, value: string) => der.set(der.sequence(der.oid(type), der.utf8String(value)));
  return der.sequence(rdn(OID.organization, 'pxb'), rdn(OID.organizationalUnit, 'self-signed'), rdn(OID.commonName, subject.commonName));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? der.sequence(der.oid(id), der.boolean(true), der.octetString(value)) : der.sequence(der.oid(id), der.octetString(value));
}

/** Create a fresh key pair and a self-signed certificate for it. */
export function createSelfSignedCertificate(subject: CertificateSubject, now = new Date()): ServerCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const serial = randomBytes(16);
  serial[0] &= 0x7f;
  const sigAlg = der.sequence(der.oid(OID.ecdsaWithSha256));
  const altNames = der.sequence(
    ...(subject.dnsNames ?? []).map((d) => der.implicitPrimitive(2, Buffer.from(d, 'ascii'))),
    ...(subject.ipAddresses ?? []).map((ip) => der.implicitPrimitive(7, ipBytes(ip))),
  );
  const extensions = der.sequence(
    extension(OID.basicConstraints, true, der.sequence()),
    extension(OID.keyUsage, true, der.tlv(0x03, Buffer.from([0x07, 0x80]))), // digitalSignature
    extension(OID.extKeyUsage, false, der.sequence(der.oid(OID.serverAuth))),
    extension(OID.subjectAltName, false, altNames),
  );
  const issuer = name(subject);
  const tbs = der.sequence(
    der.explicit(0, der.integer(2)), // v3
    der.integer(serial),
    sigAlg,
    issuer,
    der.sequence(der.time(new Date(now.getTime() - 86400_000)), der.time(new Date(Date.UTC(9999, 11, 31, 23, 59, 59)))),
    issuer,
    spki,
    der.explicit(3, extensions),
  );
  const signature = sign('sha256', tbs, privateKey);
  const certDer = der.sequence(tbs, sigAlg, der.bitString(signature));
  const b64 = certDer.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n');
  return {
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    certPem: `-----BEGIN CERTIFICATE-----\n${b64}-----END CERTIFICATE-----\n`,
    der: certDer,
    fingerprint: certificateFingerprint(certDer),
  };
}

async function readOptional(p: string): Promise<string | null> {
  try {
    return await readFile(p, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/**
 * The certificate in `configDir`, created on first use. `created` says whether it was made now
 * (the CLI then prints its fingerprint prominently).
 */
export async function loadOrCreateCertificate(configDir: string, subject: CertificateSubject): Promise<ServerCertificate & { created: boolean }> {
  const keyPath = path.join(configDir, KEY_FILE);
  const certPath = path.join(configDir, CERT_FILE);
  const [keyPem, certPem] = await Promise.all([readOptional(keyPath), readOptional(certPath)]);
  if (keyPem !== null && certPem !== null) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(certPem);
      if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new Error('the key does not belong to the certificate');
    } catch (e) {
      throw new Error(`TLS key/certificate in ${configDir} (${KEY_FILE}, ${CERT_FILE}) are unusable: ${(e as Error).message}`);
    }
    return { keyPem, certPem, der: cert.raw, fingerprint: certificateFingerprint(cert.raw), created: false };
  }
  if (keyPem !== null || certPem !== null) {
    throw new Error(`${configDir} has ${keyPem !== null ? KEY_FILE : CERT_FILE} but not ${keyPem !== null ? CERT_FILE : KEY_FILE}; restore it or remove both to create a new certificate`);
  }
  const made = createSelfSignedCertificate(subject);
  // Key first: a crash in between leaves a lone key, which the check above reports.
  await writeFileAtomic(keyPath, Buffer.from(made.keyPem), { mode: 0o600, dirMode: 0o700 });
  await writeFileAtomic(certPath, Buffer.from(made.certPem), { mode: 0o644, dirMode: 0o700 });
  return { ...made, created: true };
}
