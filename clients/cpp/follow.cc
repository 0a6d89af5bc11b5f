// playlog_follow: a playout engine's view of one channel, in C++.
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
// Output: one line per thing it receives or does, `KIND key=value ...`,
// values never contain spaces, stdout flushed per line:
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
//   playlog_follow --target 127.0.0.1:50051 --channel ch1
//                  [--max-events N] [--exit-after-generation G]
//                  [--progress-interval-ms MS] [--idle-timeout-ms MS]
//                  [--max-backoff-ms MS] [--token TOKEN] [--ca-cert PEM]
//                  [--client-cert PEM --client-key PEM]
//
// --token (or env PLAYLOG_TOKEN) sends `authorization: Bearer TOKEN` (a
// principal with the reader role); --ca-cert turns on TLS, trusting that CA;
// --client-cert and --client-key present a client certificate (mutual TLS).
// A failed TLS handshake is explained on stderr at each attempt.
// SIGTERM and SIGINT print the window held and `EXIT reason=signal`, exit 0.

#include <grpcpp/grpcpp.h>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "playlog/v1/execution_window_service.grpc.pb.h"
#include "playlog/v1/types.pb.h"

namespace {

using playlog::v1::ExecutionEntry;
using playlog::v1::ExecutionWindowService;
using playlog::v1::ProgressEvent;
using playlog::v1::ReplacedEvent;
using playlog::v1::SnapshotEvent;
using playlog::v1::WatchWindowRequest;
using playlog::v1::WindowEvent;
using Clock = std::chrono::steady_clock;

// ------------------------------------------------------------------ options

struct Options {
  std::string target;
  std::string channel;
  long long max_events = 0;               // 0: no limit
  bool exit_after_generation_set = false;
  std::uint64_t exit_after_generation = 0;
  std::int64_t progress_interval_ms = 0;  // 0: the server's default
  std::int64_t idle_timeout_ms = 0;       // 0: derived from the interval
  std::int64_t initial_backoff_ms = 100;
  std::int64_t max_backoff_ms = 5000;
  std::string token;    // bearer token; empty: none
  std::string ca_cert;  // PEM file; empty: plaintext (unless a client certificate is given)
  std::string client_cert;  // PEM files of a client certificate and its key; empty: none
  std::string client_key;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "playlog_follow: %s\n"
               "usage: playlog_follow --target HOST:PORT --channel ID [--max-events N]\n"
               "                      [--exit-after-generation G] [--progress-interval-ms MS]\n"
               "                      [--idle-timeout-ms MS] [--max-backoff-ms MS]\n"
               "                      [--token TOKEN] [--ca-cert PEM]\n"
               "                      [--client-cert PEM --client-key PEM]\n",
               why.c_str());
  std::exit(2);
}

long long ParseInt(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    long long v = std::stoll(value, &used);
    if (used != value.size() || v < 0) throw std::invalid_argument(value);
    return v;
  } catch (const std::exception&) {
    Usage(flag + " needs a non-negative integer, got '" + value + "'");
  }
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  if (const char* t = std::getenv("PLAYLOG_TOKEN")) o.token = t;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    auto eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (arg == "--help" || arg == "-h") Usage("follows one channel's execution window");
    if (!has_value) {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      value = argv[++i];
    }
    if (arg == "--target") {
      o.target = value;
    } else if (arg == "--channel") {
      o.channel = value;
    } else if (arg == "--max-events") {
      o.max_events = ParseInt(arg, value);
    } else if (arg == "--exit-after-generation") {
      o.exit_after_generation = static_cast<std::uint64_t>(ParseInt(arg, value));
      o.exit_after_generation_set = true;
    } else if (arg == "--progress-interval-ms") {
      o.progress_interval_ms = ParseInt(arg, value);
    } else if (arg == "--idle-timeout-ms") {
      o.idle_timeout_ms = ParseInt(arg, value);
    } else if (arg == "--max-backoff-ms") {
      o.max_backoff_ms = std::max<long long>(1, ParseInt(arg, value));
    } else if (arg == "--token") {
      o.token = value;
    } else if (arg == "--ca-cert") {
      o.ca_cert = value;
    } else if (arg == "--client-cert") {
      o.client_cert = value;
    } else if (arg == "--client-key") {
      o.client_key = value;
    } else {
      Usage("unknown option " + arg);
    }
  }
  if (o.target.empty()) Usage("--target is required");
  if (o.channel.empty()) Usage("--channel is required");
  if (o.client_cert.empty() != o.client_key.empty()) Usage("--client-cert and --client-key go together");
  if (o.idle_timeout_ms == 0) {
    // Progress events are the heartbeat: several missed ones mean a dead peer.
    std::int64_t interval = o.progress_interval_ms ? o.progress_interval_ms : 1000;
    o.idle_timeout_ms = std::max<std::int64_t>(10000, 5 * interval);
  }
  return o;
}

