#!/usr/bin/env node
// playlog-follow: a playout engine's view of one channel, in Node.js.
//
// Subscribes to playlog.v1.ExecutionWindowService/WatchWindow, keeps the
// channel's window (entries by start) in memory, applies each `replaced`
// event after checking its previous_generation_id against the last generation
// it applied, and follows `progress` events to know what airs now and next.
// After a disconnect it re-subscribes with backoff and jitter, resuming from
// its last applied generation (after_generation_id), so it neither misses nor
// repeats a publish. A break in the generation chain makes it re-subscribe
// from the last generation it holds.
//
// The protos are loaded at run time from ../../protos (override with
// --proto-dir or PLAYLOG_PROTO_DIR); no generated code.
//
// Output: the same lines as the C++ client (clients/cpp/follow.cc):
//
//   SUBSCRIBE target=T channel=C after_generation=G
//   SNAPSHOT generation=G entries=N reset=0|1 complete=0|1
//   REPLACED generation=G previous=P range=[a,b) entries=N override=0|1
//   PROGRESS now=T locked_until=L generation=G
//   ONAIR now=<block_id|-> next=<block_id|-> at=T   (first, then when either changes)
//   STALE generation=G last=L              (already applied: ignored)
//   CHAIN_BREAK generation=G previous=P expected=L
//   STALL idle_ms=N                        (no event, not even progress)
//   DISCONNECT code=<grpc status name>
//   RECONNECT after_generation=G attempt=N delay_ms=D
//   WINDOW generation=G entries=N blocks=a,b,c   (on exit)
//   EXIT reason=max-events|generation|signal|fatal
//
// Usage:
//   node follow.js --target 127.0.0.1:50051 --channel ch1
//                  [--max-events N] [--exit-after-generation G]
//                  [--progress-interval-ms MS] [--idle-timeout-ms MS]
//                  [--max-backoff-ms MS] [--proto-dir DIR]
//                  [--token TOKEN] [--ca-cert PEM]
//                  [--client-cert PEM --client-key PEM]
//
// --token (or env PLAYLOG_TOKEN) sends `authorization: Bearer TOKEN` (a
// principal with the reader role); --ca-cert turns on TLS, trusting that CA;
// --client-cert and --client-key present a client certificate (mutual TLS).
// A failed TLS handshake is explained on stderr at each attempt.
// SIGTERM and SIGINT print the window held and `EXIT reason=signal`, exit 0.
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const tls = require('node:tls');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// ------------------------------------------------------------------ options

function usage(why) {
  process.stderr.write(
    `playlog-follow: ${why}\n` +
      'usage: node follow.js --target HOST:PORT --channel ID [--max-events N]\n' +
      '                      [--exit-after-generation G] [--progress-interval-ms MS]\n' +
      '                      [--idle-timeout-ms MS] [--max-backoff-ms MS] [--proto-dir DIR]\n' +
      '                      [--token TOKEN] [--ca-cert PEM]\n' +
      '                      [--client-cert PEM --client-key PEM]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    target: '',
    channel: '',
    maxEvents: 0,
    exitAfterGeneration: null,
    progressIntervalMs: 0,
    idleTimeoutMs: 0,
    initialBackoffMs: 100,
    maxBackoffMs: 5000,
    protoDir: process.env.PLAYLOG_PROTO_DIR || path.resolve(__dirname, '..', '..', 'protos'),
    token: process.env.PLAYLOG_TOKEN || '',
    caCert: '',
    clientCert: '',
    clientKey: '',
  };
  const int = (flag, v) => {
    if (!/^\d+$/.test(v)) usage(`${flag} needs a non-negative integer, got '${v}'`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq >= 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '--help' || arg === '-h') usage("follows one channel's execution window");
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      value = argv[++i];
    }
    switch (arg) {
      case '--target':
        o.target = value;
        break;
      case '--channel':
        o.channel = value;
        break;
      case '--max-events':
        o.maxEvents = Number(int(arg, value));
        break;
      case '--exit-after-generation':
        o.exitAfterGeneration = BigInt(int(arg, value));
        break;
      case '--progress-interval-ms':
        o.progressIntervalMs = Number(int(arg, value));
        break;
      case '--idle-timeout-ms':
        o.idleTimeoutMs = Number(int(arg, value));
        break;
      case '--max-backoff-ms':
        o.maxBackoffMs = Math.max(1, Number(int(arg, value)));
        break;
      case '--proto-dir':
        o.protoDir = value;
        break;
      case '--token':
        o.token = value;
        break;
      case '--ca-cert':
        o.caCert = value;
        break;
      case '--client-cert':
        o.clientCert = value;
        break;
      case '--client-key':
        o.clientKey = value;
        break;
      default:
        usage(`unknown option ${arg}`);
    }
  }
  if (!o.target) usage('--target is required');
  if (!o.channel) usage('--channel is required');
  if (!o.clientCert !== !o.clientKey) usage('--client-cert and --client-key go together');
  if (!o.idleTimeoutMs) {
    // Progress events are the heartbeat: several missed ones mean a dead peer.
    o.idleTimeoutMs = Math.max(10000, 5 * (o.progressIntervalMs || 1000));
  }
  return o;
}

