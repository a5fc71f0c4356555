/**
 * API token authentication (spec protocol.md §2.1):
 *
 *   Authorization: PBSAPIToken <user>@<realm>!<tokenname>:<secret>
 *
 * The separator after `PBSAPIToken` is a space or `=`; the secret is percent-encoded by the
 * client and percent-decoded by the server. Token ids follow PBS: user name (no whitespace,
 * `:`, `/`, `@`, `!`, control characters; at most 64 characters), realm and token name SAFE_IDs
 * (realm at most 32 characters).
 */
export const TOKEN_ID_RE = /^([^\s:/@!\p{Cc}]{1,64})@([A-Za-z0-9_][A-Za-z0-9._-]{0,31})!([A-Za-z0-9_][A-Za-z0-9._-]*)$/u;

export interface TokenCredentials {
  tokenId: string;
  secret: string;
}

export function isTokenId(s: string): boolean {
  return s.length <= 256 && TOKEN_ID_RE.test(s);
}

export function validateTokenId(s: string): void {
  if (!isTokenId(s)) throw new Error(`invalid API token id ${JSON.stringify(s)} (expected user@realm!tokenname)`);
}

/** The `Authorization` header value the PBS client sends. */
export function formatTokenAuthorization(tokenId: string, secret: string): string {
  validateTokenId(tokenId);
  return `PBSAPIToken=${tokenId}:${encodeURIComponent(secret)}`;
}

/**
 * Credentials in an `Authorization` header; null when the header carries none (missing or
 * another scheme). Throws on a malformed PBSAPIToken value.
 */
export function parseAuthorization(value: string | undefined): TokenCredentials | null {
  if (value === undefined || !/^PBSAPIToken[ =]/.test(value)) return null;
  const rest = value.slice('PBSAPIToken '.length);
  const colon = rest.indexOf(':');
  if (colon < 0) throw new Error('malformed API token (expected <user>@<realm>!<token>:<secret>)');
  const tokenId = rest.slice(0, colon);
  if (!isTokenId(tokenId)) throw new Error('malformed API token id');
  let secret: string;
  try {
    secret = decodeURIComponent(rest.slice(colon + 1));
  } catch {
    throw new Error('malformed API token secret (bad percent-encoding)');
  }
  return { tokenId, secret };
}