// ------------------------------------------------------------------- output

std::mutex g_out_mu;

void Emit(const std::string& line) {
  std::lock_guard<std::mutex> lock(g_out_mu);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

const char* StatusName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK",       "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",      "UNAVAILABLE",       "DATA_LOSS",
      "UNAUTHENTICATED"};
  int i = static_cast<int>(code);
  if (i >= 0 && i < static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) return kNames[i];
  return "UNKNOWN";
}

// Codes that retrying cannot fix: the request or the credentials are wrong.
bool Fatal(grpc::StatusCode code) {
  return code == grpc::StatusCode::INVALID_ARGUMENT ||
         code == grpc::StatusCode::UNAUTHENTICATED ||
         code == grpc::StatusCode::PERMISSION_DENIED ||
         code == grpc::StatusCode::UNIMPLEMENTED;
}

// A stream that ends UNAVAILABLE before any event over TLS: a handshake the
// server refused (no or unknown client certificate) or one the client refused
// (a server certificate not signed by --ca-cert), as gRPC core words them.
bool LooksLikeTls(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return false;
  std::string m = status.error_message();
  std::transform(m.begin(), m.end(), m.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* word : {"handshake", "certificate", "ssl", "tls", "alert", "verify", "socket closed",
                           "connection reset", "end of file"}) {
    if (m.find(word) != std::string::npos) return true;
  }
  return false;
}

