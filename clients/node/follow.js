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
// Failover: --target takes several addresses (repeated, or comma-separated),
// replicas of one service sharing one store. When the stream ends, the next
// attempt goes to the next address, resuming from the last applied
// generation, so a dead replica costs nothing but the reconnect.
//
// Engine reports (SPEC section 12, EngineService): after applying each
// generation the follower acknowledges it (AcknowledgeWindow); with
// --nack-asset it refuses (NACKs) a generation whose entries name a matching
// asset, keeping the window it had, as an engine refuses an asset it cannot
// load. As the server's clock (progress events' now) passes each segment of
// the window, its simulated playout reports an as-run event (AIRED, or
// CUT_SHORT for the last segment of a block cut while on air) with a stable
// event_id. Acknowledgements and as-run are queued and retried, with the same
// event ids, until the server has answered them (it stores a retry once).
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
//   RECONNECT after_generation=G attempt=N delay_ms=D target=T
//   NACK generation=G previous=P asset=URI  (refused: the window held stays)
//   ASRUN event_id=E block=B generation=G segment=S asset=URI start=a end=b status=AIRED|CUT_SHORT
//   ASRUN_SKIP block=B segment=S           (--skip-as-run)
//   ACKED generation=G accepted=0|1 channel_generation=N   (the server stored it)
//   ASRUN_SENT events=N stored=S duplicates=D              (the server stored them)
//   REPORT_REFUSED what=ack|as-run error=CODE              (a domain refusal: dropped)
//   REPORT_RETRY what=ack|as-run attempt=N delay_ms=D target=T
//   REPORTS_OFF code=<grpc status name>    (the server has no EngineService, or refuses us)
//   PENDING acks=N as_run=M                (on exit, with reports on)
//   WINDOW generation=G entries=N blocks=a,b,c   (on exit)
//   EXIT reason=max-events|generation|signal|fatal
//
// Usage:
//   node follow.js --target 127.0.0.1:50051[,HOST:PORT...] --channel ch1
//                  [--target HOST:PORT ...] [--max-events N] [--exit-after-generation G]
//                  [--progress-interval-ms MS] [--idle-timeout-ms MS]
//                  [--max-backoff-ms MS] [--proto-dir DIR]
//                  [--token TOKEN] [--ca-cert PEM]
//                  [--client-cert PEM --client-key PEM]
//                  [--engine-id ID] [--no-report] [--nack-asset SUBSTRING]
//                  [--skip-as-run BLOCK_ID] [--late-start BLOCK_ID=MS]
//
// --server is another name for --target. --engine-id (default "node")
// prefixes the as-run event ids; the server's engine id is the authenticated
// principal. --skip-as-run (repeatable) reports nothing for a block,
// --late-start reports a block's first segment as started MS late: planted
// faults, for reconciliation tests. --no-report turns acknowledgements and
// as-run off.
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
      'usage: node follow.js --target HOST:PORT[,HOST:PORT...] --channel ID\n' +
      '                      [--target HOST:PORT ...] [--max-events N]\n' +
      '                      [--exit-after-generation G] [--progress-interval-ms MS]\n' +
      '                      [--idle-timeout-ms MS] [--max-backoff-ms MS] [--proto-dir DIR]\n' +
      '                      [--token TOKEN] [--ca-cert PEM]\n' +
      '                      [--client-cert PEM --client-key PEM]\n' +
      '                      [--engine-id ID] [--no-report] [--nack-asset SUBSTRING]\n' +
      '                      [--skip-as-run BLOCK_ID] [--late-start BLOCK_ID=MS]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    targets: [], // replicas, tried in turn
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
    report: true, // acknowledgements and as-run
    engineId: 'node', // prefix of as-run event ids
    nackAsset: '', // refuse generations naming such an asset
    skipAsRun: new Set(), // blocks not reported (a planted fault)
    lateStart: new Map(), // block -> ms reported late
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
    if (arg === '--no-report') {
      if (value !== undefined) usage('--no-report takes no value');
      o.report = false;
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      value = argv[++i];
    }
    switch (arg) {
      case '--target':
      case '--server':
        // Repeated, or comma-separated: replicas to fail over between.
        o.targets.push(...value.split(',').filter((t) => t));
        break;
      case '--engine-id':
        o.engineId = value;
        break;
      case '--nack-asset':
        o.nackAsset = value;
        break;
      case '--skip-as-run':
        o.skipAsRun.add(value);
        break;
      case '--late-start': {
        const at = value.lastIndexOf('=');
        if (at <= 0) usage(`--late-start needs BLOCK_ID=MS, got '${value}'`);
        o.lateStart.set(value.slice(0, at), BigInt(int(arg, value.slice(at + 1))));
        break;
      }
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
  if (!o.targets.length) usage('--target is required');
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

// The wait before retry number `attempt` + 1: exponential from
// initialBackoffMs to --max-backoff-ms, half of each step fixed, half random.
function backoffMs(o, attempt) {
  let step = o.initialBackoffMs;
  for (let i = 0; i < attempt && step < o.maxBackoffMs; i++) step *= 2;
  step = Math.min(step, o.maxBackoffMs);
  const half = Math.floor(step / 2);
  return step - half + Math.floor(Math.random() * (half + 1));
}

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

const cutKey = (e) => `${e.block_id}@${e.start_utc_ms}`;

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

// ----------------------------------------------------------------- reporter

// Sends the engine's acknowledgements and as-run events (EngineService), one
// call at a time, beside the stream. Everything is queued and retried with
// backoff, on the next replica each time, with the same content (as-run
// event ids included) until the server has answered: the server stores a
// retried event once and answers it as a duplicate.
class Reporter {
  constructor(opts, clients, metadata) {
    this.opts = opts;
    this.clients = clients; // EngineService, one per replica
    this.metadata = metadata;
    this.acks = [];
    this.asRun = [];
    this.current = 0;
    this.attempt = 0;
    this.busy = false;
    this.off = false;
    this.stopped = false;
    this.timer = null;
    this.call = null;
  }

  ack(generation, accepted, detail) {
    if (this.off) return;
    this.acks.push({ generation, accepted, detail });
    this.kick();
  }

  report(event) {
    if (this.off) return;
    this.asRun.push(event);
    this.kick();
  }

  // Ends the work (a call in flight is cancelled); what is left is pending.
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.call) this.call.cancel();
  }

  pending() {
    return [this.acks.length, this.asRun.length];
  }

  kick() {
    if (this.busy || this.stopped || this.off) return;
    if (!this.acks.length && !this.asRun.length) return;
    this.busy = true;
    // On the next turn: what this one queues (a progress event's as-run)
    // goes in one report.
    setImmediate(() => this.send());
  }

  send() {
    if (this.stopped) return;
    // An acceptance followed by a later one says nothing the later one does
    // not; a NACK is always sent.
    this.acks = this.acks.filter((a, i) => !(a.accepted && this.acks.slice(i + 1).some((b) => b.accepted)));
    const isAck = this.acks.length > 0;
    const what = isAck ? 'ack' : 'as-run';
    const target = this.current;
    const client = this.clients[target];
    const options = { deadline: new Date(Date.now() + 5000) };
    const batch = isAck ? 0 : Math.min(100, this.asRun.length);
    const done = (err, resp) => {
      this.call = null;
      if (this.stopped) return; // cancelled by stop(): still pending
      this.answered(what, target, batch, err, resp);
    };
    if (isAck) {
      const a = this.acks[0];
      const req = {
        channel_id: this.opts.channel,
        applied_generation_id: a.generation.toString(),
        accepted: a.accepted,
        detail: a.detail,
      };
      this.call = client.AcknowledgeWindow(req, this.metadata, options, done);
    } else {
      const req = { channel_id: this.opts.channel, events: this.asRun.slice(0, batch) };
      this.call = client.ReportAsRun(req, this.metadata, options, done);
    }
  }

  answered(what, target, batch, err, resp) {
    const drop = () => (what === 'ack' ? this.acks.shift() : this.asRun.splice(0, batch));
    if (!err) {
      this.attempt = 0;
      if (what === 'ack') {
        const a = this.acks[0];
        if (resp.ok) {
          emit(
            `ACKED generation=${a.generation} accepted=${a.accepted ? 1 : 0}` +
              ` channel_generation=${resp.channel_generation_id}`,
          );
        } else {
          this.refused(what, resp.error_code, resp.error_detail);
        }
      } else if (resp.ok) {
        emit(`ASRUN_SENT events=${batch} stored=${resp.stored} duplicates=${resp.duplicates}`);
      } else {
        this.refused(what, resp.error_code, resp.error_detail);
      }
      drop();
      this.busy = false;
      return this.kick();
    }
    const code = err.code;
    if ([grpc.status.UNIMPLEMENTED, grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED].includes(code)) {
      // A server without EngineService, or credentials without the engine
      // role: following still works; reporting cannot.
      this.off = true;
      this.acks = [];
      this.asRun = [];
      this.busy = false;
      emit(`REPORTS_OFF code=${statusName(code)}`);
      process.stderr.write(
        `playlog-follow: engine reports off: ${this.opts.targets[target]} answered ${statusName(code)}: ${err.details}\n`,
      );
      return undefined;
    }
    if (code === grpc.status.INVALID_ARGUMENT) {
      // Malformed: a retry cannot fix it.
      this.refused(what, statusName(code), err.details);
      drop();
      this.busy = false;
      return this.kick();
    }
    // Unavailable, deadline, a replica going away: the next replica, later.
    const o = this.opts;
    this.current = (this.current + 1) % this.clients.length;
    const delay = backoffMs(o, this.attempt);
    this.attempt += 1;
    const next = o.targets[this.current];
    process.stderr.write(
      `playlog-follow: ${what} to ${o.targets[target]} failed: ${statusName(code)}: ${err.details};` +
        ` retry ${this.attempt} on ${next} in ${delay} ms\n`,
    );
    emit(`REPORT_RETRY what=${what} attempt=${this.attempt} delay_ms=${delay} target=${next}`);
    this.timer = setTimeout(() => this.send(), delay);
    return undefined;
  }

  refused(what, error, detail) {
    emit(`REPORT_REFUSED what=${what} error=${error}`);
    process.stderr.write(`playlog-follow: ${what} refused: ${error}: ${detail}\n`);
  }
}

