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
//   playlog_follow --target 127.0.0.1:50051[,HOST:PORT...] --channel ch1
//                  [--target HOST:PORT ...] [--max-events N] [--exit-after-generation G]
//                  [--progress-interval-ms MS] [--idle-timeout-ms MS]
//                  [--max-backoff-ms MS] [--token TOKEN] [--ca-cert PEM]
//                  [--client-cert PEM --client-key PEM]
//                  [--engine-id ID] [--no-report] [--nack-asset SUBSTRING]
//                  [--skip-as-run BLOCK_ID] [--late-start BLOCK_ID=MS]
//
// --server is another name for --target. --engine-id (default "cpp") prefixes
// the as-run event ids; the server's engine id is the authenticated principal.
// --skip-as-run (repeatable) reports nothing for a block, --late-start reports
// a block's first segment as started MS late: planted faults, for
// reconciliation tests. --no-report turns acknowledgements and as-run off.
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
#include <deque>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "playlog/v1/engine_service.grpc.pb.h"
#include "playlog/v1/execution_window_service.grpc.pb.h"
#include "playlog/v1/types.pb.h"

namespace {

using playlog::v1::AcknowledgeWindowRequest;
using playlog::v1::AcknowledgeWindowResponse;
using playlog::v1::AsRunEvent;
using playlog::v1::EngineService;
using playlog::v1::ExecutionEntry;
using playlog::v1::ExecutionWindowService;
using playlog::v1::ProgressEvent;
using playlog::v1::ReplacedEvent;
using playlog::v1::ReportAsRunRequest;
using playlog::v1::ReportAsRunResponse;
using playlog::v1::SnapshotEvent;
using playlog::v1::WatchWindowRequest;
using playlog::v1::WindowEvent;
using Clock = std::chrono::steady_clock;

// ------------------------------------------------------------------ options

struct Options {
  std::vector<std::string> targets;  // replicas, tried in turn
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
  bool report = true;                  // acknowledgements and as-run
  std::string engine_id = "cpp";       // prefix of as-run event ids
  std::string nack_asset;              // refuse generations naming such an asset
  std::set<std::string> skip_as_run;   // blocks not reported (a planted fault)
  std::map<std::string, std::int64_t> late_start;  // block -> ms reported late
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "playlog_follow: %s\n"
               "usage: playlog_follow --target HOST:PORT[,HOST:PORT...] --channel ID\n"
               "                      [--target HOST:PORT ...] [--max-events N]\n"
               "                      [--exit-after-generation G] [--progress-interval-ms MS]\n"
               "                      [--idle-timeout-ms MS] [--max-backoff-ms MS]\n"
               "                      [--token TOKEN] [--ca-cert PEM]\n"
               "                      [--client-cert PEM --client-key PEM]\n"
               "                      [--engine-id ID] [--no-report] [--nack-asset SUBSTRING]\n"
               "                      [--skip-as-run BLOCK_ID] [--late-start BLOCK_ID=MS]\n",
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
    if (arg == "--no-report") {
      if (has_value) Usage("--no-report takes no value");
      o.report = false;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      value = argv[++i];
    }
    if (arg == "--target" || arg == "--server") {
      // Repeated, or comma-separated: replicas to fail over between.
      std::stringstream list(value);
      std::string one;
      while (std::getline(list, one, ',')) {
        if (!one.empty()) o.targets.push_back(one);
      }
    } else if (arg == "--engine-id") {
      o.engine_id = value;
    } else if (arg == "--nack-asset") {
      o.nack_asset = value;
    } else if (arg == "--skip-as-run") {
      o.skip_as_run.insert(value);
    } else if (arg == "--late-start") {
      auto at = value.rfind('=');
      if (at == std::string::npos || at == 0) Usage("--late-start needs BLOCK_ID=MS, got '" + value + "'");
      o.late_start[value.substr(0, at)] = ParseInt(arg, value.substr(at + 1));
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
  if (o.targets.empty()) Usage("--target is required");
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

// The wait before retry number `attempt` + 1: exponential from
// 100 ms (initial_backoff_ms) to --max-backoff-ms, half of each step fixed, half random.
std::int64_t BackoffMs(const Options& o, int attempt, std::mt19937_64& rng) {
  std::int64_t step = o.initial_backoff_ms;
  for (int i = 0; i < attempt && step < o.max_backoff_ms; ++i) step *= 2;
  step = std::min(step, o.max_backoff_ms);
  std::uniform_int_distribution<std::int64_t> jitter(0, step / 2);
  return step - step / 2 + jitter(rng);
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
  const std::map<std::int64_t, ExecutionEntry>& entries() const { return by_start_; }

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

// ----------------------------------------------------------------- reporter

// Sends the engine's acknowledgements and as-run events (EngineService) from
// a thread of its own, so that the stream never waits on them. Everything is
// queued and retried with backoff, on the next replica each time, with the
// same content (as-run event ids included) until the server has answered:
// the server stores a retried event once and answers it as a duplicate.
class Reporter {
 public:
  Reporter(const Options& opts, const std::vector<std::shared_ptr<grpc::Channel>>& channels)
      : opts_(opts), rng_(std::random_device{}()) {
    for (const auto& ch : channels) stubs_.push_back(EngineService::NewStub(ch));
    thread_ = std::thread([this] { Run(); });
  }
  ~Reporter() { Stop(); }

  void Ack(std::uint64_t generation, bool accepted, const std::string& detail) {
    std::lock_guard<std::mutex> lock(mu_);
    if (off_) return;
    acks_.push_back({generation, accepted, detail});
    cv_.notify_all();
  }

  void AsRun(const AsRunEvent& ev) {
    std::lock_guard<std::mutex> lock(mu_);
    if (off_) return;
    as_run_.push_back(ev);
    cv_.notify_all();
  }

  // Ends the thread (a call in flight is cancelled); what is left is pending.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stop_ = true;
      if (in_flight_ != nullptr) in_flight_->TryCancel();
      cv_.notify_all();
    }
    thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }

  std::pair<size_t, size_t> Pending() {
    std::lock_guard<std::mutex> lock(mu_);
    return {acks_.size(), as_run_.size()};
  }

 private:
  struct AckItem {
    std::uint64_t generation;
    bool accepted;
    std::string detail;
  };
  static constexpr size_t kBatch = 100;

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || (!off_ && (!acks_.empty() || !as_run_.empty())); });
      if (stop_) return;
      // An acceptance followed by a later one says nothing the later one does
      // not; a NACK is always sent.
      for (auto it = acks_.begin(); it != acks_.end();) {
        bool later_accept = it->accepted && std::any_of(std::next(it), acks_.end(),
                                                        [](const AckItem& a) { return a.accepted; });
        it = later_accept ? acks_.erase(it) : std::next(it);
      }
      bool is_ack = !acks_.empty();
      const char* what = is_ack ? "ack" : "as-run";
      size_t target = current_;
      grpc::ClientContext ctx;
      if (!opts_.token.empty()) ctx.AddMetadata("authorization", "Bearer " + opts_.token);
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      grpc::Status status;
      AcknowledgeWindowResponse ack_resp;
      ReportAsRunResponse run_resp;
      size_t batch = 0;
      AcknowledgeWindowRequest ack_req;
      ReportAsRunRequest run_req;
      if (is_ack) {
        ack_req.set_channel_id(opts_.channel);
        ack_req.set_applied_generation_id(acks_.front().generation);
        ack_req.set_accepted(acks_.front().accepted);
        ack_req.set_detail(acks_.front().detail);
      } else {
        run_req.set_channel_id(opts_.channel);
        batch = std::min(kBatch, as_run_.size());
        for (size_t i = 0; i < batch; ++i) *run_req.add_events() = as_run_[i];
      }
      in_flight_ = &ctx;
      lock.unlock();
      if (is_ack) {
        status = stubs_[target]->AcknowledgeWindow(&ctx, ack_req, &ack_resp);
      } else {
        status = stubs_[target]->ReportAsRun(&ctx, run_req, &run_resp);
      }
      lock.lock();
      in_flight_ = nullptr;
      if (stop_) return;  // cancelled by Stop(): still pending
      if (status.ok()) {
        attempt_ = 0;
        if (is_ack) {
          bool ok = ack_resp.ok();
          if (ok) {
            Emit("ACKED generation=" + std::to_string(ack_req.applied_generation_id()) +
                 " accepted=" + (ack_req.accepted() ? "1" : "0") +
                 " channel_generation=" + std::to_string(ack_resp.channel_generation_id()));
          } else {
            Refused("ack", playlog::v1::ErrorCode_Name(ack_resp.error_code()), ack_resp.error_detail());
          }
          acks_.pop_front();
        } else {
          if (run_resp.ok()) {
            Emit("ASRUN_SENT events=" + std::to_string(batch) + " stored=" + std::to_string(run_resp.stored()) +
                 " duplicates=" + std::to_string(run_resp.duplicates()));
          } else {
            Refused("as-run", playlog::v1::ErrorCode_Name(run_resp.error_code()), run_resp.error_detail());
          }
          as_run_.erase(as_run_.begin(), as_run_.begin() + static_cast<std::ptrdiff_t>(batch));
        }
        continue;
      }
      grpc::StatusCode code = status.error_code();
      if (code == grpc::StatusCode::UNIMPLEMENTED || code == grpc::StatusCode::UNAUTHENTICATED ||
          code == grpc::StatusCode::PERMISSION_DENIED) {
        // A server without EngineService, or credentials without the engine
        // role: following still works; reporting cannot.
        off_ = true;
        acks_.clear();
        as_run_.clear();
        Emit(std::string("REPORTS_OFF code=") + StatusName(code));
        std::fprintf(stderr, "playlog_follow: engine reports off: %s answered %s: %s\n",
                     opts_.targets[target].c_str(), StatusName(code), status.error_message().c_str());
        continue;
      }
      if (code == grpc::StatusCode::INVALID_ARGUMENT) {
        // Malformed: a retry cannot fix it.
        Refused(what, StatusName(code), status.error_message());
        if (is_ack) {
          acks_.pop_front();
        } else {
          as_run_.erase(as_run_.begin(), as_run_.begin() + static_cast<std::ptrdiff_t>(batch));
        }
        continue;
      }
      // Unavailable, deadline, a replica going away: the next replica, later.
      current_ = (current_ + 1) % stubs_.size();
      std::int64_t delay = BackoffMs(opts_, attempt_, rng_);
      ++attempt_;
      std::fprintf(stderr, "playlog_follow: %s to %s failed: %s: %s; retry %d on %s in %lld ms\n", what,
                   opts_.targets[target].c_str(), StatusName(code), status.error_message().c_str(), attempt_,
                   opts_.targets[current_].c_str(), static_cast<long long>(delay));
      Emit(std::string("REPORT_RETRY what=") + what + " attempt=" + std::to_string(attempt_) +
           " delay_ms=" + std::to_string(delay) + " target=" + opts_.targets[current_]);
      if (cv_.wait_for(lock, std::chrono::milliseconds(delay), [this] { return stop_; })) return;
    }
  }

  void Refused(const char* what, const std::string& error, const std::string& detail) {
    Emit(std::string("REPORT_REFUSED what=") + what + " error=" + error);
    std::fprintf(stderr, "playlog_follow: %s refused: %s: %s\n", what, error.c_str(), detail.c_str());
  }

  const Options& opts_;
  std::vector<std::unique_ptr<EngineService::Stub>> stubs_;
  std::mt19937_64 rng_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<AckItem> acks_;
  std::deque<AsRunEvent> as_run_;
  grpc::ClientContext* in_flight_ = nullptr;
  size_t current_ = 0;
  int attempt_ = 0;
  bool off_ = false;
  bool stop_ = false;
  bool stopped_ = false;
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
    for (const auto& target : opts_.targets) {
      channels_.push_back(grpc::CreateCustomChannel(target, creds, args));
      stubs_.push_back(ExecutionWindowService::NewStub(channels_.back()));
    }
    if (opts_.report) reporter_ = std::make_unique<Reporter>(opts_, channels_);
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
    Emit("SUBSCRIBE target=" + opts_.targets[current_] + " channel=" + opts_.channel +
         " after_generation=" + std::to_string(ResumeFrom()));
    for (;;) {
      Outcome outcome = Stream();
      if (Stopping()) return Exit("signal", 0);
      if (outcome.kind == Outcome::kDone) return Exit(outcome.reason, 0);
      if (outcome.kind == Outcome::kFatal) return Exit("fatal", 2);
      if (outcome.got_events) attempt = 0;
      // Whatever ended the stream, the next attempt goes to the next replica.
      std::string from = opts_.targets[current_];
      current_ = (current_ + 1) % stubs_.size();
      std::int64_t delay = BackoffMs(opts_, attempt, rng_);
      ++attempt;
      {
        std::unique_lock<std::mutex> lock(stop_mu_);
        if (stop_cv_.wait_for(lock, std::chrono::milliseconds(delay), [this] { return stop_; })) {
          lock.unlock();
          return Exit("signal", 0);
        }
      }
      std::fprintf(stderr, "playlog_follow: attempt %d: subscribing to %s after generation %llu (waited %lld ms): %s %s\n",
                   attempt, opts_.targets[current_].c_str(), static_cast<unsigned long long>(ResumeFrom()),
                   static_cast<long long>(delay), from.c_str(), outcome.why.c_str());
      Emit("RECONNECT after_generation=" + std::to_string(ResumeFrom()) + " attempt=" + std::to_string(attempt) +
           " delay_ms=" + std::to_string(delay) + " target=" + opts_.targets[current_]);
    }
  }

 private:
  struct Outcome {
    enum Kind { kRetry, kDone, kFatal } kind = kRetry;
    std::string reason;
    std::string why;  // for the next attempt's stderr line
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
      reader = stubs_[current_]->WatchWindow(&ctx, req);
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
    if (step == Step::kResubscribe) {
      out.why = "broke the generation chain";
      return out;
    }
    if (stalled) {
      // We ended it: the peer is silent (frozen, or the network dropped it).
      Emit("STALL idle_ms=" + std::to_string(opts_.idle_timeout_ms));
      out.why = "was silent for " + std::to_string(opts_.idle_timeout_ms) + " ms";
      return out;
    }
    Emit(std::string("DISCONNECT code=") + StatusName(status.error_code()));
    out.why = std::string("ended the stream: ") + StatusName(status.error_code()) +
              (status.error_message().empty() ? "" : ": " + status.error_message());
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
      std::fprintf(stderr, "playlog_follow: stream from %s ended: %s: %s\n", opts_.targets[current_].c_str(),
                   StatusName(status.error_code()), status.error_message().c_str());
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
    // What aired up to the snapshot's now, by the window held until now.
    Account(s.now_utc_ms());
    std::string refused = NackedAsset(staging_);
    if (refused.empty()) {
      // A whole snapshot is the state from now on: it replaces everything held.
      window_.ResetTo(staging_);
      cut_.clear();
    } else {
      Emit("NACK generation=" + std::to_string(s.channel_generation_id()) + " previous=" +
           std::to_string(last_generation_) + " asset=" + refused);
    }
    staging_.clear();
    staging_active_ = false;
    have_state_ = true;
    last_generation_ = s.channel_generation_id();
    if (last_generation_ > 0) Acknowledge(last_generation_, refused);
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
    std::vector<ExecutionEntry> incoming(r.entries().begin(), r.entries().end());
    std::string refused = NackedAsset(incoming);
    if (!refused.empty()) {
      // Refused: the window held stays, the chain moves on (the next publish
      // names this one as its previous).
      last_generation_ = r.generation_id();
      Emit("NACK generation=" + std::to_string(r.generation_id()) +
           " previous=" + std::to_string(r.previous_generation_id()) + " asset=" + refused);
      Acknowledge(last_generation_, refused);
      return CheckGeneration();
    }
    // A cut of the entry on air: the same block, same start, ending earlier.
    for (const auto& e : incoming) {
      auto held = window_.entries().find(e.start_utc_ms());
      if (held != window_.entries().end() && held->second.block_id() == e.block_id() &&
          e.end_utc_ms() < held->second.end_utc_ms()) {
        cut_.insert(CutKey(e));
      }
    }
    window_.Replace(r.range_start_utc_ms(), r.range_end_utc_ms(), r);
    last_generation_ = r.generation_id();
    Acknowledge(last_generation_, "");
    std::ostringstream line;
    line << "REPLACED generation=" << r.generation_id() << " previous=" << r.previous_generation_id()
         << " range=[" << r.range_start_utc_ms() << "," << r.range_end_utc_ms() << ")"
         << " entries=" << r.entries_size() << " override=" << (r.operator_override() ? 1 : 0);
    Emit(line.str());
    EmitOnAir();
    return CheckGeneration();
  }

  Step OnProgress(const ProgressEvent& p) {
    // What aired up to this now is reported first: a PROGRESS line means its
    // as-run has been handed to the reporter.
    Account(p.now_utc_ms());
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

  // The first asset of `entries` that --nack-asset matches; empty: none.
  std::string NackedAsset(const std::vector<ExecutionEntry>& entries) const {
    if (opts_.nack_asset.empty()) return "";
    for (const auto& e : entries) {
      for (const auto& seg : e.segments()) {
        if (seg.asset_uri().find(opts_.nack_asset) != std::string::npos) return seg.asset_uri();
      }
    }
    return "";
  }

  void Acknowledge(std::uint64_t generation, const std::string& refused_asset) {
    if (!reporter_) return;
    if (refused_asset.empty()) {
      reporter_->Ack(generation, true, "");
    } else {
      reporter_->Ack(generation, false, "cannot load asset " + refused_asset);
    }
  }

  static std::string CutKey(const ExecutionEntry& e) {
    return e.block_id() + "@" + std::to_string(e.start_utc_ms());
  }

  // The simulated playout: every segment of the window held that ended in
  // (played_until_, now] aired, and is reported once. The first now known is
  // where playout begins; a segment already running then is reported from it.
  void Account(std::int64_t now) {
    if (!reporter_) return;
    if (!playing_) {
      playing_ = true;
      play_start_ = played_until_ = now;
      return;
    }
    if (now <= played_until_) return;
    for (const auto& [start, e] : window_.entries()) {
      if (start >= now) break;
      if (e.end_utc_ms() <= played_until_) continue;
      bool cut = cut_.count(CutKey(e)) > 0;
      std::int64_t seg_start = start;
      for (int i = 0; i < e.segments_size(); ++i) {
        const auto& seg = e.segments(i);
        // (Clamped to the entry: a cut entry's last segment ends at the cut.)
        std::int64_t seg_end = std::min(seg_start + seg.duration_ms(), e.end_utc_ms());
        if (seg_start >= seg_end) break;
        if (seg_end > played_until_ && seg_end <= now) Aired(e, i, seg_start, seg_end, cut);
        seg_start = seg_end;
      }
    }
    played_until_ = now;
  }

  void Aired(const ExecutionEntry& e, int index, std::int64_t start, std::int64_t end, bool cut) {
    const auto& seg = e.segments(index);
    if (opts_.skip_as_run.count(e.block_id())) {
      Emit("ASRUN_SKIP block=" + e.block_id() + " segment=" + seg.segment_id());
      return;
    }
    AsRunEvent ev;
    // Stable: the same segment of the same entry always gets the same id.
    ev.set_event_id(opts_.engine_id + "/" + opts_.channel + "/" + e.block_id() + "/" +
                    std::to_string(e.generation_id()) + "/" + seg.segment_id() + "/" + std::to_string(start));
    ev.set_block_id(e.block_id());
    ev.set_generation_id(e.generation_id());
    ev.set_segment_id(seg.segment_id());
    ev.set_asset_uri(seg.asset_uri());
    std::int64_t started = std::max(start, play_start_);
    auto late = opts_.late_start.find(e.block_id());
    if (late != opts_.late_start.end() && index == 0) started = std::min(end, started + late->second);
    ev.set_started_utc_ms(started);
    ev.set_ended_utc_ms(end);
    // The last segment of a block cut while on air ends at the cut.
    bool cut_short = cut && index == e.segments_size() - 1;
    ev.set_status(cut_short ? playlog::v1::AS_RUN_STATUS_CUT_SHORT : playlog::v1::AS_RUN_STATUS_AIRED);
    if (cut_short) ev.set_detail("cut while on air");
    Emit("ASRUN event_id=" + ev.event_id() + " block=" + ev.block_id() + " generation=" +
         std::to_string(ev.generation_id()) + " segment=" + ev.segment_id() + " asset=" + ev.asset_uri() +
         " start=" + std::to_string(ev.started_utc_ms()) + " end=" + std::to_string(ev.ended_utc_ms()) +
         " status=" + (cut_short ? "CUT_SHORT" : "AIRED"));
    reporter_->AsRun(ev);
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
    if (reporter_) {
      reporter_->Stop();
      auto [acks, as_run] = reporter_->Pending();
      Emit("PENDING acks=" + std::to_string(acks) + " as_run=" + std::to_string(as_run));
    }
    Emit("WINDOW generation=" + std::to_string(last_generation_) +
         " entries=" + std::to_string(window_.size()) + " blocks=" + window_.BlockList());
    Emit("EXIT reason=" + reason);
    return code;
  }

  Options opts_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;  // one per replica
  std::vector<std::unique_ptr<ExecutionWindowService::Stub>> stubs_;
  size_t current_ = 0;  // the replica followed
  std::mt19937_64 rng_;
  std::unique_ptr<Reporter> reporter_;  // null with --no-report

  // The simulated playout (as-run).
  bool playing_ = false;
  std::int64_t play_start_ = 0;
  std::int64_t played_until_ = 0;
  std::set<std::string> cut_;  // entries (block@start) cut while on air

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
