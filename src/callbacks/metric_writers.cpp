#include <fcntl.h>
#include <fmt/format.h>
#include <tessera/callbacks/metric_writers.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

#include "png.h"
#include "tfevents.h"

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

/// Creates the parent folders of `path`; InputError naming the path and the reason when that fails.
void create_parent_folders(const std::string& path, const std::string& who) {
  const fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) {
    throw InputError(fmt::format("{}.path: cannot create the folder '{}' for '{}': {}", who, parent.string(), path,
                                 ec.message()));
  }
}

/// Checks that `path` can be continued at `bytes`: it exists (unless `bytes` is 0) and is at least that long.
void check_resumable(const std::string& path, int64_t bytes, const std::string& who) {
  if (bytes == 0) return;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) {
    throw Error(fmt::format("{}: cannot resume '{}': {}; the checkpoint expects it to hold the {} bytes written "
                            "before it (the file changed since the checkpoint; restore it or start a fresh run)",
                            who, path, ec.message(), bytes));
  }
  if (size < static_cast<uintmax_t>(bytes)) {
    throw Error(fmt::format("{}: cannot resume '{}': it has {} bytes, the checkpoint expects at least {} (the file "
                            "changed since the checkpoint; restore it or start a fresh run)",
                            who, path, size, bytes));
  }
}

/// Opens `path` for writing: truncated to `keep` bytes and appended to, or (keep = 0) as a fresh file.
void open_for_writing(std::ofstream& file, const std::string& path, int64_t keep, const std::string& who) {
  create_parent_folders(path, who);
  if (keep > 0) {
    check_resumable(path, keep, who);
    std::error_code ec;
    fs::resize_file(path, static_cast<uintmax_t>(keep), ec);
    if (ec) throw Error(fmt::format("{}: cannot truncate '{}' to {} bytes: {}", who, path, keep, ec.message()));
  }
  errno = 0;
  file.open(path, keep > 0 ? std::ios::out | std::ios::app : std::ios::out | std::ios::trunc);
  if (!file.is_open()) {
    const int err = errno;
    throw InputError(fmt::format("{}.path: cannot open '{}' for writing{}", who, path,
                                 err ? std::string(": ") + std::strerror(err) : std::string()));
  }
}

void check_written(const std::ofstream& file, const std::string& path) {
  if (!file) throw Error(fmt::format("cannot write to '{}' (disk full or file removed?)", path));
}

/// Makes what was written to `path` durable (the checkpoint that records its length is fsynced too): after a
/// crash of the machine the file is at least that long, so the run resumes.
void sync_to_disk(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    throw Error(fmt::format("cannot sync '{}' to disk: {}", path, why));
  }
  ::close(fd);
}

/// Flushes and closes; an Error when buffered data could not be written.
void flush_and_close(std::ofstream& file, const std::string& path) {
  if (!file.is_open()) return;
  file.flush();
  const bool ok = static_cast<bool>(file);
  file.close();
  if (!ok) throw Error(fmt::format("cannot write to '{}' (disk full or file removed?)", path));
}

bool is_setup_event(Event event) {
  return event == Event::Init || event == Event::BeforeLoad || event == Event::AfterLoad;
}

/// Where something has come out: a batch trained, an evaluation or a prediction done, the run's end.
bool is_result_event(Event event) {
  return event == Event::BatchEnd || event == Event::EpochEnd || event == Event::EvalEnd ||
         event == Event::EvalAfterAll || event == Event::EvalStandaloneEnd || event == Event::PredictEnd ||
         event == Event::FitEnd;
}

/// The "bytes" entry of a writer's state: a non-negative integer scalar.
int64_t saved_bytes(const StateDict& state, const std::string& who) {
  const auto it = state.find("bytes");
  if (it == state.end()) {
    throw InputError(fmt::format("{}: the checkpoint has no 'bytes' entry for this writer; expected the length of "
                                 "its file at the checkpoint",
                                 who));
  }
  const at::Tensor& t = it->second;
  if (!t.defined() || t.numel() != 1 || t.is_floating_point() || t.is_complex()) {
    throw InputError(fmt::format("{}: the checkpoint's 'bytes' entry is not an integer scalar", who));
  }
  const int64_t bytes = t.item<int64_t>();
  if (bytes < 0) throw InputError(fmt::format("{}: the checkpoint's 'bytes' entry is negative ({})", who, bytes));
  return bytes;
}

