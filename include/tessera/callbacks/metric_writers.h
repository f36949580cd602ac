#pragma once
/// File logger destinations: JSON Lines, CSV and TensorBoard event files.
///
///     auto jsonl = std::make_shared<tessera::callbacks::JsonlWriter>(
///         tessera::callbacks::JsonlWriterOptions().path("runs/a/metrics.jsonl"));
///
/// All three check in the constructor that the file can be written (an InputError naming the path otherwise, so
/// a bad path fails before training starts) without touching the disk, so that building a run that never
/// trains (`tessera-run --plan`, a Trainer that is built and dropped, a resume that fails) leaves existing
/// files alone. What is logged before training starts is held in memory; the file is created (with its
/// parent folders, truncating an old one) at the first event other than the setup events (init,
/// before_load, after_load): fit_start, or eval_standalone_start for a Trainer that only evaluates; or by
/// state_dict(); or by close() for a writer used on its own (one that got no setup events). What was logged is
/// flushed at the end of every batch, evaluation, epoch and fit and by state_dict() (one write when there is
/// something new, none otherwise), so that `tail -f` and TensorBoard follow a run as it goes and a fit() that
/// returns (finished, or paused by fit(until)) leaves every value it logged in them; close() closes it, and
/// values logged after close() are dropped. Relative paths are used as given (the registry resolves them against
/// the run folder).
///
/// Resuming: state_dict() flushes and returns {"bytes": the file's length so far} (an int64 scalar), which
/// the Trainer saves in checkpoints. load_state_dict() makes the writer continue that file instead of
/// starting a fresh one: it is truncated to exactly that length (dropping what a killed run wrote after the
/// checkpoint) and appended to, so a run stopped and resumed writes the same file as one run in one go
/// (except the wall-clock "wct" fields and TensorBoard's wall times). What was logged before the load is dropped (the file already has
/// the saving run's copy), and the CSV header (TensorBoard's version event) is not written again. An Error when the file is missing or
/// shorter than the saved length (it changed since the checkpoint). A writer already writing its file
/// rewinds it at once.
#include <tessera/callback.h>
#include <tessera/options.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <string>

namespace tessera::callbacks {

namespace detail {

/// The file of a metrics writer: buffering until training starts, a byte count, truncate-and-append resume
/// (see the top of this header). `who` names the writer in messages; `header` is written at the top of a
/// fresh file.
class MetricFile {
 public:
  MetricFile(std::string path, std::string who, std::string header);
  MetricFile(const MetricFile&) = delete;
  MetricFile& operator=(const MetricFile&) = delete;

  /// Appends `text` (to memory until the file is opened); dropped once closed.
  void write(const std::string& text);
  /// Setup events are noted; any other event opens the file; batch_end, eval_end, epoch_end and fit_end flush
  /// what was written.
  void event(Event event);
  /// Opens the file if needed, flushes it and returns its length in bytes (what this run has written).
  int64_t bytes();
  /// Continues the file at `bytes` (see the top of this header).
  void resume(int64_t bytes);
  /// True once the file was started (training began, or state_dict() or close() started it).
  bool opened() const noexcept { return opened_; }
  /// Flushes and closes; an Error when buffered data could not be written. Idempotent.
  void close();

 private:
  /// Opens the file (fresh, or truncated to `resume_from_`) and writes the header and pending text.
  void open();
  void append(const std::string& text);

  std::string path_;
  std::string who_;
  std::string header_;
  std::ofstream file_;
  std::string pending_;       ///< logged before the file was opened
  int64_t bytes_ = 0;         ///< length of the file including what the stream has buffered
  int64_t resume_from_ = -1;  ///< length to truncate the file to when it is opened (-1 = start fresh)
  bool used_ = false;         ///< something was logged or an event arrived
  bool setup_seen_ = false;   ///< init, before_load or after_load arrived (the writer is in a Trainer)
  bool opened_ = false;
  bool closed_ = false;
};

}  // namespace detail

struct JsonlWriterOptions {
  /// File to write.
  TESSERA_OPTION(std::string, path) = "metrics.jsonl";
  template <class V>
  void visit(V& v) {
    v("path", path_, "file to write (relative to the run folder)", Any{});
  }
};

/// Writes one JSON object per line ("jsonl" in recipes):
///   * per log_metrics call: {"epoch": 0, "batch": 12, "sample": 1536, "wct": 0.8, "<key>": <value>, ...}
///     (non-finite values are written as null);
///   * per log_hyperparameters call: {"hparams": {"<name>": "<value>", ...}};
///   * per log_text call: {"level": "warning", "text": "..."}.
class JsonlWriter : public LoggerDestination {
 public:
  explicit JsonlWriter(JsonlWriterOptions options = {});
  ~JsonlWriter() override;