// ------------------------------------------------------------------- output

function emit(line) {
  // Writes to a pipe or a file are synchronous on Linux: one line, flushed.
  process.stdout.write(line + '\n');
}

const STATUS_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));
const statusName = (code) => STATUS_NAMES[code] || 'UNKNOWN';

// Codes that retrying cannot fix: the request or the credentials are wrong.
const FATAL = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNIMPLEMENTED,
]);

// A stream that ends UNAVAILABLE before any event over TLS: a handshake the
// server refused (no or unknown client certificate) or one the client refused
// (a server certificate not signed by --ca-cert), as grpc-js words them.
function looksLikeTls(status) {
  if (status.code !== grpc.status.UNAVAILABLE) return false;
  return /handshake|certificate|ssl|tls|alert|verify|self.signed|altname|socket closed|connection dropped|ECONNRESET/i.test(
    status.details || '',
  );
}

// A TLS error, as Node's tls module reports it (not a refused or reset TCP connection).
function isTlsError(err) {
  if (/^(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ETIMEDOUT)$/.test(err.code || '')) return false;
  return /SSL|TLS|CERT|SIGNATURE|SELF_SIGNED|UNABLE_TO|ECONNRESET|EPIPE|closed during the handshake/i.test(
    `${err.code || ''} ${err.message}`,
  );
}

// Connects to the target as grpc-js would (same CA, client certificate, ALPN
// h2) and resolves with the error that ends the handshake, or null if it
// holds (the server sends its HTTP/2 settings). A TLS 1.3 server refuses a
// client certificate only after the client's side of the handshake is done,
// by closing the connection: that is reported too.
function tlsProbe(target, files) {
  return new Promise((resolve) => {
    const t = target.replace(/^dns:\/{0,3}/, '');
    const colon = t.lastIndexOf(':');
    const host = t.slice(0, colon).replace(/^\[|\]$/g, '');
    const port = Number(t.slice(colon + 1));
    let settled = false;
    let timer = null;
    const done = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(err);
    };
    const socket = tls.connect({
      host,
      port,
      ca: files.ca || undefined,
      key: files.key || undefined,
      cert: files.cert || undefined,
      servername: net.isIP(host) ? undefined : host,
      ALPNProtocols: ['h2'],
    });
    let secure = false;
    const closed = () => {
      const err = new Error(
        secure
          ? 'the server closed the connection right after the TLS handshake, before a word of ' +
              'HTTP/2: it wants a client certificate (or another one)'
          : 'the server closed the connection during the TLS handshake',
      );
      err.code = 'TLS_CLOSED';
      done(err);
    };
    socket.on('error', done);
    socket.on('end', closed);
    socket.on('close', closed);
    socket.on('secureConnect', () => {
      secure = true;
      clearTimeout(timer);
      timer = setTimeout(() => done(null), 500);
    });
    socket.on('data', () => done(null)); // the server spoke HTTP/2: the handshake held
    timer = setTimeout(() => done(new Error('no TLS answer within 5 s')), 5000);
  });
}

// ------------------------------------------------------------------- window

// 64-bit fields arrive as decimal strings (longs: String): BigInt keeps them exact.
const big = (v) => BigInt(v || 0);

// The channel's entries by start. Entries never overlap (the server keeps
// them one gap-free sequence), so start orders them.
class Window {
  constructor() {
    this.entries = [];
  }

  resetTo(entries) {
    this.entries = entries.slice();
    this.sort();
  }

  // Every entry overlapping [start, end) gives way to `entries`.
  replace(start, end, entries) {
    this.entries = this.entries.filter((e) => !(big(e.start_utc_ms) < end && big(e.end_utc_ms) > start));
    this.entries.push(...entries);
    this.sort();
  }

  // Aired entries are history: publishes never touch them again.
  pruneBefore(now) {
    this.entries = this.entries.filter((e) => big(e.end_utc_ms) > now);
  }

  // What airs at `now`, and the entry after it (or the first one to come).
  onAir(now) {
    let cur = '-';
    let next = '-';
    for (const e of this.entries) {
      const start = big(e.start_utc_ms);
      if (start <= now && big(e.end_utc_ms) > now) cur = e.block_id;
      if (start > now) {
        next = e.block_id;
        break;
      }
    }
    return [cur, next];
  }

