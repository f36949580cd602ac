#include "profiler.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <system_error>
#include <utility>

#include <ATen/record_function.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <tessera/callback.h>
#include <tessera/error.h>

#include "checkpoint/checkpoint_file.h"

#ifdef TESSERA_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace tessera {

ProfilerAction profiler_action(const ProfilerOptions& o, int64_t batch_in_epoch, int64_t batches_per_epoch) {
  if (batch_in_epoch < o.skip_first()) return ProfilerAction::Skip;
  const int64_t cycle = o.wait() + o.warmup() + o.active();
  const int64_t into = batch_in_epoch - o.skip_first();
  if (cycle <= 0 || (o.repeat() != 0 && into >= cycle * o.repeat())) return ProfilerAction::Skip;
  const int64_t at = into % cycle;
  if (at < o.wait()) return ProfilerAction::Skip;
  if (at < o.wait() + o.warmup()) return ProfilerAction::Warmup;
  const bool last_of_epoch = batches_per_epoch > 0 && batch_in_epoch == batches_per_epoch - 1;
  return at == cycle - 1 || last_of_epoch ? ProfilerAction::ActiveAndSave : ProfilerAction::Active;
}

namespace {

constexpr double kNotOpen = std::numeric_limits<double>::quiet_NaN();

/// The trainer's phases, each between two event reports: opened when `open` begins (or ends), closed when
/// `close` begins (or ends). A phase opened at an event's end and closed at the next event's begin is the trainer's
/// own work between them (forward: between before_forward and after_forward); one opened at a begin and closed
/// at an end holds the events between too (batch, microbatch).
struct PhaseRule {
  Event open;
  bool open_at_end;
  Event close;
  bool close_at_end;
  const char* name;
};
constexpr PhaseRule kPhases[] = {
    {Event::BeforeDataloader, false, Event::BatchCheckpoint, true, "batch"},
    {Event::BeforeDataloader, true, Event::AfterDataloader, false, "dataloader"},
    {Event::BeforeTrainBatch, false, Event::AfterTrainBatch, true, "train_batch"},
    {Event::BeforeForward, false, Event::AfterBackward, true, "microbatch"},
    {Event::BeforeForward, true, Event::AfterForward, false, "forward"},
    {Event::BeforeLoss, true, Event::AfterLoss, false, "loss"},
    {Event::BeforeBackward, true, Event::AfterBackward, false, "backward"},
    {Event::AfterTrainBatch, true, Event::BatchEnd, false, "optimizer_step"},
    {Event::EvalBeforeAll, false, Event::EvalAfterAll, true, "evaluation"},
    {Event::EvalStart, false, Event::EvalEnd, true, "eval_dataset"},
    {Event::EvalBatchStart, false, Event::EvalBatchEnd, true, "eval_batch"},
    {Event::EvalBeforeForward, true, Event::EvalAfterForward, false, "eval_forward"},
};
constexpr size_t kNumPhases = sizeof(kPhases) / sizeof(kPhases[0]);

constexpr const char* kClockScope = "tessera::profiler_clock";
constexpr int kTrainerThread = 0;
constexpr int kFirstTorchThread = 1;

}  // namespace

Profiler::Profiler(ProfilerOptions options, std::string folder, int rank, int world_size, c10::Device device)
    : options_(std::move(options)),
      folder_(std::move(folder)),
      rank_(rank),
      world_size_(world_size),
      device_(device),
      phase_open_(kNumPhases, kNotOpen) {
  validate_options(options_, "profiler");
  if (options_.folder().empty() || folder_.empty()) {
    throw InputError("profiler.folder: is empty; expected a folder for the trace files (default traces)");
  }
  std::error_code ec;
  std::filesystem::create_directories(folder_, ec);
  if (ec || !std::filesystem::is_directory(folder_)) {
    throw InputError("profiler.folder: cannot create \"" + folder_ + "\" for the trace files: " +
                     (ec ? ec.message() : std::string("it exists and is not a folder")));
  }
  anchor_steady_ = std::chrono::steady_clock::now();
  anchor_us_ = std::chrono::duration<double, std::micro>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Profiler::~Profiler() {
  try {
    stop_torch_ops();  // a trainer destroyed mid-window (fit() normally finishes its window)
  } catch (...) {
  }
}

double Profiler::now() const {
  return anchor_us_ + std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - anchor_steady_).count();
}

void Profiler::reset_phases() { std::fill(phase_open_.begin(), phase_open_.end(), kNotOpen); }

