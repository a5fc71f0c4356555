/** Errors of the PBS protocol client. */

/** The server answered a request with an error status; `message` names the call. */
export class RemoteError extends Error {
  override name = 'RemoteError';
  constructor(
    readonly status: number,
    readonly path: string,
    /** The server's own message (PBS sends it as the plain body). */
    readonly serverMessage: string,
  ) {
    super(`${path.split('?')[0]}: ${status} ${serverMessage}`);
  }
}

/** The server's TLS certificate is neither trusted nor pinned, or differs from the pinned one. */
export class CertificateError extends Error {
  override name = 'CertificateError';
  constructor(
    message: string,
    /** Fingerprint the server presented (`aa:bb:…`). */
    readonly fingerprint: string,
  ) {
    super(message);
  }
}

/** The connection broke or the server spoke something that is not the PBS protocol. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}
