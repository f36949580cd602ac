#include <fmt/format.h>
#include <tessera/callbacks/progress_bar.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace tessera::callbacks {
namespace {

bool stream_is_tty(const std::ostream* out) {
  if (out == &std::cerr || out == &std::clog) return ::isatty(STDERR_FILENO) == 1;
  if (out == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
  return false;
}

/// "0:07", "12:03", "1:02:03".
std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  if (h > 0) return fmt::format("{}:{:02d}:{:02d}", h, m, s);
  return fmt::format("{}:{:02d}", m, s);
}

std::string format_rate(double per_second) {
  if (!std::isfinite(per_second) || per_second <= 0) return "-";
  return per_second >= 100 ? fmt::format("{:.0f}", per_second) : fmt::format("{:.1f}", per_second);
}

/// Total epochs of the run, 0 when it cannot be told (token or duration units).
int64_t total_epochs(const TimeContext& time) {
  const Time& md = time.max_duration;
  const int64_t bpe = std::max<int64_t>(1, time.batches_per_epoch);
  const int64_t spe = std::max<int64_t>(1, time.samples_per_epoch);
  switch (md.unit()) {
    case TimeUnit::Epoch:
      return md.value();
    case TimeUnit::Batch:
      return (md.value() + bpe - 1) / bpe;
    case TimeUnit::Sample:
      return (md.value() + spe - 1) / spe;
    default:
      return 0;
  }
}

/// Total batches of the run, -1 when it cannot be told.
double total_batches(const TimeContext& time) {
  const Time& md = time.max_duration;
  switch (md.unit()) {
    case TimeUnit::Epoch:
      return static_cast<double>(md.value()) * std::max<int64_t>(1, time.batches_per_epoch);
    case TimeUnit::Batch:
      return static_cast<double>(md.value());
    case TimeUnit::Sample:
      try {
        return time.to_batches(md);
      } catch (const std::exception&) {
        return -1;
      }
    default:
      return -1;
  }
}

}  // namespace

ProgressBar::ProgressBar(ProgressBarOptions options) : ProgressBar(std::move(options), nullptr) {}

ProgressBar::ProgressBar(ProgressBarOptions options, std::ostream* out, std::optional<bool> terminal)
    : options_(std::move(options)), out_(out ? out : &std::cerr) {
  validate_options(options_, "progress_bar");
  terminal_ = terminal.has_value() ? *terminal : stream_is_tty(out_);
}

void ProgressBar::run_event(Event event, State& state, Logger& logger) {
  rank_ = state.rank;
  if (rank_ != 0) return;
  evaluations_.run_event(event, state);
  switch (event) {
    case Event::EpochStart:
      epoch_start_ = Clock::now();
      snapshot_ = Snapshot{};
      snapshot_.epoch = state.timestamp.epoch;
      snapshot_.batch = state.timestamp.batch;
      last_decile_ = 0;
      last_plain_seconds_ = 0.0;
      drawn_once_ = false;
      epoch_line_pending_ = false;
      break;
    case Event::BatchEnd: {
      const Timestamp& ts = state.timestamp;
      snapshot_.epoch = ts.epoch;
      snapshot_.batch = ts.batch;
      snapshot_.batch_in_epoch = ts.batch_in_epoch;
      snapshot_.sample_in_epoch = ts.sample_in_epoch;
      snapshot_.seconds = ts.epoch_wct > 0
                              ? ts.epoch_wct
                              : std::chrono::duration<double>(Clock::now() - epoch_start_).count();
      auto it = state.metrics.find("loss/train/total");
      if (it != state.metrics.end()) latest_loss_ = it->second;
      snapshot_.loss = latest_loss_;
      snapshot_.eval_seconds_left = evaluations_.seconds_left(state);
      snapshot_.valid = true;
      epoch_line_pending_ = true;

      const int64_t n = epoch_batches(state.time);
      const bool last = snapshot_.batch_in_epoch >= n;
      if (terminal_) {
        const auto now = Clock::now();
        if (last || !drawn_once_ ||
            std::chrono::duration<double>(now - last_draw_).count() >= options_.refresh_seconds()) {
          draw(state.time);
          last_draw_ = now;
          drawn_once_ = true;
        }
      } else if (!last) {
        // Epoch time, not the wall clock, so that the trainer's timestamps (and tests) decide.
        const int64_t decile = snapshot_.batch_in_epoch * 10 / std::max<int64_t>(1, n);
        if (decile > last_decile_ && snapshot_.seconds - last_plain_seconds_ >= options_.plain_seconds()) {
          last_decile_ = decile;
          last_plain_seconds_ = snapshot_.seconds;
          *out_ << status_line(state.time) << '\n';
          out_->flush();
        }
      }
      break;
    }
    case Event::EpochEnd:
    case Event::FitEnd:
      finish_epoch_line(state.time);
      break;
    case Event::EvalStart:
      pending_eval_.clear();
      break;
    case Event::EvalEnd:
      print_eval(state);
      break;
    default:
      break;
  }
}

