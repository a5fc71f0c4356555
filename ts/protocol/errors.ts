/**
 * Errors that carry an HTTP status (PBS `http_err!`). On the wire an error is a non-2xx status
 * with the plain message as body (spec protocol.md §1); any other error thrown by a handler
 * becomes 400 Bad Request, as in PBS.
 */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export const badRequest = (message: string) => new HttpError(400, message);
export const unauthorized = (message: string) => new HttpError(401, message);
export const forbidden = (message: string) => new HttpError(403, message);
export const notFound = (message: string) => new HttpError(404, message);

/** Status for an error thrown while handling a request. */
export function statusOf(e: unknown): number {
  return e instanceof HttpError ? e.status : 400;
}

export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
