/** pxb library entry point. */
export * from './format/dynamic-index.js';
export * from './format/fixed-index.js';
export * from './format/manifest.js';
export * from './format/blob.js';
export * from './format/errors.js';
export { ChunkStream } from './archive/chunk-stream.js';
export type { ChunkRecord, ChunkStreamOptions, InjectChunks, KnownChunk } from './archive/chunk-stream.js';
export { runBenchmark } from './client/benchmark.js';