StateDict bytes_state(int64_t bytes) { return {{"bytes", at::scalar_tensor(bytes, at::kLong)}}; }

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
// MetricFile

namespace detail {

MetricFile::MetricFile(std::string path, std::string who, std::string header)
    : path_(std::move(path)), who_(std::move(who)), header_(std::move(header)) {}

void MetricFile::append(const std::string& text) {
  file_ << text;
  check_written(file_, path_);
  bytes_ += static_cast<int64_t>(text.size());
}

void MetricFile::open() {
  const int64_t keep = resume_from_ > 0 ? resume_from_ : 0;
  open_for_writing(file_, path_, keep, who_);
  opened_ = true;
  resume_from_ = -1;
  bytes_ = keep;
  if (bytes_ == 0) append(header_);
  append(pending_);
  pending_.clear();
}

void MetricFile::write(const std::string& text) {
  if (closed_) return;
  used_ = true;
  if (opened_) {
    append(text);
  } else {
    pending_ += text;
  }
}

void MetricFile::event(Event event) {
  if (closed_) return;
  used_ = true;
  if (is_setup_event(event)) {
    setup_seen_ = true;
    return;
  }
  // Opened (which truncates the file of a run before, unless resuming) once something has come out: a run
  // refused at its first batch (a batch the model does not take) leaves that file as it was.
  if (!opened_ && !is_result_event(event)) return;
  if (!opened_) open();
  // An ofstream with nothing buffered flushes without a system call.
  if (event == Event::BatchEnd || event == Event::EvalEnd || event == Event::EpochEnd || event == Event::FitEnd) {
    file_.flush();
    check_written(file_, path_);
  }
}

int64_t MetricFile::bytes() {
  if (!opened_ && !closed_) open();
  if (opened_) {
    file_.flush();
    check_written(file_, path_);
    sync_to_disk(path_);
  }
  return bytes_;
}

void MetricFile::resume(int64_t bytes) {
  if (closed_) return;  // nothing is written any more
  if (opened_) {
    // Already writing this file (a checkpoint loaded after training): rewind it now.
    flush_and_close(file_, path_);
    opened_ = false;
    resume_from_ = bytes;
    open();
    return;
  }
  check_resumable(path_, bytes, who_);  // fail at the load, not at the first batch
  pending_.clear();                     // the saving run's copy is in the file already
  resume_from_ = bytes;
}

void MetricFile::close() {
  if (closed_) return;
  // A writer used on its own writes what it was given; one in a Trainer that never trained leaves the file alone.
  if (!opened_ && used_ && !setup_seen_) open();
  closed_ = true;
  pending_.clear();
  flush_and_close(file_, path_);
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------------------
// JsonlWriter

JsonlWriter::JsonlWriter(JsonlWriterOptions options)
    : options_(std::move(options)), file_(options_.path(), "jsonl", "") {
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

void JsonlWriter::run_event(Event event, State& state, Logger& logger) { file_.event(event); }

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
  file_.write(dump(line) + '\n');
}

void JsonlWriter::log_hyperparameters(const std::map<std::string, std::string>& values) {
  nlohmann::ordered_json hparams = nlohmann::ordered_json::object();
  for (const auto& [key, value] : values) hparams[key] = value;
  nlohmann::ordered_json line;
  line["hparams"] = std::move(hparams);
  file_.write(dump(line) + '\n');
}

void JsonlWriter::log_text(const std::string& level, const std::string& text) {
  nlohmann::ordered_json line;
  line["level"] = level;
  line["text"] = text;
  file_.write(dump(line) + '\n');
}

StateDict JsonlWriter::state_dict() const { return bytes_state(file_.bytes()); }

void JsonlWriter::load_state_dict(const StateDict& state) { file_.resume(saved_bytes(state, "jsonl")); }

void JsonlWriter::close() { file_.close(); }

// ---------------------------------------------------------------------------------------------------------
// CsvWriter

CsvWriter::CsvWriter(CsvWriterOptions options)
    : options_(std::move(options)), file_(options_.path(), "csv", "epoch,batch,sample,wct,key,value\n") {
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

void CsvWriter::run_event(Event event, State& state, Logger& logger) { file_.event(event); }

void CsvWriter::log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) {
  const std::string prefix = fmt::format("{},{},{},{},", ts.epoch, ts.batch, ts.sample, number(ts.total_wct));
  std::string rows;
  for (const auto& [key, value] : values) rows += prefix + csv_field(key) + ',' + number(value) + '\n';
  file_.write(rows);
}

StateDict CsvWriter::state_dict() const { return bytes_state(file_.bytes()); }

void CsvWriter::load_state_dict(const StateDict& state) { file_.resume(saved_bytes(state, "csv")); }

void CsvWriter::close() { file_.close(); }

// ---------------------------------------------------------------------------------------------------------
// TensorboardWriter

namespace {

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// `s` for a cell of a Markdown table.
std::string markdown_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += '\\';
    out += c == '\n' ? ' ' : c;
  }
  return out;
}

void check_tfevents_name(const std::string& path) {
  if (fs::path(path).filename().string().find("tfevents") == std::string::npos) {
    throw InputError(fmt::format("tensorboard.path: '{}': TensorBoard reads only files whose names contain "
                                 "\"tfevents\"; expected a name such as events.out.tfevents.tessera",
                                 path));
  }
}

}  // namespace

