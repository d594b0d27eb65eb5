#!/usr/bin/env node
// tus client for the Transfer upload benchmark.
//
//   node bench/tus/upload.mjs --endpoint http://127.0.0.1:PORT/files --file PATH [--chunk-size BYTES]
//
// Uploads PATH with tus-js-client (Node build): one POST to create the upload,
// then either a single PATCH carrying the whole file (default, chunkSize
// Infinity) or sequential PATCHes of --chunk-size bytes, each sent after the
// previous one was acknowledged.
//
// The file is handed to tus-js-client as an fs.ReadStream. tus-js-client only
// takes its path from it and, for every PATCH, opens a fresh fs.createReadStream
// over the byte range and pipes it into the request (with Content-Length), so
// the file is streamed from disk and never held in memory, in both modes.
// (A generic Readable would instead be buffered chunk by chunk and requires a
// finite chunkSize; a Buffer would need the whole file in memory.)
//
// No fingerprint / URL storage (nothing to resume) and no retries, so one run
// measures exactly one upload. On success prints one JSON line
//   {"bytes": N, "seconds": S, "url": "..."}
// where seconds is the wall time from upload.start() until onSuccess.
// On failure prints the error to stderr and exits 1.

import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Upload } from 'tus-js-client';

const USAGE =
  'usage: node upload.mjs --endpoint http://HOST:PORT/files --file PATH [--chunk-size BYTES]';

function fail(message) {
  process.stderr.write(`tus upload: ${message}\n`);
  process.exit(1);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      endpoint: { type: 'string' },
      file: { type: 'string' },
      'chunk-size': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  fail(`${err.message}\n${USAGE}`);
}
if (args.endpoint === undefined || args.file === undefined) {
  fail(USAGE);
}

let chunkSize = Number.POSITIVE_INFINITY;
if (args['chunk-size'] !== undefined) {
  chunkSize = Number(args['chunk-size']);
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) {
    fail(`invalid --chunk-size ${JSON.stringify(args['chunk-size'])}`);
  }
}

let size;
try {
  const st = fs.statSync(args.file);
  if (!st.isFile()) fail(`${args.file} is not a regular file`);
  size = st.size;
} catch (err) {
  fail(err.message);
}

// Only its path (and start/end, unset here) is used by tus-js-client; it is
// never read itself and is destroyed by tus-js-client when the upload ends.
const input = fs.createReadStream(args.file);
input.on('error', (err) => fail(`reading ${args.file}: ${err.message}`));

let t0;
const upload = new Upload(input, {
  endpoint: args.endpoint,
  chunkSize,
  uploadSize: size,
  retryDelays: null,
  // No resumability bookkeeping: no fingerprint, nothing stored.
  fingerprint: () => Promise.resolve(null),
  storeFingerprintForResuming: false,
  removeFingerprintOnSuccess: false,
  onSuccess() {
    const seconds = (performance.now() - t0) / 1000;
    const line = JSON.stringify({ bytes: size, seconds, url: upload.url });
    process.stdout.write(`${line}\n`, () => process.exit(0));
  },
  onError(err) {
    fail(err && err.stack ? err.stack : String(err));
  },
});

t0 = performance.now();
upload.start();
