/**
 * Requests inside an upgraded session (spec protocol.md §3.1): HTTP/2 streams with
 * `:path` = `/<endpoint>[?query]`, form-urlencoded unless stated, `{"data": …}` JSON or raw
 * bytes back, errors as non-2xx with the plain message.
 *
 * Invariants: response bodies are capped (`maxResponse`); every request settles exactly once,
 * also when the connection breaks; a response that arrived counts even if the server stopped
 * reading the request body early.
 */
import { constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { MAX_H2_QUERY_LENGTH, USER_AGENT } from '../../protocol/constants.js';
import { ProtocolError, RemoteError } from './errors.js';

export interface H2RequestOptions {
  body?: Uint8Array;
  contentType?: string;
  /** Largest response body accepted (default 64 KiB). */
  maxResponse?: number;
}

export interface H2Response {
  status: number;
  body: Buffer;
}

export class H2Connection {
  private failure: Error | null = null;
  private closedFlag = false;

  constructor(
    private readonly session: ClientHttp2Session,
    /** Used in error messages, e.g. `backup session host/x/…`. */
    readonly description: string,
  ) {
    session.on('error', (e) => {
      this.failure ??= new ProtocolError(`${description}: ${e.message}`);
    });
    session.once('close', () => {
      this.closedFlag = true;
    });
    session.on('goaway', () => undefined);
  }

  get closed(): boolean {
    return this.closedFlag || this.session.closed || this.session.destroyed;
  }

  request(method: string, path: string, o: H2RequestOptions = {}): Promise<H2Response> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(this.failure ?? new ProtocolError(`${this.description}: the connection is closed`));
        return;
      }
      const q = path.indexOf('?');
      if (q >= 0 && path.length - q - 1 > MAX_H2_QUERY_LENGTH) {
        reject(new Error(`${method} ${path.slice(0, q)}: query too large (${path.length - q - 1} > ${MAX_H2_QUERY_LENGTH} bytes)`));
        return;
      }
      const limit = o.maxResponse ?? 64 * 1024;
      let stream: ClientHttp2Stream;
      try {
        stream = this.session.request(
          {
            ':method': method,
            ':path': path,
            'user-agent': USER_AGENT,
            'content-type': o.contentType ?? 'application/x-www-form-urlencoded',
          },
          { endStream: !o.body },
        );
      } catch (e) {
        reject(new ProtocolError(`${this.description}: ${(e as Error).message}`));
        return;
      }
      let status = 0;
      let settled = false;
      const parts: Buffer[] = [];
      let n = 0;
      const done = (e: Error | null) => {
        if (settled) return;
        settled = true;
        if (e) {
          parts.length = 0;
          if (!stream.destroyed) stream.close(constants.NGHTTP2_CANCEL);
          reject(e);
        } else resolve({ status, body: Buffer.concat(parts, n) });
      };
      stream.once('response', (h) => {
        status = Number(h[':status']);
      });
      stream.on('data', (c: Buffer) => {
        n += c.length;
        if (n > limit) done(new ProtocolError(`${method} ${path.split('?')[0]}: response larger than ${limit} bytes`));
        else if (!settled) parts.push(c);
      });
      stream.once('end', () => {
        if (status) done(null);
        else done(new ProtocolError(`${method} ${path.split('?')[0]}: stream ended without a response`));
      });
      stream.on('error', (e) => {
        // A complete response wins over a failure of the request side.
        if (!status) done(this.failure ?? new ProtocolError(`${this.description}: ${method} ${path.split('?')[0]}: ${e.message}`));
      });
      stream.once('close', () => {
        if (status && stream.rstCode === constants.NGHTTP2_NO_ERROR) done(null);
        done(this.failure ?? new ProtocolError(`${this.description}: ${method} ${path.split('?')[0]}: stream closed (code ${stream.rstCode})`));
      });
      if (o.body) stream.end(o.body);
    });
  }

  /** A JSON call: the `data` value, or `RemoteError` for an error status. */
  async json(method: string, path: string, o: H2RequestOptions = {}): Promise<unknown> {
    const r = await this.request(method, path, { maxResponse: 16 * 1024 * 1024, ...o });
    if (r.status !== 200) throw new RemoteError(r.status, path, r.body.toString('utf8').trim());
    let v: unknown;
    try {
      v = JSON.parse(r.body.toString('utf8'));
    } catch {
      throw new ProtocolError(`${method} ${path.split('?')[0]}: response is not JSON`);
    }
    if (!v || typeof v !== 'object' || !('data' in v)) throw new ProtocolError(`${method} ${path.split('?')[0]}: response has no data`);
    return (v as { data: unknown }).data;
  }

  /** A download: the raw body, or `RemoteError` for an error status. */
  async bytes(method: string, path: string, maxResponse: number): Promise<Buffer> {
    const r = await this.request(method, path, { maxResponse });
    if (r.status !== 200) throw new RemoteError(r.status, path, r.body.toString('utf8').trim());
    return r.body;
  }

  /** Close after the running requests (GOAWAY). */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.session.close(() => resolve()));
  }

  /** Drop the connection at once (the server treats an unfinished backup as aborted). */
  destroy(): void {
    this.session.destroy();
  }
}
