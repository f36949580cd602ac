#pragma once
/// Callbacks observe the run (they never change training) and logger destinations record it.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <tessera/algorithm.h>
#include <tessera/event.h>
#include <tessera/state.h>

namespace tessera {

class Logger;

class Callback {
 public:
  virtual ~Callback() = default;
  virtual std::string name() const = 0;
  /// Called at every event, after the algorithms (loggers last; at Init loggers first).
  virtual void run_event(Event event, State& state, Logger& logger) {}
  /// Logger destinations return true.
  virtual bool is_logger() const { return false; }
  virtual StateDict state_dict() const { return {}; }
  virtual void load_state_dict(const StateDict& state) {}
  /// Flushes and closes files; called once at the end of the run, also after an error.
  virtual void close() {}
};

/// Where logged values go (console, files, progress bar).
class LoggerDestination : public Callback {
 public:
  bool is_logger() const override { return true; }
  /// Numeric values at a point in time: "loss/train/total", "metrics/eval/accuracy", "time/batch"...
  virtual void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) {}
  /// Run settings: a recipe's values by path ("optimizer.sgd.lr" -> "0.1") once at Init, when the Trainer was
  /// given its recipe text; the final weights' fingerprint ("weights_fingerprint") at the end of fit.
  virtual void log_hyperparameters(const std::map<std::string, std::string>& values) {}
  /// A warning or note from an algorithm or the engine.
  virtual void log_text(const std::string& level, const std::string& text) {}
  /// A picture under `tag` ("images/train"): uint8 on the CPU, [height, width, channels] with 1 (gray) or 3 (RGB)
  /// channels, contiguous; e.g. image_visualizer's grid of a batch's images.
  virtual void log_image(const std::string& tag, const at::Tensor& image, const Timestamp& ts) {}
  /// True when log_image keeps pictures (the TensorBoard writer); the others drop them.
  virtual bool takes_images() const { return false; }
  /// True when log_text shows the text to the user (the console); otherwise warnings and notes also go to
  /// stderr.
  virtual bool shows_text() const { return false; }
};

/// The facade algorithms and callbacks log through; it fans out to every destination.
class Logger {
 public:
  explicit Logger(std::vector<LoggerDestination*> destinations = {}) : destinations_(std::move(destinations)) {}
  void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts);
  void log_hyperparameters(const std::map<std::string, std::string>& values);
  void log_image(const std::string& tag, const at::Tensor& image, const Timestamp& ts);
  /// True when a destination keeps pictures.
  bool takes_images() const;
  /// Warnings and notes go to every destination, and also to stderr ("tessera: warning: ...",
  /// "tessera: info: ...") when no destination shows text to the user (no progress bar; only file writers).
  void warn(const std::string& text);
  void info(const std::string& text);
  const std::vector<LoggerDestination*>& destinations() const noexcept { return destinations_; }

 private:
  void text(const char* level, const std::string& text);
  std::vector<LoggerDestination*> destinations_;
};

}  // namespace tessera
