import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { CERT_FILE, KEY_FILE, createSelfSignedCertificate, loadOrCreateCertificate } from '../../ts/server/certificate.js';
import * as der from '../../ts/server/der.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tmp(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'pxb-cert-'));
  dirs.push(d);
  return d;
}

describe('DER encoding', () => {
  it('encodes the X.690 examples', () => {
    expect(der.oid('1.2.840.113549').toString('hex')).toBe('06062a864886f70d');
    expect(der.oid('2.5.29.17').toString('hex')).toBe('0603551d11');
    expect(der.integer(0x80).toString('hex')).toBe('02020080'); // sign byte added
    expect(der.integer(Buffer.from([0, 0, 1])).toString('hex')).toBe('020101'); // leading zeros dropped
    expect(der.tlv(0x04, Buffer.alloc(200)).subarray(0, 3).toString('hex')).toBe('0481c8'); // long length
    expect(der.time(new Date(Date.UTC(2024, 4, 7, 14, 25, 51))).toString('latin1')).toBe('\x17\x0d240507142551Z');
    expect(der.time(new Date(Date.UTC(9999, 11, 31, 23, 59, 59))).toString('latin1')).toBe('\x18\x0f99991231235959Z');
  });
});

describe('self-signed certificate', () => {
  const cert = createSelfSignedCertificate({ commonName: 'pxb-test', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] });
  const x = new X509Certificate(cert.der);

  it('is a valid X.509 v3 certificate signed by its own key', () => {
    expect(x.verify(x.publicKey)).toBe(true);
    expect(x.checkPrivateKey(createPrivateKey(cert.keyPem))).toBe(true);
    expect(x.subject).toContain('CN=pxb-test');
    expect(x.issuer).toBe(x.subject);
    expect(x.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(x.checkHost('localhost')).toBe('localhost');
    expect(x.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(x.ca).toBe(false);
    expect(new Date(x.validTo).getUTCFullYear()).toBe(9999);
    expect(new X509Certificate(cert.certPem).raw.equals(cert.der)).toBe(true);
  });

  it('reports the fingerprint in PBS format (lowercase, colon-separated SHA-256)', () => {
    expect(cert.fingerprint).toBe(x.fingerprint256.toLowerCase());
    expect(cert.fingerprint).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
  });

  it('serves TLS that a client trusting it as CA accepts for 127.0.0.1', async () => {
    const server = tls.createServer({ key: cert.keyPem, cert: cert.certPem }, (s) => s.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const got = await new Promise<string>((resolve, reject) => {
      const c = tls.connect({ host: '127.0.0.1', port, ca: cert.certPem }, () => {
        expect(c.authorized).toBe(true);
        c.once('data', (d) => resolve(d.toString()));
      });
      c.once('error', reject);
    });
    server.close();
    expect(got).toBe('ok');
  });
});

describe('certificate in the config directory', () => {
  const subject = { commonName: 'pxb', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] };

  it('is created once (key mode 0600) and then reused', async () => {
    const d = path.join(await tmp(), 'config');
    const first = await loadOrCreateCertificate(d, subject);
    expect(first.created).toBe(true);
    expect((await stat(path.join(d, KEY_FILE))).mode & 0o777).toBe(0o600);
    expect((await stat(d)).mode & 0o777).toBe(0o700);
    const again = await loadOrCreateCertificate(d, subject);
    expect(again.created).toBe(false);
    expect(again.fingerprint).toBe(first.fingerprint);
    expect(again.der.equals(first.der)).toBe(true);
  });

  it('never replaces a lone or mismatched key/certificate', async () => {
    const d = await tmp();
    const a = createSelfSignedCertificate(subject);
    await writeFile(path.join(d, CERT_FILE), a.certPem);
    await expect(loadOrCreateCertificate(d, subject)).rejects.toThrow(/has proxy.pem but not proxy.key/);
    await writeFile(path.join(d, KEY_FILE), createSelfSignedCertificate(subject).keyPem);
    await expect(loadOrCreateCertificate(d, subject)).rejects.toThrow(/the key does not belong to the certificate/);
  });
});
