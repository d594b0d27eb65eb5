#!/usr/bin/env node
// tus peer for the Transfer upload benchmark.
//
//   node bench/tus/server.mjs --port PORT --dir DIR [--host 127.0.0.1] [--request-timeout-ms MS]
//
// Starts @tus/server with @tus/file-store writing into DIR, serving the tus
// protocol at path /files. PORT 0 picks a free port. When the socket accepts
// connections, exactly one line `listening <port>` is written to stdout; nothing
// else ever goes to stdout (errors go to stderr). Runs until SIGTERM/SIGINT.
//
// Everything else is left at @tus/server's (and Node's http.Server's) defaults:
// absolute Location URLs built from the request's Host header, in-memory
// locker, no max size, no expiration, no checksum extension.
//
// Note: Node's http.Server aborts any request still running after
// requestTimeout (300 s by default in Node 18+), which a single-PATCH upload of
// several GiB over a slow emulated link can exceed. --request-timeout-ms
// overrides it (0 disables it); without the flag Node's default is kept.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

function fail(message) {
  process.stderr.write(`tus server: ${message}\n`);
  process.exit(1);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string' },
      dir: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      'request-timeout-ms': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  fail(`${err.message}\nusage: node server.mjs --port PORT --dir DIR [--host HOST] [--request-timeout-ms MS]`);
}
if (args.port === undefined || args.dir === undefined) {
  fail('usage: node server.mjs --port PORT --dir DIR [--host HOST] [--request-timeout-ms MS]');
}
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  fail(`invalid --port ${JSON.stringify(args.port)}`);
}

let requestTimeout;
if (args['request-timeout-ms'] !== undefined) {
  requestTimeout = Number(args['request-timeout-ms']);
  if (!Number.isSafeInteger(requestTimeout) || requestTimeout < 0) {
    fail(`invalid --request-timeout-ms ${JSON.stringify(args['request-timeout-ms'])}`);
  }
}

const directory = path.resolve(args.dir);
// FileStore creates the directory asynchronously in its constructor; create it
// up front so it exists before the first request can arrive.
fs.mkdirSync(directory, { recursive: true });

const tus = new Server({
  path: '/files',
  datastore: new FileStore({ directory }),
});

// Same as what Server#listen does (http.createServer(tus.handle)), kept as a
// handle so it can be closed on a signal.
const httpServer = tus.listen({ port, host: args.host });
if (requestTimeout !== undefined) {
  httpServer.requestTimeout = requestTimeout;
}

httpServer.on('error', (err) => fail(err.stack || String(err)));
httpServer.once('listening', () => {
  process.stdout.write(`listening ${httpServer.address().port}\n`);
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  // Drop idle keep-alive and in-flight connections, then exit.
  httpServer.close(() => process.exit(0));
  httpServer.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