void Profiler::start(State state, double at) {
  state_ = state;
  spans_.clear();
  counters_.clear();
  reset_phases();
  active_since_ = at;
  torch_ops_.clear();
  if (!options_.torch_ops() || torch_refused_) return;
  namespace prof = torch::autograd::profiler;
  try {
    prof::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU,
                                                                     options_.record_shapes()));
    torch_on_ = true;
  } catch (const c10::Error&) {
    torch_refused_ = true;  // another profiler is on (torch's, around fit()): the trace has Tessera's spans only
    return;
  }
  // An empty scope between two readings of our clock: its recorded times put LibTorch's clock on ours to within half
  // the scope's cost.
  const double before = now();
  { RECORD_USER_SCOPE(kClockScope); }
  torch_clock_at_ = (before + now()) / 2;
}

void Profiler::stop_torch_ops() {
  if (!torch_on_) return;
  torch_on_ = false;
  namespace prof = torch::autograd::profiler;
  prof::thread_event_lists lists;
  try {
    lists = prof::disableProfilerLegacy();
  } catch (const c10::Error&) {
    return;
  }
  // LibTorch's clock and ours differ by an offset: the clock scope ran at torch_clock_at_ on ours. Both LibTorch
  // 1.13 and 2.x record the scope (tested); without it the operators could not be placed and are left out.
  double offset = 0;
  bool clocked = false;
  for (const auto& list : lists) {
    for (size_t i = 0; i + 1 < list.size() && !clocked; ++i) {
      const auto& e = list[i];
      if (e.kindStr() == std::string("push") && std::string(e.name()) == kClockScope &&
          list[i + 1].kindStr() == std::string("pop")) {
        offset = torch_clock_at_ - (e.cpuUs() + list[i + 1].cpuUs()) / 2;
        clocked = true;
      }
    }
  }
  if (!clocked) return;
  for (const auto& list : lists) {
    std::vector<const prof::LegacyEvent*> open;
    for (const auto& e : list) {
      const std::string kind = e.kindStr();
      if (kind == "push") {
        open.push_back(&e);
      } else if (kind == "pop" && !open.empty()) {
        const prof::LegacyEvent* p = open.back();
        open.pop_back();
        TorchOp op{p->name(), p->threadId(), p->cpuUs() + offset, e.cpuUs() + offset, {}};
        if (op.begin < active_since_ || op.name == kClockScope) continue;  // warm-up, and our clock scope
        if (options_.record_shapes()) op.shapes = p->shapes();
        torch_ops_.push_back(std::move(op));
      }
    }
  }
}

void Profiler::batch_begins(const Timestamp& next, int64_t batches_per_epoch, Logger& logger) {
  if (next.batch == decided_batch_) return;
  decided_batch_ = next.batch;
  const ProfilerAction action = profiler_action(options_, next.batch_in_epoch, batches_per_epoch);
  const bool active = action == ProfilerAction::Active || action == ProfilerAction::ActiveAndSave;
  const bool new_epoch = next.epoch != window_epoch_;
  if (state_ == State::Active && (save_due_ || !active || new_epoch)) write_window(logger);
  if (state_ == State::Warming && (action == ProfilerAction::Skip || new_epoch)) {
    stop_torch_ops();
    state_ = State::Off;
  }
  save_due_ = action == ProfilerAction::ActiveAndSave;
  if (action == ProfilerAction::Skip) return;
  const double at = now();
  if (state_ == State::Off) {
    window_epoch_ = next.epoch;
    first_batch_ = next.batch;
    start(active ? State::Active : State::Warming, at);
  }
  if (active && state_ == State::Warming) {
    state_ = State::Active;
    spans_.clear();  // the warm-up's spans; its operators are dropped by time when torch's profiler stops
    counters_.clear();
    reset_phases();
    active_since_ = at;
    first_batch_ = next.batch;
  }
  if (active) last_batch_ = next.batch;
}

void Profiler::event_begins(Event event, double at) {
  for (size_t i = 0; i < kNumPhases; ++i) {
    const PhaseRule& r = kPhases[i];
    if (r.close == event && !r.close_at_end && !std::isnan(phase_open_[i])) {
      span(r.name, "phase", phase_open_[i], at);
      phase_open_[i] = kNotOpen;
    }
    if (r.open == event && !r.open_at_end) phase_open_[i] = at;
  }
}

namespace {

/// The process's resident set in bytes (-1 when /proc cannot tell): one read of /proc/self/statm, a few microseconds.
double resident_bytes() {
  static const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char text[128];
  const ssize_t n = ::read(fd, text, sizeof(text) - 1);
  ::close(fd);
  if (n <= 0) return -1;
  text[n] = '\0';
  unsigned long long size = 0, resident = 0;
  if (std::sscanf(text, "%llu %llu", &size, &resident) != 2) return -1;
  return static_cast<double>(resident) * page;
}

}  // namespace

