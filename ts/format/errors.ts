/** A malformed, truncated or hostile input in one of the PBS formats. */
export class FormatError extends Error {
  override name = 'FormatError';
}
