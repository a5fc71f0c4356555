/**
 * Request/response plumbing of `pxb serve` for HTTP/1.1 (REST, upgrade handshake) and HTTP/2
 * streams (upgraded sessions). Responses follow PBS (spec protocol.md §1): success `{"data":…}`
 * as `application/json;charset=UTF-8`, downloads as `application/octet-stream`, errors as the
 * plain message with the error's status (400 unless the error says otherwise).
 *
 * Invariants: bodies are read with a hard byte limit (nothing past the limit is kept), and no
 * helper throws when the peer has already gone away.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';
import type { Duplex, Readable } from 'node:stream';
import { HttpError, messageOf, statusOf } from '../protocol/errors.js';
import { parseParams, type ObjectSchema, type Params } from '../protocol/params.js';

export const JSON_CONTENT_TYPE = 'application/json;charset=UTF-8';

/**
 * Read a whole request body. More than `limit` bytes rejects with `tooLarge()` at once (later
 * data is dropped); a stream that closes before its end rejects too.
 */
export function readBody(stream: Readable, limit: number, tooLarge: () => Error): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    let done = false;
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      stream.off('end', onEnd);
      stream.off('close', onClose);
      stream.off('error', onError);
      if (err) {
        parts.length = 0;
        reject(err);
      } else resolve(Buffer.concat(parts, n));
    };
    const onData = (chunk: Buffer) => {
      if (done) return;
      n += chunk.length;
      if (n > limit) {
        stream.off('data', onData);
        stream.resume(); // drain and drop the rest
        finish(tooLarge());
        return;
      }
      parts.push(chunk);
    };
    const onEnd = () => finish(null);
    const onClose = () => finish(new Error('request body incomplete: the stream was closed'));
    const onError = (e: Error) => finish(new Error(`request body incomplete: ${e.message}`));
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onClose);
    stream.once('error', onError);
    // Already over before we listened: its events will not come again.
    if (stream.readableEnded) onEnd();
    else if (stream.destroyed) onClose();
  });
}

/** Read and discard a request body; resolves with its length. */
export function drainBody(stream: Readable): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    stream.on('data', (chunk: Buffer) => {
      n += chunk.length;
    });
    stream.once('end', () => resolve(n));
    stream.once('close', () => reject(new Error('request body incomplete: the stream was closed')));
    if (stream.readableEnded) resolve(n);
    else if (stream.destroyed) reject(new Error('request body incomplete: the stream was closed'));
  });
}

/** Parameters of a non-upload request: JSON body only, or form body merged with the query. */
export function requestParams(schema: ObjectSchema, contentType: string | undefined, body: Buffer, query: URLSearchParams): Params {
  const type = contentType?.split(';')[0].trim().toLowerCase();
  if (type === 'application/json') {
    let v: unknown = {};
    const text = body.toString('utf8');
    if (text.trim() !== '') {
      try {
        v = JSON.parse(text);
      } catch (e) {
        throw new HttpError(400, `request body is not valid JSON: ${(e as Error).message}`);
      }
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new HttpError(400, 'request body must be a JSON object');
    return parseParams(schema, v as Record<string, unknown>, 'json');
  }
  if (type !== undefined && type !== '' && type !== 'application/x-www-form-urlencoded') {
    throw new HttpError(400, `unsupported content type ${JSON.stringify(contentType)}`);
  }
  const entries: Array<[string, string]> = [...new URLSearchParams(body.toString('utf8')), ...query];
  return parseParams(schema, entries, 'form');
}

function streamUsable(stream: ServerHttp2Stream): boolean {
  return !stream.destroyed && !stream.closed && !stream.headersSent;
}

export function respondJson(stream: ServerHttp2Stream, data: unknown): void {
  if (!streamUsable(stream)) return;
  stream.respond({ ':status': 200, 'content-type': JSON_CONTENT_TYPE });
  stream.end(JSON.stringify({ data: data ?? null }));
}

export function respondBytes(stream: ServerHttp2Stream, data: Buffer): void {
  if (!streamUsable(stream)) return;
  stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'content-length': data.length });
  stream.end(data);
}

export function respondError(stream: ServerHttp2Stream, e: unknown): void {
  if (!streamUsable(stream)) return;
  stream.respond({ ':status': statusOf(e), 'content-type': JSON_CONTENT_TYPE });
  stream.end(messageOf(e));
}

export function sendJson(res: ServerResponse, data: unknown): void {
  const body = JSON.stringify({ data: data ?? null });
  res.writeHead(200, { 'content-type': JSON_CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export function sendError(res: ServerResponse, e: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = messageOf(e);
  res.writeHead(statusOf(e), { 'content-type': JSON_CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** An HTTP/1.1 error response written straight to a socket (refused upgrade), then closed. */
export function writeRawError(socket: Duplex, e: unknown): void {
  if (socket.destroyed) return;
  const status = statusOf(e);
  const body = Buffer.from(messageOf(e), 'utf8');
  const head =
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
    `content-type: ${JSON_CONTENT_TYPE}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  socket.end(Buffer.concat([Buffer.from(head, 'latin1'), body]));
}