void Profiler::sample_memory(double at, bool host) {
  Counter c{at, host ? resident_bytes() / 1e6 : -1.0, -1.0, -1.0};
#ifdef TESSERA_CUDA
  if (device_.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        device_.has_index() ? device_.index() : c10::cuda::current_device());
    const size_t all = 0;  // StatType::AGGREGATE
    c.cuda_allocated_mb = static_cast<double>(stats.allocated_bytes[all].current) / 1e6;
    c.cuda_reserved_mb = static_cast<double>(stats.reserved_bytes[all].current) / 1e6;
  }
#endif
  if (c.host_rss_mb >= 0 || c.cuda_allocated_mb >= 0) counters_.push_back(c);
}

void Profiler::event_ends(Event event, double begin, double end) {
  span(std::string("event/") + event_name(event), "event", begin, end);
  // Memory where it moves: the batch in, the activations made, freed by the backward, after the step (the host's
  // resident set only with the batch in and at its end: it seldom moves within a batch, and reading it costs more
  // than the allocator's counts).
  if (event == Event::AfterDataloader || event == Event::BatchEnd) sample_memory(end, true);
  if ((event == Event::AfterForward || event == Event::AfterBackward) && device_.is_cuda()) sample_memory(end, false);
  for (size_t i = 0; i < kNumPhases; ++i) {
    const PhaseRule& r = kPhases[i];
    if (r.close == event && r.close_at_end && !std::isnan(phase_open_[i])) {
      span(r.name, "phase", phase_open_[i], end);
      phase_open_[i] = kNotOpen;
    }
    if (r.open == event && r.open_at_end) phase_open_[i] = end;
  }
}

void Profiler::span(std::string name, const char* category, double begin, double end, const char* event) {
  spans_.push_back(Span{std::move(name), category, event, begin, end, decided_batch_});
}

void Profiler::write_window(Logger& logger) {
  stop_torch_ops();
  state_ = State::Off;
  using json = nlohmann::ordered_json;
  json events = json::array();
  events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", rank_}, {"args", {{"name", "rank " + std::to_string(rank_)}}}});
  events.push_back({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", rank_}, {"args", {{"sort_index", rank_}}}});
  events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", rank_}, {"tid", kTrainerThread},
                    {"args", {{"name", "Tessera (trainer, events, algorithms, callbacks)"}}}});
  for (const Span& s : spans_) {
    json e = {{"name", s.name}, {"cat", s.category}, {"ph", "X"}, {"ts", s.begin}, {"dur", s.end - s.begin},
              {"pid", rank_}, {"tid", kTrainerThread}, {"args", {{"batch", s.batch}}}};
    if (s.event != nullptr) e["args"]["event"] = s.event;
    events.push_back(std::move(e));
  }
  for (const Counter& c : counters_) {
    if (c.host_rss_mb >= 0) {
      events.push_back({{"name", "host RSS (MB)"}, {"ph", "C"}, {"ts", c.at}, {"pid", rank_},
                        {"args", {{"resident", c.host_rss_mb}}}});
    }
    if (c.cuda_allocated_mb >= 0) {
      events.push_back({{"name", "CUDA memory (MB)"}, {"ph", "C"}, {"ts", c.at}, {"pid", rank_},
                        {"args", {{"allocated", c.cuda_allocated_mb}, {"reserved", c.cuda_reserved_mb}}}});
    }
  }
  std::map<uint64_t, int> threads;  // LibTorch's thread ids -> trace lines after the trainer's
  const size_t torch_count = torch_ops_.size();
  for (const TorchOp& op : torch_ops_) {
    auto [it, added] = threads.emplace(op.thread, kFirstTorchThread + static_cast<int>(threads.size()));
    if (added) {
      events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", rank_}, {"tid", it->second},
                        {"args", {{"name", "torch operators (thread " + std::to_string(op.thread) + ")"}}}});
    }
    json e = {{"name", op.name}, {"cat", "torch_op"}, {"ph", "X"}, {"ts", op.begin}, {"dur", op.end - op.begin},
              {"pid", rank_}, {"tid", it->second}};
    if (!op.shapes.empty()) e["args"] = {{"input_shapes", op.shapes}};
    events.push_back(std::move(e));
  }
  json doc;
  doc["traceEvents"] = std::move(events);
  doc["displayTimeUnit"] = "ms";
  doc["otherData"] = {{"format", "tessera-trace/1"}, {"rank", rank_}, {"world_size", world_size_},
                      {"device", device_.str()},       {"epoch", window_epoch_}, {"first_batch", first_batch_},
                      {"last_batch", last_batch_}, {"spans", spans_.size()}, {"torch_ops", torch_count}};
  const std::string name = "ep" + std::to_string(window_epoch_) + "-ba" + std::to_string(first_batch_) + "-rank" +
                           std::to_string(rank_) + ".json";
  const std::string path = (std::filesystem::path(folder_) / name).string();
  const size_t span_count = spans_.size();
  ProfiledWindow window = summarize();
  window.file = path;
  spans_.clear();
  counters_.clear();
  torch_ops_.clear();
  reset_phases();
  try {
    checkpoint::write_text_atomically(path, doc.dump() + "\n");
  } catch (const std::exception& e) {
    logger.warn("profiler: the trace of batches " + std::to_string(first_batch_) + "-" + std::to_string(last_batch_) +
                " was not written (training goes on): " + e.what());
    return;
  }
  const std::string where = window.describe();
  windows_.push_back(std::move(window));
  logger.info("profiler: wrote " + path + " (batches " + std::to_string(first_batch_) + "-" +
              std::to_string(last_batch_) + ": " + std::to_string(span_count) + " spans" +
              (options_.torch_ops() ? ", " + std::to_string(torch_count) + " torch operators" : std::string()) + ")" +
              (where.empty() ? std::string() : "; " + where));
}