TensorboardWriter::TensorboardWriter(TensorboardWriterOptions options)
    : options_(std::move(options)),
      start_time_(unix_seconds()),
      file_(options_.path(), "tensorboard", tfevents::file_version(start_time_)) {
  validate_options(options_, "tensorboard");
  check_writable(options_.path(), "tensorboard");
  check_tfevents_name(options_.path());
}

TensorboardWriter::~TensorboardWriter() {
  try {
    close();
  } catch (...) {
    // destructors must not throw; close() reports errors when called explicitly
  }
}

void TensorboardWriter::run_event(Event event, State& state, Logger& logger) {
  step_ = state.timestamp.batch;
  file_.event(event);
}

void TensorboardWriter::log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) {
  step_ = ts.batch;
  file_.write(tfevents::scalars(unix_seconds(), ts.batch, values));
}

void TensorboardWriter::log_hyperparameters(const std::map<std::string, std::string>& values) {
  std::string table = "| name | value |\n|---|---|\n";
  for (const auto& [name, value] : values) table += "| " + markdown_cell(name) + " | " + markdown_cell(value) + " |\n";
  file_.write(tfevents::text(unix_seconds(), step_, "hyperparameters", table));
  if (!session_written_ && !file_.opened()) {  // the run's settings, before training: its HParams session
    file_.write(tfevents::session_start(unix_seconds(), step_, values, start_time_));
    session_written_ = true;
  }
}

void TensorboardWriter::log_text(const std::string& level, const std::string& text) {
  file_.write(tfevents::text(unix_seconds(), step_, "log/" + level, text));
}

void TensorboardWriter::log_image(const std::string& tag, const at::Tensor& image, const Timestamp& ts) {
  if (!image.defined() || image.dim() != 3 || image.scalar_type() != at::kByte || !image.device().is_cpu() ||
      (image.size(2) != 1 && image.size(2) != 3) || image.size(0) < 1 || image.size(1) < 1) {
    throw Error("tensorboard: log_image(\"" + tag + "\"): expected a uint8 CPU tensor [height, width, 1 or 3]");
  }
  const at::Tensor pixels = image.contiguous();
  const int64_t h = pixels.size(0), w = pixels.size(1), c = pixels.size(2);
  step_ = ts.batch;
  file_.write(tfevents::image(unix_seconds(), ts.batch, tag, png::encode(pixels.data_ptr<uint8_t>(), h, w, c), h, w, c));
}

StateDict TensorboardWriter::state_dict() const { return bytes_state(file_.bytes()); }

void TensorboardWriter::load_state_dict(const StateDict& state) { file_.resume(saved_bytes(state, "tensorboard")); }

void TensorboardWriter::close() { file_.close(); }

}  // namespace tessera::callbacks
