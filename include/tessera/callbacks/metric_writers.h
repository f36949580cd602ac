#pragma once
/// File logger destinations: JSON Lines and CSV.
///
///     auto jsonl = std::make_shared<tessera::callbacks::JsonlWriter>(
///         tessera::callbacks::JsonlWriterOptions().path("runs/a/metrics.jsonl"));
///
/// Both check in the constructor that the file can be written (an InputError naming the path otherwise, so
/// a bad path fails before training starts) without touching the disk, so that building a run that never
/// trains (`tessera-run --plan`) leaves existing files alone. The file is created (with its parent folders,
/// truncating an old one) at the first event or logged value, flushed at the end of every epoch and of fit,
/// and closed by close(); values logged after close() are dropped. Relative paths are used as given (the
/// registry resolves them against the run folder).
#include <tessera/callback.h>
#include <tessera/options.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <string>

namespace tessera::callbacks {

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
  void close() override;

  const JsonlWriterOptions& options() const noexcept { return options_; }

 private:
  void write_line(const std::string& line);
  /// Opens the file on first use; false once closed.
  bool ensure_open();

  JsonlWriterOptions options_;
  std::ofstream file_;
  bool opened_ = false;
  bool closed_ = false;
};

struct CsvWriterOptions {
  /// File to write.
  TESSERA_OPTION(std::string, path) = "metrics.csv";
  template <class V>
  void visit(V& v) {
    v("path", path_, "file to write (relative to the run folder)", Any{});
  }
};

/// Writes metrics in long format ("csv" in recipes): a header `epoch,batch,sample,wct,key,value`, then one
/// row per logged value. Keys containing commas or quotes are quoted (RFC 4180); non-finite values are
/// written as nan, inf or -inf. Hyperparameters and text are not written.
class CsvWriter : public LoggerDestination {
 public:
  explicit CsvWriter(CsvWriterOptions options = {});
  ~CsvWriter() override;

  std::string name() const override { return "csv"; }
  void run_event(Event event, State& state, Logger& logger) override;
  void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) override;
  void close() override;

  const CsvWriterOptions& options() const noexcept { return options_; }

 private:
  /// Opens the file and writes the header on first use; false once closed.
  bool ensure_open();

  CsvWriterOptions options_;
  std::ofstream file_;
  bool opened_ = false;
  bool closed_ = false;
};

}  // namespace tessera::callbacks