std::string ReadFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path);
  if (!in) Usage("cannot read " + flag + " " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// ------------------------------------------------------------------- window

// The channel's entries by start. Entries never overlap (the server keeps
// them one gap-free sequence), so start is a key.
class Window {
 public:
  void ResetTo(const std::vector<ExecutionEntry>& entries) {
    by_start_.clear();
    for (const auto& e : entries) by_start_[e.start_utc_ms()] = e;
  }

  // Every entry overlapping [start, end) gives way to `entries`.
  void Replace(std::int64_t start, std::int64_t end, const ReplacedEvent& ev) {
    for (auto it = by_start_.begin(); it != by_start_.end();) {
      const auto& e = it->second;
      if (e.start_utc_ms() < end && e.end_utc_ms() > start) {
        it = by_start_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& e : ev.entries()) by_start_[e.start_utc_ms()] = e;
  }

  // Aired entries are history: publishes never touch them again.
  void PruneBefore(std::int64_t now) {
    for (auto it = by_start_.begin(); it != by_start_.end() && it->first < now;) {
      if (it->second.end_utc_ms() <= now) {
        it = by_start_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // What airs at `now`, and the entry after it (or the first one to come).
  std::pair<std::string, std::string> OnAir(std::int64_t now) const {
    std::string cur = "-", next = "-";
    auto after = by_start_.upper_bound(now);  // first entry starting after now
    if (after != by_start_.begin()) {
      auto prev = std::prev(after);
      if (prev->second.end_utc_ms() > now) cur = prev->second.block_id();
    }
    if (after != by_start_.end()) next = after->second.block_id();
    return {cur, next};
  }

  size_t size() const { return by_start_.size(); }

  std::string BlockList() const {
    std::string out;
    for (const auto& kv : by_start_) {
      if (!out.empty()) out += ',';
      out += kv.second.block_id();
    }
    return out.empty() ? "-" : out;
  }

 private:
  std::map<std::int64_t, ExecutionEntry> by_start_;
};

// ----------------------------------------------------------------- watchdog

// Cancels a stream that delivered nothing, not even progress, for too long:
// a peer that vanished without closing the connection.
class Watchdog {
 public:
  Watchdog(grpc::ClientContext* ctx, std::chrono::milliseconds timeout)
      : ctx_(ctx), timeout_(timeout), last_(Clock::now()), thread_([this] { Run(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Touch() {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = Clock::now();
  }
  bool fired() {
    std::lock_guard<std::mutex> lock(mu_);
    return fired_;
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      auto deadline = last_ + timeout_;
      if (cv_.wait_until(lock, deadline, [this] { return stop_; })) return;
      if (Clock::now() >= last_ + timeout_) {
        fired_ = true;
        ctx_->TryCancel();
        return;
      }
    }
  }

  grpc::ClientContext* ctx_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  Clock::time_point last_;
  bool stop_ = false;
  bool fired_ = false;
  std::thread thread_;
};

// ----------------------------------------------------------------- follower

class Follower {
 public:
  explicit Follower(Options opts) : opts_(std::move(opts)), rng_(std::random_device{}()) {
    grpc::ChannelArguments args;
    // Reconnect promptly after a server restart; our own backoff paces calls.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(opts_.max_backoff_ms));
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    tls_ = !opts_.ca_cert.empty() || !opts_.client_cert.empty();
    if (tls_) {
      grpc::SslCredentialsOptions tls;  // without --ca-cert: the system's CAs
      if (!opts_.ca_cert.empty()) tls.pem_root_certs = ReadFile("--ca-cert", opts_.ca_cert);
      if (!opts_.client_cert.empty()) {
        tls.pem_cert_chain = ReadFile("--client-cert", opts_.client_cert);
        tls.pem_private_key = ReadFile("--client-key", opts_.client_key);
      }
      creds = grpc::SslCredentials(tls);
    }
    channel_ = grpc::CreateCustomChannel(opts_.target, creds, args);
    stub_ = ExecutionWindowService::NewStub(channel_);
  }

  // From another thread (the signal waiter): ends the stream or the backoff
  // in progress; Run() then prints the window and returns 0.
  void Stop() {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
    if (current_ctx_ != nullptr) current_ctx_->TryCancel();
    stop_cv_.notify_all();
  }

  int Run() {
    int attempt = 0;
    Emit("SUBSCRIBE target=" + opts_.target + " channel=" + opts_.channel +
         " after_generation=" + std::to_string(ResumeFrom()));
    for (;;) {
      Outcome outcome = Stream();
      if (Stopping()) return Exit("signal", 0);
      if (outcome.kind == Outcome::kDone) return Exit(outcome.reason, 0);
      if (outcome.kind == Outcome::kFatal) return Exit("fatal", 2);
      if (outcome.got_events) attempt = 0;
      // Backoff with jitter: half the step fixed, half random.
      std::int64_t step = opts_.initial_backoff_ms;
      for (int i = 0; i < attempt && step < opts_.max_backoff_ms; ++i) step *= 2;
      step = std::min(step, opts_.max_backoff_ms);
      std::uniform_int_distribution<std::int64_t> jitter(0, step / 2);
      std::int64_t delay = step - step / 2 + jitter(rng_);
      ++attempt;
      {
        std::unique_lock<std::mutex> lock(stop_mu_);
        if (stop_cv_.wait_for(lock, std::chrono::milliseconds(delay), [this] { return stop_; })) {
          lock.unlock();
          return Exit("signal", 0);
        }
      }
      Emit("RECONNECT after_generation=" + std::to_string(ResumeFrom()) +
           " attempt=" + std::to_string(attempt) + " delay_ms=" + std::to_string(delay));
    }
  }

 private:
  struct Outcome {
    enum Kind { kRetry, kDone, kFatal } kind = kRetry;
    std::string reason;
    bool got_events = false;
  };
  enum class Step { kContinue, kResubscribe, kDone };

  bool Stopping() {
    std::lock_guard<std::mutex> lock(stop_mu_);
    return stop_;
  }

  // The stream in progress, for Stop() to cancel; null between streams.
  void SetCurrent(grpc::ClientContext* ctx) {
    std::lock_guard<std::mutex> lock(stop_mu_);
    current_ctx_ = ctx;
    if (ctx != nullptr && stop_) ctx->TryCancel();
  }

  // A holder of state resumes after what it holds; otherwise a fresh snapshot.
  std::uint64_t ResumeFrom() const { return have_state_ ? last_generation_ : 0; }

  Outcome Stream() {
    Outcome out;
    grpc::ClientContext ctx;
    if (!opts_.token.empty()) ctx.AddMetadata("authorization", "Bearer " + opts_.token);
    WatchWindowRequest req;
    req.set_channel_id(opts_.channel);
    req.set_after_generation_id(ResumeFrom());
    req.set_progress_interval_ms(opts_.progress_interval_ms);
    std::unique_ptr<grpc::ClientReader<WindowEvent>> reader;
    Step step = Step::kContinue;
    bool stalled = false;
    {
      Watchdog watchdog(&ctx, std::chrono::milliseconds(opts_.idle_timeout_ms));
      SetCurrent(&ctx);
      reader = stub_->WatchWindow(&ctx, req);
      WindowEvent ev;
      while (reader->Read(&ev)) {
        watchdog.Touch();
        out.got_events = true;
        ++events_;
        step = Handle(ev);
        if (step == Step::kContinue && opts_.max_events > 0 && events_ >= opts_.max_events) {
          step = Step::kDone;
          done_reason_ = "max-events";
        }
        if (step != Step::kContinue) {
          ctx.TryCancel();
          break;
        }
      }
      stalled = watchdog.fired();
    }
    grpc::Status status = reader->Finish();
    SetCurrent(nullptr);
    if (Stopping()) return out;  // Run() prints the window
    // An unfinished snapshot is worthless: keep what was whole before it.
    staging_.clear();
    staging_active_ = false;
    if (step == Step::kDone) {
      out.kind = Outcome::kDone;
      out.reason = done_reason_;
      return out;
    }
    if (step == Step::kResubscribe) return out;
    if (stalled) {
      // We ended it: the peer is silent (frozen, or the network dropped it).
      Emit("STALL idle_ms=" + std::to_string(opts_.idle_timeout_ms));
      return out;
    }
    Emit(std::string("DISCONNECT code=") + StatusName(status.error_code()));
    if (tls_ && !out.got_events && LooksLikeTls(status)) {
      // "Socket closed" right after the handshake: the server wants a client
      // certificate (TLS 1.3 servers refuse one only after the handshake).
      const char* hint = status.error_message().find("Socket closed") == std::string::npos
                             ? ""
                             : opts_.client_cert.empty()
                                   ? "; no --client-cert given: the server may require one"
                                   : "; the server may not accept this --client-cert";
      std::fprintf(stderr,
                   "playlog_follow: TLS handshake failed: %s%s (check --ca-cert / --client-cert / "
                   "--client-key and the server's --tls-client-ca)\n",
                   status.error_message().empty() ? "connection closed" : status.error_message().c_str(),
                   hint);
    } else if (!status.error_message().empty()) {
      std::fprintf(stderr, "playlog_follow: stream ended: %s: %s\n", StatusName(status.error_code()),
                   status.error_message().c_str());
    }
    if (Fatal(status.error_code())) out.kind = Outcome::kFatal;
    return out;
  }

  Step Handle(const WindowEvent& ev) {
    switch (ev.event_case()) {
      case WindowEvent::kSnapshot:
        return OnSnapshot(ev.snapshot());
      case WindowEvent::kReplaced:
        return OnReplaced(ev.replaced());
      case WindowEvent::kProgress:
        return OnProgress(ev.progress());
      default:
        Emit("UNKNOWN_EVENT");  // a newer server: ignore what we do not know
        return Step::kContinue;
    }
  }

  Step OnSnapshot(const SnapshotEvent& s) {
    if (!staging_active_) {
      staging_.clear();
      staging_active_ = true;
    }
    staging_.insert(staging_.end(), s.entries().begin(), s.entries().end());
    Emit("SNAPSHOT generation=" + std::to_string(s.channel_generation_id()) +
         " entries=" + std::to_string(s.entries_size()) + " reset=" + (s.reset() ? "1" : "0") +
         " complete=" + (s.complete() ? "1" : "0"));
    if (!s.complete()) return Step::kContinue;
    // A whole snapshot is the state from now on: it replaces everything held.
    window_.ResetTo(staging_);
    staging_.clear();
    staging_active_ = false;
    have_state_ = true;
    last_generation_ = s.channel_generation_id();
    now_ = s.now_utc_ms();
    have_now_ = true;
    window_.PruneBefore(now_);
    EmitOnAir();
    return CheckGeneration();
  }

  Step OnReplaced(const ReplacedEvent& r) {
    if (!have_state_ || staging_active_) {
      Emit("CHAIN_BREAK generation=" + std::to_string(r.generation_id()) +
           " previous=" + std::to_string(r.previous_generation_id()) + " expected=snapshot");
      return Step::kResubscribe;
    }
    if (r.generation_id() <= last_generation_) {
      Emit("STALE generation=" + std::to_string(r.generation_id()) +
           " last=" + std::to_string(last_generation_));
      return Step::kContinue;
    }
    if (r.previous_generation_id() != last_generation_) {
      Emit("CHAIN_BREAK generation=" + std::to_string(r.generation_id()) +
           " previous=" + std::to_string(r.previous_generation_id()) +
           " expected=" + std::to_string(last_generation_));
      return Step::kResubscribe;
    }
    window_.Replace(r.range_start_utc_ms(), r.range_end_utc_ms(), r);
    last_generation_ = r.generation_id();
    std::ostringstream line;
    line << "REPLACED generation=" << r.generation_id() << " previous=" << r.previous_generation_id()
         << " range=[" << r.range_start_utc_ms() << "," << r.range_end_utc_ms() << ")"
         << " entries=" << r.entries_size() << " override=" << (r.operator_override() ? 1 : 0);
    Emit(line.str());
    EmitOnAir();
    return CheckGeneration();
  }

  Step OnProgress(const ProgressEvent& p) {
    std::ostringstream line;
    line << "PROGRESS now=" << p.now_utc_ms() << " locked_until=" << p.locked_until_utc_ms()
         << " generation=" << p.channel_generation_id();
    Emit(line.str());
    now_ = p.now_utc_ms();
    have_now_ = true;
    window_.PruneBefore(now_);
    EmitOnAir();
    return Step::kContinue;
  }

  void EmitOnAir() {
    if (!have_now_) return;
    auto on_air = window_.OnAir(now_);
    if (have_on_air_ && on_air == last_on_air_) return;  // nothing changed on air or next
    have_on_air_ = true;
    last_on_air_ = on_air;
    const auto& [cur, next] = on_air;
    Emit("ONAIR now=" + cur + " next=" + next + " at=" + std::to_string(now_));
  }

  Step CheckGeneration() {
    if (opts_.exit_after_generation_set && have_state_ &&
        last_generation_ >= opts_.exit_after_generation) {
      done_reason_ = "generation";
      return Step::kDone;
    }
    return Step::kContinue;
  }

  int Exit(const std::string& reason, int code) {
    Emit("WINDOW generation=" + std::to_string(last_generation_) +
         " entries=" + std::to_string(window_.size()) + " blocks=" + window_.BlockList());
    Emit("EXIT reason=" + reason);
    return code;
  }

  Options opts_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ExecutionWindowService::Stub> stub_;
  std::mt19937_64 rng_;

  Window window_;
  bool have_state_ = false;
  std::uint64_t last_generation_ = 0;
  std::vector<ExecutionEntry> staging_;
  bool staging_active_ = false;
  std::int64_t now_ = 0;
  bool have_now_ = false;
  long long events_ = 0;
  std::string done_reason_;
  bool tls_ = false;
  bool have_on_air_ = false;
  std::pair<std::string, std::string> last_on_air_;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  grpc::ClientContext* current_ctx_ = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
  Options opts = ParseArgs(argc, argv);
  // SIGTERM and SIGINT are taken by one thread with sigwait; blocked before
  // any other thread (gRPC's included) starts, so every thread inherits that.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  Follower follower(std::move(opts));
  std::thread([&follower, signals] {
    int sig = 0;
    if (sigwait(&signals, &sig) == 0) follower.Stop();
  }).detach();
  return follower.Run();
}