ProfiledWindow Profiler::summarize() const {
  ProfiledWindow w;
  w.epoch = window_epoch_;
  w.first_batch = first_batch_;
  w.last_batch = last_batch_;
  std::map<std::string, double> phase_us, algorithm_us;
  double batch_us = 0;
  for (const Span& s : spans_) {
    const double us = s.end - s.begin;
    if (s.name == "batch") {
      ++w.complete_batches;
      batch_us += us;
    } else if (std::string(s.category) == "phase") {
      phase_us[s.name] += us;
    } else if (std::string(s.category) == "algorithm") {
      algorithm_us[s.name.substr(s.name.find('/') + 1)] += us;
    }
  }
  if (w.complete_batches == 0) return w;
  const double per_batch = 1000.0 * static_cast<double>(w.complete_batches);  // microseconds -> ms per batch
  w.batch_ms = batch_us / per_batch;
  for (const char* phase : {"dataloader", "forward", "loss", "backward", "optimizer_step"}) {
    if (const auto it = phase_us.find(phase); it != phase_us.end()) w.phases_ms.emplace_back(phase, it->second / per_batch);
  }
  for (const auto& [name, us] : algorithm_us) w.algorithms_ms.emplace_back(name, us / per_batch);
  std::stable_sort(w.algorithms_ms.begin(), w.algorithms_ms.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (const auto it = phase_us.find("evaluation"); it != phase_us.end()) w.evaluation_ms = it->second / 1000.0;
  if (const auto it = phase_us.find("checkpoint"); it != phase_us.end()) w.checkpoint_ms = it->second / 1000.0;
  return w;
}

std::string ProfiledWindow::describe() const {
  if (complete_batches == 0) return "";
  auto ms = [](double v) { return fmt::format("{:.3g}", v); };
  std::string out = "per batch " + ms(batch_ms) + " ms:";
  const char* sep = " ";
  for (const auto& [phase, v] : phases_ms) {
    out += sep + phase + " " + ms(v);
    sep = ", ";
  }
  for (size_t i = 0; i < algorithms_ms.size() && i < 3; ++i) out += sep + algorithms_ms[i].first + " " + ms(algorithms_ms[i].second);
  if (evaluation_ms > 0) out += "; evaluation " + ms(evaluation_ms) + " ms";
  if (checkpoint_ms > 0) out += "; checkpoint " + ms(checkpoint_ms) + " ms";
  return out;
}

std::string ProfiledWindow::to_json() const {
  nlohmann::ordered_json phases = nlohmann::ordered_json::object(), algorithms = nlohmann::ordered_json::object();
  for (const auto& [name, ms] : phases_ms) phases[name] = ms;
  for (const auto& [name, ms] : algorithms_ms) algorithms[name] = ms;
  const nlohmann::ordered_json j = {{"file", file},
                                    {"epoch", epoch},
                                    {"first_batch", first_batch},
                                    {"last_batch", last_batch},
                                    {"complete_batches", complete_batches},
                                    {"batch_ms", batch_ms},
                                    {"phases_ms", phases},
                                    {"algorithms_ms", algorithms},
                                    {"evaluation_ms", evaluation_ms},
                                    {"checkpoint_ms", checkpoint_ms}};
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void Profiler::finish(Logger& logger) noexcept {
  try {
    if (state_ == State::Active) {
      write_window(logger);
    } else {
      stop_torch_ops();
      state_ = State::Off;
      spans_.clear();
    }
  } catch (...) {  // building the JSON ran out of memory, or a logger failed: the run's own error matters more
    state_ = State::Off;
  }
  decided_batch_ = -1;
}

}  // namespace tessera
