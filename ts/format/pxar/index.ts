/**
 * pxar archive codec: constants, name hash, goodbye-table layout, metadata model, streaming
 * encoder (unified v1 / split v2), sequential decoder and random-access accessor.
 */
export * from './constants.js';
export { hashFilename, sipHash24 } from './siphash.js';
export { binaryTreeArrayOrder, binaryTreeArraySearch } from './binary-tree-array.js';
export * from './metadata.js';
export type { EntryKind, PxarEntry } from './entry.js';
export { PLAIN_RUN_FIELDS, PxarEncoder, type ByteSink, type PxarEncoderOptions } from './encoder.js';
export { PxarDecoder, type ByteSource, type DecoderEvent, type PxarDecoderOptions } from './decoder.js';
export {
  PxarAccessor,
  PxarDirectory,
  type AccessorEntry,
  type PxarAccessorOptions,
  type PxarFileReader,
  type ReadAtSource,
} from './accessor.js';
export { fileNameProblem } from './wire.js';
