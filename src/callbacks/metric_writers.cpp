#include <fmt/format.h>
#include <tessera/callbacks/metric_writers.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

namespace tessera::callbacks {
namespace {

namespace fs = std::filesystem;

/// Checks, without creating anything, that `path` could be created or overwritten: it is not a folder, and
/// it is writable if it exists, or else its nearest existing ancestor is a writable folder.
void check_writable(const std::string& path, const char* who) {
  if (path.empty()) throw InputError(fmt::format("{}.path: empty; expected a file path", who));
  const fs::path file(path);
  std::error_code ec;
  const auto status = fs::status(file, ec);
  if (fs::exists(status)) {
    if (fs::is_directory(status)) {
      throw InputError(fmt::format("{}.path: '{}' is a folder; expected a file path", who, path));
    }
    if (::access(file.c_str(), W_OK) != 0) {
      throw InputError(fmt::format("{}.path: cannot write '{}': {}", who, path, std::strerror(errno)));
    }
    return;
  }
  fs::path dir = file.parent_path();
  while (!dir.empty() && !fs::exists(dir, ec)) dir = dir.parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec)) {
    throw InputError(
        fmt::format("{}.path: cannot create '{}': '{}' exists and is not a folder", who, path, dir.string()));
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw InputError(fmt::format("{}.path: cannot create '{}': the folder '{}' is not writable ({})", who,
                                 path, dir.string(), std::strerror(errno)));
  }
}

/// Creates the parent folders of `path` and opens it for writing (truncating); InputError naming the path
/// and the reason when that fails.
void open_for_writing(std::ofstream& file, const std::string& path, const char* who) {
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) {
      throw InputError(fmt::format("{}.path: cannot create the folder '{}' for '{}': {}", who,
                                   parent.string(), path, ec.message()));
    }
  }
  errno = 0;
  file.open(path, std::ios::out | std::ios::trunc);
  if (!file.is_open()) {
    const int err = errno;
    throw InputError(fmt::format("{}.path: cannot open '{}' for writing{}", who, path,
                                 err ? std::string(": ") + std::strerror(err) : std::string()));
  }
}

void check_written(const std::ofstream& file, const std::string& path) {
  if (!file) throw Error(fmt::format("cannot write to '{}' (disk full or file removed?)", path));
}

/// Flushes and closes; an Error when buffered data could not be written.
void flush_and_close(std::ofstream& file, const std::string& path) {
  if (!file.is_open()) return;
  file.flush();
  const bool ok = static_cast<bool>(file);
  file.close();
  if (!ok) throw Error(fmt::format("cannot write to '{}' (disk full or file removed?)", path));
}

/// A CSV field, quoted when needed (RFC 4180).
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

/// Shortest text that reads back to the same double; nan/inf/-inf for non-finite values.
std::string number(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  return fmt::format("{}", x);
}

/// JSON text; invalid UTF-8 in strings is replaced rather than failing in the middle of a run.
std::string dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// JsonlWriter

JsonlWriter::JsonlWriter(JsonlWriterOptions options) : options_(std::move(options)) {
  validate_options(options_, "jsonl");
  check_writable(options_.path(), "jsonl");
}

JsonlWriter::~JsonlWriter() {
  try {
    close();
  } catch (...) {
    // destructors must not throw; close() reports errors when called explicitly
  }
}

bool JsonlWriter::ensure_open() {
  if (closed_) return false;
  if (!opened_) {
    open_for_writing(file_, options_.path(), "jsonl");
    opened_ = true;
  }
  return true;
}

void JsonlWriter::write_line(const std::string& line) {
  if (!ensure_open()) return;
  file_ << line << '\n';
  check_written(file_, options_.path());
}

void JsonlWriter::run_event(Event event, State& state, Logger& logger) {
  if (!ensure_open()) return;
  if (event == Event::EpochEnd || event == Event::FitEnd) {
    file_.flush();
    check_written(file_, options_.path());
  }
}

void JsonlWriter::log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) {
  nlohmann::ordered_json line;
  line["epoch"] = ts.epoch;
  line["batch"] = ts.batch;
  line["sample"] = ts.sample;
  line["wct"] = ts.total_wct;
  for (const auto& [key, value] : values) {
    if (std::isfinite(value)) {
      line[key] = value;
    } else {
      line[key] = nullptr;
    }
  }
  write_line(dump(line));
}

void JsonlWriter::log_hyperparameters(const std::map<std::string, std::string>& values) {
  nlohmann::ordered_json hparams = nlohmann::ordered_json::object();
  for (const auto& [key, value] : values) hparams[key] = value;
  nlohmann::ordered_json line;
  line["hparams"] = std::move(hparams);
  write_line(dump(line));
}

void JsonlWriter::log_text(const std::string& level, const std::string& text) {
  nlohmann::ordered_json line;
  line["level"] = level;
  line["text"] = text;
  write_line(dump(line));
}

void JsonlWriter::close() {
  closed_ = true;
  flush_and_close(file_, options_.path());
}

// ---------------------------------------------------------------------------------------------------------
// CsvWriter

CsvWriter::CsvWriter(CsvWriterOptions options) : options_(std::move(options)) {
  validate_options(options_, "csv");
  check_writable(options_.path(), "csv");
}

CsvWriter::~CsvWriter() {
  try {
    close();
  } catch (...) {
    // destructors must not throw; close() reports errors when called explicitly
  }
}

bool CsvWriter::ensure_open() {
  if (closed_) return false;
  if (!opened_) {
    open_for_writing(file_, options_.path(), "csv");
    opened_ = true;
    file_ << "epoch,batch,sample,wct,key,value\n";
    check_written(file_, options_.path());
  }
  return true;
}

void CsvWriter::run_event(Event event, State& state, Logger& logger) {
  if (!ensure_open()) return;
  if (event == Event::EpochEnd || event == Event::FitEnd) {
    file_.flush();
    check_written(file_, options_.path());
  }
}

void CsvWriter::log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) {
  if (!ensure_open()) return;
  const std::string prefix = fmt::format("{},{},{},{},", ts.epoch, ts.batch, ts.sample, number(ts.total_wct));
  for (const auto& [key, value] : values) file_ << prefix << csv_field(key) << ',' << number(value) << '\n';
  check_written(file_, options_.path());
}

void CsvWriter::close() {
  closed_ = true;
  flush_and_close(file_, options_.path());
}

}  // namespace tessera::callbacks