void ProgressBar::log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) {
  for (const auto& [key, value] : values) {
    if (key == "loss/train/total") {
      latest_loss_ = value;
    } else if (key.rfind("metrics/", 0) == 0 && key.rfind("metrics/train/", 0) != 0 &&
               std::count(key.begin(), key.end(), '/') == 2) {  // a metric's value, not its parts (recall/class_3)
      pending_eval_[key] = value;
    }
  }
}

void ProgressBar::log_text(const std::string& level, const std::string& text) {
  if (rank_ != 0) return;
  end_open_line();
  *out_ << "tessera: " << level << ": " << text << '\n';
  out_->flush();
}

void ProgressBar::close() {
  end_open_line();
  out_->flush();
}

int64_t ProgressBar::epoch_batches(const TimeContext& time) const {
  int64_t n = std::max<int64_t>(1, time.batches_per_epoch);
  // The last epoch is shorter when max_duration ends inside it.
  const double total = total_batches(time);
  if (total > 0) {
    const auto left = static_cast<int64_t>(std::ceil(total)) - snapshot_.epoch * n;
    if (left > 0 && left < n) n = left;
  }
  return n;
}

std::string ProgressBar::status_line(const TimeContext& time) const {
  const int64_t k = total_epochs(time);
  const int64_t n = epoch_batches(time);
  const int64_t i = std::min(snapshot_.batch_in_epoch, n);
  const auto width = static_cast<size_t>(options_.width());
  const auto filled =
      static_cast<size_t>(static_cast<double>(width) * static_cast<double>(i) / static_cast<double>(n));

  std::string line = fmt::format("epoch {}/{}", snapshot_.epoch + 1, k > 0 ? std::to_string(k) : "?");
  const int digits = static_cast<int>(std::to_string(n).size());
  line += fmt::format("  batch {:>{}}/{}", i, digits, n);
  line += " [" + std::string(std::min(filled, width), '#') +
          std::string(width - std::min(filled, width), '.') + "]";
  if (!std::isnan(snapshot_.loss)) {
    line += fmt::format("  loss {:.4f}", snapshot_.loss);
  }
  const double seconds = snapshot_.seconds;
  if (seconds > 0 && snapshot_.sample_in_epoch > 0) {
    line += "  " + format_rate(static_cast<double>(snapshot_.sample_in_epoch) / seconds) + " samples/s";
  }
  const double total = total_batches(time);
  if (seconds > 0 && snapshot_.batch_in_epoch > 0 && total > 0) {
    const double per_batch = seconds / static_cast<double>(snapshot_.batch_in_epoch);
    const double left = std::max(0.0, total - static_cast<double>(snapshot_.batch));
    line += "  ETA " + format_duration(per_batch * left + snapshot_.eval_seconds_left);
  }
  return line;
}

void ProgressBar::draw(const TimeContext& time) {
  std::string line = status_line(time);
  const size_t length = line.size();
  if (length < last_line_length_) line += std::string(last_line_length_ - length, ' ');
  last_line_length_ = length;
  *out_ << '\r' << line;
  out_->flush();
  line_open_ = true;
}

void ProgressBar::finish_epoch_line(const TimeContext& time) {
  if (!epoch_line_pending_ || !snapshot_.valid) return;
  epoch_line_pending_ = false;
  if (terminal_) {
    draw(time);
    end_open_line();
  } else {
    *out_ << status_line(time) << '\n';
    out_->flush();
  }
}

void ProgressBar::end_open_line() {
  if (!line_open_) return;
  *out_ << '\n';
  line_open_ = false;
  last_line_length_ = 0;
}

void ProgressBar::print_eval(const State& state) {
  std::map<std::string, double> values = pending_eval_;
  if (values.empty()) {
    for (const auto& [key, value] : state.metrics) {
      if (key.rfind("metrics/", 0) == 0 && key.rfind("metrics/train/", 0) != 0) values[key] = value;
    }
  }
  pending_eval_.clear();
  if (values.empty()) return;
  // One line per evaluator label: "eval @ 384ba: accuracy 0.9121  cross_entropy 0.2345".
  std::map<std::string, std::string> lines;
  for (const auto& [key, value] : values) {
    const std::string rest = key.substr(8);  // after "metrics/"
    const auto slash = rest.find('/');
    const std::string label = slash == std::string::npos ? "eval" : rest.substr(0, slash);
    const std::string metric = slash == std::string::npos ? rest : rest.substr(slash + 1);
    std::string& line = lines[label];
    line += fmt::format("{}{} {:.4f}", line.empty() ? "" : "  ", metric, value);
  }
  end_open_line();
  for (const auto& [label, line] : lines) {
    *out_ << label << " @ " << state.timestamp.batch << "ba: " << line << '\n';
  }
  out_->flush();
}

}  // namespace tessera::callbacks