// ----------------------------------------------------------------- follower

class Follower {
  constructor(opts) {
    this.opts = opts;
    const def = protoLoader.loadSync(['playlog/v1/execution_window_service.proto', 'playlog/v1/engine_service.proto'], {
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
    const channelOptions = {
      // Reconnect promptly after a server restart; our own backoff paces calls.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': opts.maxBackoffMs,
    };
    // One client per replica; `current` is the one followed.
    this.clients = opts.targets.map((t) => new pkg.playlog.v1.ExecutionWindowService(t, creds, channelOptions));
    this.current = 0;
    this.engineClients = [];
    this.reporter = null; // null with --no-report
    if (opts.report) {
      this.engineClients = opts.targets.map((t) => new pkg.playlog.v1.EngineService(t, creds, channelOptions));
      this.reporter = new Reporter(opts, this.engineClients, this.metadata);
    }
    // The simulated playout (as-run).
    this.playing = false;
    this.playStart = 0n;
    this.playedUntil = 0n;
    this.cut = new Set(); // entries (block@start) cut while on air
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
    emit(`SUBSCRIBE target=${this.opts.targets[this.current]} channel=${this.opts.channel} after_generation=${this.resumeFrom()}`);
    this.stream();
  }

  stream() {
    const o = this.opts;
    const target = this.opts.targets[this.current];
    const call = this.clients[this.current].WatchWindow({
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
      if (stopped === 'resubscribe') this.why = 'broke the generation chain';
      if (stopped === 'stall') this.why = `was silent for ${o.idleTimeoutMs} ms`;
      if (stopped === null) {
        emit(`DISCONNECT code=${statusName(status.code)}`);
        this.why = `ended the stream: ${statusName(status.code)}${status.details ? `: ${status.details}` : ''}`;
        if (FATAL.has(status.code)) {
          this.explain(status, null, target);
          return this.exit('fatal', 2);
        }
        if (this.tls && !gotEvents && status.code === grpc.status.UNAVAILABLE) {
          // grpc-js keeps a handshake's reason to itself ("Failed to connect"):
          // ask for it with a TLS connection of our own, then retry.
          return tlsProbe(target, this.tlsFiles).then((err) => {
            this.explain(status, err, target);
            if (!this.exited) this.reconnect();
          });
        }
        this.explain(status, null, target);
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
  explain(status, probeError, target) {
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
      process.stderr.write(
        `playlog-follow: stream from ${target} ended: ${statusName(status.code)}: ${status.details}${more}\n`,
      );
    }
  }

  reconnect() {
    const o = this.opts;
    const delay = backoffMs(o, this.attempt);
    this.attempt += 1;
    // Whatever ended the stream, the next attempt goes to the next replica.
    const from = o.targets[this.current];
    this.current = (this.current + 1) % this.clients.length;
    const to = o.targets[this.current];
    const why = this.why || 'ended the stream';
    this.reconnectTimer = setTimeout(() => {
      process.stderr.write(
        `playlog-follow: attempt ${this.attempt}: subscribing to ${to} after generation ${this.resumeFrom()}` +
          ` (waited ${delay} ms): ${from} ${why}\n`,
      );
      emit(`RECONNECT after_generation=${this.resumeFrom()} attempt=${this.attempt} delay_ms=${delay} target=${to}`);
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
    // What aired up to the snapshot's now, by the window held until now.
    this.account(big(s.now_utc_ms));
    const refused = this.nackedAsset(this.staging);
    if (refused === null) {
      // A whole snapshot is the state from now on: it replaces everything held.
      this.window.resetTo(this.staging);
      this.cut.clear();
    } else {
      emit(`NACK generation=${s.channel_generation_id} previous=${this.lastGeneration} asset=${refused}`);
    }
    this.staging = null;
    this.haveState = true;
    this.lastGeneration = big(s.channel_generation_id);
    if (this.lastGeneration > 0n) this.acknowledge(this.lastGeneration, refused);
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
    const refused = this.nackedAsset(r.entries);
    if (refused !== null) {
      // Refused: the window held stays, the chain moves on (the next publish
      // names this one as its previous).
      this.lastGeneration = generation;
      emit(`NACK generation=${generation} previous=${previous} asset=${refused}`);
      this.acknowledge(generation, refused);
      return this.checkGeneration();
    }
    // A cut of the entry on air: the same block, same start, ending earlier.
    for (const e of r.entries) {
      const held = this.window.entries.find((h) => h.start_utc_ms === e.start_utc_ms && h.block_id === e.block_id);
      if (held && big(e.end_utc_ms) < big(held.end_utc_ms)) this.cut.add(cutKey(e));
    }
    const start = big(r.range_start_utc_ms);
    const end = big(r.range_end_utc_ms);
    this.window.replace(start, end, r.entries);
    this.lastGeneration = generation;
    this.acknowledge(generation, null);
    emit(
      `REPLACED generation=${generation} previous=${previous} range=[${start},${end})` +
        ` entries=${r.entries.length} override=${r.operator_override ? 1 : 0}`,
    );
    this.emitOnAir();
    return this.checkGeneration();
  }

  onProgress(p) {
    // What aired up to this now is reported first: a PROGRESS line means its
    // as-run has been handed to the reporter.
    this.account(big(p.now_utc_ms));
    emit(`PROGRESS now=${p.now_utc_ms} locked_until=${p.locked_until_utc_ms} generation=${p.channel_generation_id}`);
    this.now = big(p.now_utc_ms);
    this.window.pruneBefore(this.now);
    this.emitOnAir();
    return 'continue';
  }

  // The first asset of `entries` that --nack-asset matches; null: none.
  nackedAsset(entries) {
    if (!this.opts.nackAsset) return null;
    for (const e of entries) {
      for (const seg of e.segments) {
        if (seg.asset_uri.includes(this.opts.nackAsset)) return seg.asset_uri;
      }
    }
    return null;
  }

  acknowledge(generation, refusedAsset) {
    if (!this.reporter) return;
    if (refusedAsset === null) this.reporter.ack(generation, true, '');
    else this.reporter.ack(generation, false, `cannot load asset ${refusedAsset}`);
  }

  // The simulated playout: every segment of the window held that ended in
  // (playedUntil, now] aired, and is reported once. The first now known is
  // where playout begins; a segment already running then is reported from it.
  account(now) {
    if (!this.reporter) return;
    if (!this.playing) {
      this.playing = true;
      this.playStart = now;
      this.playedUntil = now;
      return;
    }
    if (now <= this.playedUntil) return;
    for (const e of this.window.entries) {
      const start = big(e.start_utc_ms);
      if (start >= now) break;
      if (big(e.end_utc_ms) <= this.playedUntil) continue;
      const cut = this.cut.has(cutKey(e));
      const entryEnd = big(e.end_utc_ms);
      let segStart = start;
      for (let i = 0; i < e.segments.length && segStart < entryEnd; i++) {
        // (Clamped to the entry: a cut entry's last segment ends at the cut.)
        let segEnd = segStart + big(e.segments[i].duration_ms);
        if (segEnd > entryEnd) segEnd = entryEnd;
        if (segEnd > this.playedUntil && segEnd <= now) this.aired(e, i, segStart, segEnd, cut);
        segStart = segEnd;
      }
    }
    this.playedUntil = now;
  }

  aired(e, index, start, end, cut) {
    const seg = e.segments[index];
    if (this.opts.skipAsRun.has(e.block_id)) {
      emit(`ASRUN_SKIP block=${e.block_id} segment=${seg.segment_id}`);
      return;
    }
    let started = start > this.playStart ? start : this.playStart;
    const late = this.opts.lateStart.get(e.block_id);
    if (late !== undefined && index === 0) started = started + late < end ? started + late : end;
    // The last segment of a block cut while on air ends at the cut.
    const cutShort = cut && index === e.segments.length - 1;
    const event = {
      // Stable: the same segment of the same entry always gets the same id.
      event_id: `${this.opts.engineId}/${this.opts.channel}/${e.block_id}/${e.generation_id}/${seg.segment_id}/${start}`,
      block_id: e.block_id,
      generation_id: e.generation_id,
      segment_id: seg.segment_id,
      asset_uri: seg.asset_uri,
      started_utc_ms: started.toString(),
      ended_utc_ms: end.toString(),
      status: cutShort ? 'AS_RUN_STATUS_CUT_SHORT' : 'AS_RUN_STATUS_AIRED',
      detail: cutShort ? 'cut while on air' : '',
    };
    emit(
      `ASRUN event_id=${event.event_id} block=${e.block_id} generation=${e.generation_id}` +
        ` segment=${seg.segment_id} asset=${seg.asset_uri} start=${started} end=${end}` +
        ` status=${cutShort ? 'CUT_SHORT' : 'AIRED'}`,
    );
    this.reporter.report(event);
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
    clearTimeout(this.reconnectTimer);
    if (this.reporter) {
      this.reporter.stop();
      const [acks, asRun] = this.reporter.pending();
      emit(`PENDING acks=${acks} as_run=${asRun}`);
    }
    emit(`WINDOW generation=${this.lastGeneration} entries=${this.window.size} blocks=${this.window.blockList()}`);
    emit(`EXIT reason=${reason}`);
    for (const c of [...this.clients, ...this.engineClients]) c.close();
    process.exitCode = code;
  }
}

new Follower(parseArgs(process.argv.slice(2))).start();