  sort() {
    this.entries.sort((a, b) => {
      const d = big(a.start_utc_ms) - big(b.start_utc_ms);
      return d < 0n ? -1 : d > 0n ? 1 : 0;
    });
  }

  get size() {
    return this.entries.length;
  }

  blockList() {
    return this.entries.map((e) => e.block_id).join(',') || '-';
  }
}

// ----------------------------------------------------------------- follower

class Follower {
  constructor(opts) {
    this.opts = opts;
    const def = protoLoader.loadSync('playlog/v1/execution_window_service.proto', {
      includeDirs: [opts.protoDir],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(def);
    let creds = grpc.credentials.createInsecure();
    this.tls = Boolean(opts.caCert || opts.clientCert);
    if (this.tls) {
      const read = (flag, file) => {
        if (!file) return null;
        try {
          return fs.readFileSync(file);
        } catch (err) {
          return usage(`cannot read ${flag} ${file}: ${err.message}`);
        }
      };
      // Without --ca-cert the system's CAs are trusted.
      this.tlsFiles = {
        ca: read('--ca-cert', opts.caCert),
        key: read('--client-key', opts.clientKey),
        cert: read('--client-cert', opts.clientCert),
      };
      creds = grpc.credentials.createSsl(this.tlsFiles.ca, this.tlsFiles.key, this.tlsFiles.cert);
    }
    this.metadata = new grpc.Metadata();
    if (opts.token) this.metadata.add('authorization', `Bearer ${opts.token}`);
    this.client = new pkg.playlog.v1.ExecutionWindowService(opts.target, creds, {
      // Reconnect promptly after a server restart; our own backoff paces calls.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': opts.maxBackoffMs,
    });
    this.window = new Window();
    this.haveState = false;
    this.lastGeneration = 0n;
    this.staging = null; // entries of a snapshot still arriving
    this.now = null;
    this.events = 0;
    this.attempt = 0;
    this.lastOnAir = null; // the ONAIR line's `now next`, printed only when it changes
    this.exited = false;
  }

  resumeFrom() {
    // A holder of state resumes after what it holds; otherwise a fresh snapshot.
    return this.haveState ? this.lastGeneration : 0n;
  }

  start() {
    for (const sig of ['SIGTERM', 'SIGINT']) {
      process.on(sig, () => {
        // Whatever is in flight, the window held so far is the answer.
        this.exit('signal', 0);
        process.exit(); // with process.exitCode: 0, or that of an exit already made

      });
    }
    emit(`SUBSCRIBE target=${this.opts.target} channel=${this.opts.channel} after_generation=${this.resumeFrom()}`);
    this.stream();
  }

  stream() {
    const o = this.opts;
    const call = this.client.WatchWindow({
      channel_id: o.channel,
      after_generation_id: this.resumeFrom().toString(),
      progress_interval_ms: String(o.progressIntervalMs),
    }, this.metadata);
    let settled = false;
    let stopped = null; // why we ended the stream ourselves
    let gotEvents = false;
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        stopped = 'stall';
        emit(`STALL idle_ms=${o.idleTimeoutMs}`);
        call.cancel();
      }, o.idleTimeoutMs);
    };
    arm();

    const finish = (status) => {
      if (settled) return;
      settled = true;
      clearTimeout(watchdog);
      this.staging = null; // an unfinished snapshot is worthless
      if (gotEvents) this.attempt = 0;
      if (stopped === 'done') return this.exit(this.doneReason, 0);
      if (stopped === null) {
        emit(`DISCONNECT code=${statusName(status.code)}`);
        if (FATAL.has(status.code)) {
          this.explain(status, null);
          return this.exit('fatal', 2);
        }
        if (this.tls && !gotEvents && status.code === grpc.status.UNAVAILABLE) {
          // grpc-js keeps a handshake's reason to itself ("Failed to connect"):
          // ask for it with a TLS connection of our own, then retry.
          return tlsProbe(this.opts.target, this.tlsFiles).then((err) => {
            this.explain(status, err);
            if (!this.exited) this.reconnect();
          });
        }
        this.explain(status, null);
      }
      this.reconnect();
    };

