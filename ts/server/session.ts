/**
 * Request dispatch of an upgraded HTTP/2 session (backup or reader), shared by both protocols:
 * endpoint lookup in the protocol table, parameter checks, bounded concurrency, error replies.
 *
 * Invariants:
 *  - Every stream gets exactly one reply (or is reset by the peer); no handler error escapes.
 *  - At most `heavySlots` upload/download streams are being handled at once; the rest wait
 *    unread, so the memory a session holds is bounded by the slots and the HTTP/2 windows.
 *  - `end()` refuses new requests, waits for the ones running, then runs `onEnd` once.
 */
import { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_REQUEST_BODY } from '../protocol/constants.js';
import { findEndpoint, type Endpoint } from '../protocol/endpoints.js';
import { HttpError, badRequest, messageOf, notFound, statusOf } from '../protocol/errors.js';
import { parseParams, type Params } from '../protocol/params.js';
import { Semaphore } from '../protocol/semaphore.js';
import { readBody, requestParams, respondBytes, respondError, respondJson } from './http.js';

export interface SessionOptions {
  /** Delay before answering 401, as PBS does against guessing (ms). */
  authFailureDelayMs: number;
  log: (message: string) => void;
  /** Upload/download streams handled at once (default 16). */
  heavySlots?: number;
}

export abstract class ProtocolSession {
  private readonly inflight = new Set<Promise<void>>();
  private readonly slots: Semaphore;
  private closing = false;
  private ended: Promise<void> | null = null;

  protected constructor(
    private readonly endpoints: readonly Endpoint[],
    protected readonly options: SessionOptions,
  ) {
    this.slots = new Semaphore(options.heavySlots ?? 16);
  }

  /** Name used in log lines, e.g. `backup host/x/2024-…`. */
  abstract readonly label: string;

  /** Handle one request; a Buffer is sent as octet-stream, anything else as `{"data": …}`. */
  protected abstract handle(ep: Endpoint, params: Params, stream: ServerHttp2Stream): Promise<unknown>;

  /** Runs once after the connection ended and every request finished. */
  protected abstract onEnd(): Promise<void>;

  protected log(message: string): void {
    this.options.log(`${this.label}: ${message}`);
  }

  get isClosing(): boolean {
    return this.closing;
  }

  dispatch(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => undefined); // peer resets surface as 'close'; nothing to do
    // run() answers every error itself; the catch only guards against a throwing reply.
    const p = this.run(stream, headers).catch(() => {
      stream.destroy();
    });
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private async run(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    const method = String(headers[':method'] ?? '');
    const rawPath = String(headers[':path'] ?? '');
    const q = rawPath.indexOf('?');
    const pathname = q < 0 ? rawPath : rawPath.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : rawPath.slice(q + 1));
    let release: (() => void) | null = null;
    try {
      if (this.closing) throw new HttpError(503, 'session is shutting down');
      const ep = findEndpoint(this.endpoints, method, pathname);
      if (!ep) {
        stream.resume();
        throw notFound(`Path '${pathname}' not found.`);
      }
      let params: Params;
      if (ep.kind === 'json') {
        const body = await readBody(stream, MAX_REQUEST_BODY, () => badRequest('Request body too large'));
        params = requestParams(ep.params, headers['content-type'], body, query);
      } else {
        if (ep.kind === 'download') stream.resume();
        params = parseParams(ep.params, query, 'form');
        release = await this.slots.acquire();
        if (stream.closed || stream.destroyed) {
          // cancelled (RST_STREAM) while it waited for a slot: nothing to handle, and its
          // body's end/close events are long gone (a handler would wait for them forever)
          release();
          return;
        }
        stream.once('close', release);
      }
      const result = await this.handle(ep, params, stream);
      if (Buffer.isBuffer(result)) respondBytes(stream, result);
      else respondJson(stream, result);
    } catch (e) {
      if (stream.destroyed || stream.closed) return;
      this.log(`${method} ${pathname}: ${statusOf(e)} ${messageOf(e)}`);
      if (statusOf(e) === 401 && this.options.authFailureDelayMs > 0) await sleep(this.options.authFailureDelayMs);
      respondError(stream, e);
      // The request body was not read (refused before upload): ask the client to stop
      // sending it, after the response (RST_STREAM NO_ERROR, RFC 9113 §8.1).
      if (!stream.readableEnded) stream.close(constants.NGHTTP2_NO_ERROR);
    } finally {
      if (release && (stream.closed || stream.destroyed)) release();
    }
  }

  /** Stop accepting requests, let running ones finish, then clean up (once). */
  end(): Promise<void> {
    this.ended ??= (async () => {
      this.closing = true;
      while (this.inflight.size) await Promise.allSettled([...this.inflight]);
      try {
        await this.onEnd();
      } catch (e) {
        this.log(`cleanup failed: ${messageOf(e)}`);
      }
    })();
    return this.ended;
  }
}