  std::string name() const override { return "jsonl"; }
  void run_event(Event event, State& state, Logger& logger) override;
  void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) override;
  void log_hyperparameters(const std::map<std::string, std::string>& values) override;
  void log_text(const std::string& level, const std::string& text) override;
  /// {"bytes": length of the file so far}; flushes (and opens the file if nothing opened it yet).
  StateDict state_dict() const override;
  /// Continues the file at the saved length (see the top of this header).
  void load_state_dict(const StateDict& state) override;
  void close() override;

  const JsonlWriterOptions& options() const noexcept { return options_; }

 private:
  JsonlWriterOptions options_;
  mutable detail::MetricFile file_;  ///< state_dict() flushes it
};

struct CsvWriterOptions {
  /// File to write.
  TESSERA_OPTION(std::string, path) = "metrics.csv";
  template <class V>
  void visit(V& v) {
    v("path", path_, "file to write (relative to the run folder)", Any{});
  }
};

/// Writes metrics in long format ("csv" in recipes): a header `epoch,batch,sample,wct,key,value` (at the top
/// of a fresh file only), then one row per logged value. Keys containing commas or quotes are quoted
/// (RFC 4180); non-finite values are written as nan, inf or -inf. Hyperparameters and text are not written.
class CsvWriter : public LoggerDestination {
 public:
  explicit CsvWriter(CsvWriterOptions options = {});
  ~CsvWriter() override;

  std::string name() const override { return "csv"; }
  void run_event(Event event, State& state, Logger& logger) override;
  void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) override;
  /// {"bytes": length of the file so far}; flushes (and opens the file if nothing opened it yet).
  StateDict state_dict() const override;
  /// Continues the file at the saved length (see the top of this header); the header is not written again.
  void load_state_dict(const StateDict& state) override;
  void close() override;

  const CsvWriterOptions& options() const noexcept { return options_; }

 private:
  CsvWriterOptions options_;
  mutable detail::MetricFile file_;  ///< state_dict() flushes it
};

struct TensorboardWriterOptions {
  /// File to write; TensorBoard reads the files of a folder whose names contain "tfevents".
  TESSERA_OPTION(std::string, path) = "events.out.tfevents.tessera";
  template <class V>
  void visit(V& v) {
    v("path", path_, "file to write (relative to the run folder); its name must contain \"tfevents\"", Any{});
  }
};

/// Writes a TensorBoard event file ("tensorboard" in recipes), without TensorFlow or protobuf: run
/// `tensorboard --logdir runs` and each run folder is a run. The default path puts the file in the run folder
/// itself, so the run is named after its folder.
///   * per log_metrics call: one event at step = the timestamp's batch, one scalar per value (TensorBoard's
///     scalars are float32);
///   * per log_text call: a text summary tagged "log/<level>" ("log/info", "log/warning") at the current batch;
///   * per log_image call: an image summary (a PNG file, written without a compression library) at step = the
///     timestamp's batch (TensorBoard's Images tab; image_visualizer's grids);
///   * per log_hyperparameters call: a text summary tagged "hyperparameters" (a Markdown table); the first call
///     before training starts (the recipe's settings, logged by the Trainer at Init) also makes the hparams
///     plugin's session-start summary, so that TensorBoard's HParams tab lists the run with its settings
///     (numbers and true/false as such, the rest as text) and its scalars. A resumed run's file has its first
///     run's summary (what is logged before a checkpoint is loaded is dropped).
/// The file starts with TensorBoard's version event; records are framed and checksummed as TFRecords. Resuming
/// and flushing work as for the JSON Lines writer: a run stopped and resumed writes the same scalars and images as
/// one run in one go, except their wall times (and plus the evaluation the stop brought).
class TensorboardWriter : public LoggerDestination {
 public:
  explicit TensorboardWriter(TensorboardWriterOptions options = {});
  ~TensorboardWriter() override;

  std::string name() const override { return "tensorboard"; }
  void run_event(Event event, State& state, Logger& logger) override;
  void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) override;
  void log_hyperparameters(const std::map<std::string, std::string>& values) override;
  void log_text(const std::string& level, const std::string& text) override;
  /// An Error unless `image` is uint8 on the CPU, [height, width, 1 or 3].
  void log_image(const std::string& tag, const at::Tensor& image, const Timestamp& ts) override;
  bool takes_images() const override { return true; }
  /// {"bytes": length of the file so far}; flushes (and opens the file if nothing opened it yet).
  StateDict state_dict() const override;
  /// Continues the file at the saved length (see the top of this header).
  void load_state_dict(const StateDict& state) override;
  void close() override;

  const TensorboardWriterOptions& options() const noexcept { return options_; }

 private:
  TensorboardWriterOptions options_;
  double start_time_;                ///< when the writer was made (seconds since the Unix epoch)
  mutable detail::MetricFile file_;  ///< state_dict() flushes it
  int64_t step_ = 0;                 ///< the batch of the latest event or metrics
  bool session_written_ = false;     ///< the session-start summary is written
};

}  // namespace tessera::callbacks