    call.on('data', (ev) => {
      if (stopped !== null) return;
      arm();
      gotEvents = true;
      this.events += 1;
      let step = this.handle(ev);
      if (step === 'continue' && o.maxEvents > 0 && this.events >= o.maxEvents) {
        step = 'done';
        this.doneReason = 'max-events';
      }
      if (step !== 'continue') {
        stopped = step;
        call.cancel();
      }
    });
    call.on('error', (err) => finish({ code: err.code, details: err.details }));
    call.on('status', (status) => finish(status));
  }

  // One stderr line per failed attempt: why, and what to check if it is TLS.
  explain(status, probeError) {
    let why = null;
    if (probeError && isTlsError(probeError)) {
      why = `${probeError.code || 'error'}: ${probeError.message}`;
    } else if (this.tls && looksLikeTls(status)) {
      why = status.details;
    }
    if (why !== null) {
      process.stderr.write(
        `playlog-follow: TLS handshake failed: ${why}` +
          " (check --ca-cert / --client-cert / --client-key and the server's --tls-client-ca)\n",
      );
    } else if (status.details) {
      const more = probeError ? ` (${probeError.code || probeError.message})` : '';
      process.stderr.write(`playlog-follow: stream ended: ${statusName(status.code)}: ${status.details}${more}\n`);
    }
  }

  reconnect() {
    const o = this.opts;
    // Backoff with jitter: half the step fixed, half random.
    let step = o.initialBackoffMs;
    for (let i = 0; i < this.attempt && step < o.maxBackoffMs; i++) step *= 2;
    step = Math.min(step, o.maxBackoffMs);
    const half = Math.floor(step / 2);
    const delay = step - half + Math.floor(Math.random() * (half + 1));
    this.attempt += 1;
    setTimeout(() => {
      emit(`RECONNECT after_generation=${this.resumeFrom()} attempt=${this.attempt} delay_ms=${delay}`);
      this.stream();
    }, delay);
  }

  handle(ev) {
    switch (ev.event) {
      case 'snapshot':
        return this.onSnapshot(ev.snapshot);
      case 'replaced':
        return this.onReplaced(ev.replaced);
      case 'progress':
        return this.onProgress(ev.progress);
      default:
        emit('UNKNOWN_EVENT'); // a newer server: ignore what we do not know
        return 'continue';
    }
  }

  onSnapshot(s) {
    if (this.staging === null) this.staging = [];
    this.staging.push(...s.entries);
    emit(
      `SNAPSHOT generation=${s.channel_generation_id} entries=${s.entries.length}` +
        ` reset=${s.reset ? 1 : 0} complete=${s.complete ? 1 : 0}`,
    );
    if (!s.complete) return 'continue';
    // A whole snapshot is the state from now on: it replaces everything held.
    this.window.resetTo(this.staging);
    this.staging = null;
    this.haveState = true;
    this.lastGeneration = big(s.channel_generation_id);
    this.now = big(s.now_utc_ms);
    this.window.pruneBefore(this.now);
    this.emitOnAir();
    return this.checkGeneration();
  }

  onReplaced(r) {
    const generation = big(r.generation_id);
    const previous = big(r.previous_generation_id);
    if (!this.haveState || this.staging !== null) {
      emit(`CHAIN_BREAK generation=${generation} previous=${previous} expected=snapshot`);
      return 'resubscribe';
    }
    if (generation <= this.lastGeneration) {
      emit(`STALE generation=${generation} last=${this.lastGeneration}`);
      return 'continue';
    }
    if (previous !== this.lastGeneration) {
      emit(`CHAIN_BREAK generation=${generation} previous=${previous} expected=${this.lastGeneration}`);
      return 'resubscribe';
    }
    const start = big(r.range_start_utc_ms);
    const end = big(r.range_end_utc_ms);
    this.window.replace(start, end, r.entries);
    this.lastGeneration = generation;
    emit(
      `REPLACED generation=${generation} previous=${previous} range=[${start},${end})` +
        ` entries=${r.entries.length} override=${r.operator_override ? 1 : 0}`,
    );
    this.emitOnAir();
    return this.checkGeneration();
  }

  onProgress(p) {
    emit(`PROGRESS now=${p.now_utc_ms} locked_until=${p.locked_until_utc_ms} generation=${p.channel_generation_id}`);
    this.now = big(p.now_utc_ms);
    this.window.pruneBefore(this.now);
    this.emitOnAir();
    return 'continue';
  }

  emitOnAir() {
    if (this.now === null) return;
    const [cur, next] = this.window.onAir(this.now);
    const onAir = `${cur} ${next}`;
    if (onAir === this.lastOnAir) return; // nothing changed on air or next
    this.lastOnAir = onAir;
    emit(`ONAIR now=${cur} next=${next} at=${this.now}`);
  }

  checkGeneration() {
    const g = this.opts.exitAfterGeneration;
    if (g !== null && this.haveState && this.lastGeneration >= g) {
      this.doneReason = 'generation';
      return 'done';
    }
    return 'continue';
  }

  exit(reason, code) {
    if (this.exited) return;
    this.exited = true;
    emit(`WINDOW generation=${this.lastGeneration} entries=${this.window.size} blocks=${this.window.blockList()}`);
    emit(`EXIT reason=${reason}`);
    this.client.close();
    process.exitCode = code;
  }
}

new Follower(parseArgs(process.argv.slice(2))).start();
