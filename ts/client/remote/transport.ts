/**
 * Connections to a PBS-compatible server: TLS with certificate pinning, one HTTP/1.1 request
 * (REST), or the protocol upgrade (HTTP/1.1 `Upgrade:` then HTTP/2 on the same TLS stream).
 *
 * Invariants:
 *  - Nothing is sent before the server certificate is accepted: CA-trusted (and matching the
 *    host name) when no fingerprint is given, or matching the pinned fingerprint exactly when
 *    one is given (even a CA-trusted certificate must match a pin). Anything else is refused
 *    with a `CertificateError` that shows the presented fingerprint.
 *  - HTTP/2 starts only after the request was flushed and a `101` naming the requested protocol
 *    arrived; bytes the server sent right behind the 101 are handed to the HTTP/2 session.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import http2, { type ClientHttp2Session } from 'node:http2';
import { isIP, isIPv6 } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { CLIENT_H2, H2_AUTHORITY, USER_AGENT } from '../../protocol/constants.js';
import { certificateFingerprint, normalizeFingerprint } from '../../protocol/fingerprint.js';
import { CertificateError, ProtocolError, RemoteError } from './errors.js';

export interface TlsTarget {
  host: string;
  port: number;
  /** Pinned server certificate fingerprint (`aa:bb:…`, any case, colons optional). */
  fingerprint?: string;
  /** Extra trusted CA certificates (PEM). */
  ca?: string | Buffer | Array<string | Buffer>;
  signal?: AbortSignal;
  /** Give up connecting after this many ms (default 20 000, as the PBS client). */
  timeoutMs?: number;
}

/** Open a TLS connection and accept the server certificate or throw `CertificateError`. */
export async function connectTls(t: TlsTarget): Promise<TLSSocket> {
  t.signal?.throwIfAborted();
  const pinned = t.fingerprint === undefined ? undefined : normalizeFingerprint(t.fingerprint);
  const socket = tls.connect({
    host: t.host,
    port: t.port,
    servername: isIP(t.host) ? undefined : t.host,
    rejectUnauthorized: false,
    ca: t.ca,
    minVersion: 'TLSv1.2',
  });
  const where = `${isIPv6(t.host) ? `[${t.host}]` : t.host}:${t.port}`;
  await new Promise<void>((resolve, reject) => {
    const onAbort = () => fail(t.signal?.reason instanceof Error ? t.signal.reason : new Error('aborted'));
    const fail = (e: Error) => {
      cleanup();
      socket.destroy();
      reject(e);
    };
    const onError = (e: Error) => fail(new ProtocolError(`cannot connect to ${where}: ${e.message}`));
    const onSecure = () => {
      cleanup();
      resolve();
    };
    const timer = setTimeout(() => fail(new ProtocolError(`cannot connect to ${where}: timed out`)), t.timeoutMs ?? 20_000);
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('error', onError);
      socket.off('secureConnect', onSecure);
      t.signal?.removeEventListener('abort', onAbort);
    };
    socket.once('error', onError);
    socket.once('secureConnect', onSecure);
    t.signal?.addEventListener('abort', onAbort, { once: true });
  });
  socket.on('error', () => undefined); // later errors surface through the request that uses it
  const raw = socket.getPeerCertificate().raw;
  const fp = raw ? certificateFingerprint(raw) : '(none)';
  if (pinned !== undefined) {
    if (fp !== pinned) {
      socket.destroy();
      throw new CertificateError(
        `refusing ${where}: its certificate fingerprint is ${fp}, but ${pinned} was expected ` +
          `(the server's certificate changed, or this is not the server you think it is)`,
        fp,
      );
    }
  } else if (!socket.authorized) {
    socket.destroy();
    throw new CertificateError(
      `refusing ${where}: its certificate is not trusted (${String(socket.authorizationError)}); ` +
        `if ${fp} is the fingerprint the server prints, pin it (--fingerprint / PBS_FINGERPRINT)`,
      fp,
    );
  }
  return socket;
}

export interface Http1Request {
  method: string;
  path: string;
  headers: Record<string, string>;
  /** Largest response body accepted. */
  maxBody?: number;
}

export interface Http1Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

function readResponse(res: IncomingMessage, limit: number, what: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    res.on('data', (c: Buffer) => {
      n += c.length;
      if (n > limit) {
        res.destroy();
        reject(new ProtocolError(`${what}: response larger than ${limit} bytes`));
      } else parts.push(c);
    });
    res.once('end', () => resolve(Buffer.concat(parts, n)));
    res.once('error', (e) => reject(new ProtocolError(`${what}: ${e.message}`)));
    res.once('aborted', () => reject(new ProtocolError(`${what}: connection closed during the response`)));
  });
}

/** One HTTP/1.1 request on an accepted TLS socket (which is closed afterwards). */
export function http1Request(socket: TLSSocket, r: Http1Request): Promise<Http1Response> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      method: r.method,
      path: r.path,
      headers: { 'user-agent': USER_AGENT, connection: 'close', ...r.headers },
      createConnection: () => socket,
    });
    req.once('error', (e) => {
      socket.destroy();
      reject(new ProtocolError(`${r.method} ${r.path.split('?')[0]}: ${e.message}`));
    });
    req.once('response', (res) => {
      readResponse(res, r.maxBody ?? 64 * 1024 * 1024, `${r.method} ${r.path.split('?')[0]}`)
        .then((body) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }), reject)
        .finally(() => socket.destroy());
    });
    req.end();
  });
}

/**
 * Send the protocol upgrade request and switch the connection to HTTP/2 (client role).
 * Refusals (any status but 101) throw `RemoteError` with the server's message.
 */
export function upgradeToHttp2(socket: TLSSocket, path: string, protocolId: string, headers: Record<string, string>): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(e);
    };
    const req = http.request({
      method: 'GET',
      path,
      headers: { 'user-agent': USER_AGENT, ...headers, connection: 'upgrade', upgrade: protocolId },
      createConnection: () => socket,
    });
    req.once('error', (e) => fail(new ProtocolError(`protocol upgrade: ${e.message}`)));
    req.once('response', (res) => {
      readResponse(res, 64 * 1024, 'protocol upgrade').then(
        (body) => fail(new RemoteError(res.statusCode ?? 0, path, body.toString('utf8').trim() || (res.statusMessage ?? 'error'))),
        (e: Error) => fail(e),
      );
    });
    req.once('upgrade', (res: IncomingMessage, upgraded: Duplex, head: Buffer) => {
      if (res.statusCode !== 101 || res.headers.upgrade !== protocolId) {
        fail(new ProtocolError(`protocol upgrade: expected 101 with Upgrade: ${protocolId}, got ${res.statusCode} ${String(res.headers.upgrade)}`));
        return;
      }
      const start = () => {
        if (head.length) upgraded.unshift(head);
        const session = http2.connect(H2_AUTHORITY, {
          createConnection: () => upgraded,
          settings: { initialWindowSize: CLIENT_H2.streamWindow, maxFrameSize: CLIENT_H2.maxFrameSize, enablePush: false },
          maxSessionMemory: 1024,
        });
        const onError = (e: Error) => fail(new ProtocolError(`HTTP/2 session: ${e.message}`));
        session.once('error', onError);
        session.once('connect', () => {
          session.off('error', onError);
          try {
            session.setLocalWindowSize(CLIENT_H2.connectionWindow);
          } catch {
            // keep the default window
          }
          settled = true;
          resolve(session);
        });
      };
      // The socket must have no write pending when HTTP/2 takes it over.
      if (req.writableFinished) start();
      else req.once('finish', start);
    });
    req.end();
  });
}
