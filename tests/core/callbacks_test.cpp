// Tests of the Logger facade and the logger destinations (progress bar, JSONL/CSV/TensorBoard writers, summary).
#include <gtest/gtest.h>
#include <tessera/callback.h>
#include <tessera/callbacks/console_summary.h>
#include <tessera/callbacks/metric_writers.h>
#include <tessera/callbacks/progress_bar.h>
#include <tessera/error.h>
#include <tessera/state.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../../src/callbacks/png.h"
#include "../../src/callbacks/tfevents.h"
#include "support.h"
#include "tfevents_support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using callbacks::ConsoleSummary;
using callbacks::CsvWriter;
using callbacks::CsvWriterOptions;
using callbacks::JsonlWriter;
using callbacks::JsonlWriterOptions;
using callbacks::TensorboardWriter;
using callbacks::TensorboardWriterOptions;
namespace tfevents = callbacks::tfevents;
namespace png = callbacks::png;
using testing::tfevents_payloads;
using testing::RecordingDestination;
using callbacks::ProgressBar;
using callbacks::ProgressBarOptions;

/// A fresh folder under the system temp folder, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("tessera_callbacks_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + what.size())) ++n;
  return n;
}

Timestamp stamp(int64_t epoch, int64_t batch, int64_t sample, double wct) {
  Timestamp ts;
  ts.epoch = epoch;
  ts.batch = batch;
  ts.sample = sample;
  ts.total_wct = wct;
  return ts;
}

// ---------------------------------------------------------------------------------------------------------
// Logger

TEST(Logger, FansOutToEveryDestination) {
  RecordingDestination a, b;
  Logger logger({&a, &b});
  ASSERT_EQ(logger.destinations().size(), 2u);
  logger.log_hyperparameters({{"optimizer.lr", "0.1"}});
  logger.log_metrics({{"loss/train/total", 1.5}}, stamp(0, 3, 96, 0.5));
  logger.warn("careful");
  logger.info("note");
  for (const auto* d : {&a, &b}) {
    ASSERT_EQ(d->metrics.size(), 1u);
    EXPECT_EQ(d->metrics[0].at("loss/train/total"), 1.5);
    EXPECT_EQ(d->batches[0], 3);
    EXPECT_EQ(d->hparams.at("optimizer.lr"), "0.1");
    EXPECT_EQ(d->texts, (std::vector<std::string>{"warning:careful", "info:note"}));
  }
}

/// A destination that shows text to the user (like the progress bar).
class ShowingDestination : public RecordingDestination {
 public:
  bool shows_text() const override { return true; }
};

TEST(Logger, WarningsAndNotesGoToStderrUnlessADestinationShowsThem) {
  Logger empty;
  ::testing::internal::CaptureStderr();
  empty.warn("no destination");
  empty.info("a note");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "tessera: warning: no destination\ntessera: info: a note\n");

  // Only file-like destinations: the warning goes to them and to stderr.
  RecordingDestination file;
  Logger to_files({&file});
  ::testing::internal::CaptureStderr();
  to_files.warn("to the file too");
  to_files.info("a note to the file too");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "tessera: warning: to the file too\ntessera: info: a note to the file too\n");
  EXPECT_EQ(file.texts, (std::vector<std::string>{"warning:to the file too", "info:a note to the file too"}));

  ShowingDestination shown;
  Logger logger({&file, &shown});
  ::testing::internal::CaptureStderr();
  logger.warn("to the destination");
  logger.info("a note to the destination");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(shown.texts, (std::vector<std::string>{"warning:to the destination", "info:a note to the destination"}));
}

// ---------------------------------------------------------------------------------------------------------
// JSONL

TEST(JsonlWriter, WritesOneObjectPerCallAndCreatesFolders) {
  TempDir dir;
  const fs::path path = dir.path() / "nested" / "deeper" / "metrics.jsonl";
  JsonlWriter writer(JsonlWriterOptions().path(path.string()));
  EXPECT_EQ(writer.name(), "jsonl");
  EXPECT_TRUE(writer.is_logger());
  EXPECT_FALSE(fs::exists(dir.path() / "nested"));  // nothing on disk before the first use

  State state;
  Logger logger({&writer});
  logger.log_hyperparameters({{"seed", "42"}, {"optimizer", "sgd"}});
  logger.log_metrics({{"loss/train/total", 0.25}, {"metrics/train/accuracy", 0.5}}, stamp(0, 1, 32, 0.125));
  logger.log_metrics({{"metrics/eval/accuracy", 0.75}}, stamp(1, 8, 256, 2.5));
  logger.warn("he said \"hi\"");
  writer.run_event(Event::EpochEnd, state, logger);  // flushes

  const auto lines = read_lines(path);  // before close: the flush at EpochEnd made them visible
  ASSERT_EQ(lines.size(), 4u);
  const auto hp = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(hp.size(), 1u);
  EXPECT_EQ(hp.at("hparams").at("seed"), "42");
  EXPECT_EQ(hp.at("hparams").at("optimizer"), "sgd");

  const auto m1 = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(m1.at("epoch").get<int64_t>(), 0);
  EXPECT_EQ(m1.at("batch").get<int64_t>(), 1);
  EXPECT_EQ(m1.at("sample").get<int64_t>(), 32);
  EXPECT_EQ(m1.at("wct").get<double>(), 0.125);
  EXPECT_EQ(m1.at("loss/train/total").get<double>(), 0.25);
  EXPECT_EQ(m1.at("metrics/train/accuracy").get<double>(), 0.5);
  EXPECT_EQ(m1.size(), 6u);

  const auto m2 = nlohmann::json::parse(lines[2]);
  EXPECT_EQ(m2.at("epoch").get<int64_t>(), 1);
  EXPECT_EQ(m2.at("batch").get<int64_t>(), 8);
  EXPECT_EQ(m2.at("metrics/eval/accuracy").get<double>(), 0.75);

  const auto text = nlohmann::json::parse(lines[3]);
  EXPECT_EQ(text.at("level"), "warning");
  EXPECT_EQ(text.at("text"), "he said \"hi\"");

  writer.close();
  writer.close();                                                     // idempotent
  logger.log_metrics({{"after/close", 1.0}}, stamp(2, 9, 288, 3.0));  // ignored once closed
  EXPECT_EQ(read_lines(path).size(), 4u);
}

TEST(JsonlWriter, NonFiniteValuesBecomeNullAndDoublesRoundTrip) {
  TempDir dir;
  const fs::path path = dir.path() / "m.jsonl";
  {
    JsonlWriter writer(JsonlWriterOptions().path(path.string()));
    writer.log_metrics({{"nan", std::nan("")}, {"third", 1.0 / 3.0}}, stamp(0, 0, 0, 0.0));
    writer.close();
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 1u);
  const auto m = nlohmann::json::parse(lines[0]);
  EXPECT_TRUE(m.at("nan").is_null());
  EXPECT_EQ(m.at("third").get<double>(), 1.0 / 3.0);  // bitwise: shortest round-trip text
}

TEST(MetricWriters, ConstructionAloneLeavesFilesAlone) {
  // Building a run that never trains (tessera-run --plan) must not truncate the metrics of an earlier run.
  TempDir dir;
  const fs::path jsonl = dir.path() / "old.jsonl";
  const fs::path csv = dir.path() / "old.csv";
  std::ofstream(jsonl) << "{\"old\": 1}\n";
  std::ofstream(csv) << "old\n";
  {
    JsonlWriter a(JsonlWriterOptions().path(jsonl.string()));
    CsvWriter b(CsvWriterOptions().path(csv.string()));
    a.close();
    b.close();
  }
  EXPECT_EQ(read_lines(jsonl), std::vector<std::string>{"{\"old\": 1}"});
  EXPECT_EQ(read_lines(csv), std::vector<std::string>{"old"});

  // Nor does a Trainer that is built but never trains (setup events only, something logged at setup).
  State state;
  Logger logger;
  {
    CsvWriter c(CsvWriterOptions().path(csv.string()));
    JsonlWriter j(JsonlWriterOptions().path(jsonl.string()));
    for (Event e : {Event::Init, Event::BeforeLoad, Event::AfterLoad}) {
      c.run_event(e, state, logger);
      j.run_event(e, state, logger);
    }
    j.log_text("warning", "plan warning");
    c.close();
    j.close();
  }
  EXPECT_EQ(read_lines(jsonl), std::vector<std::string>{"{\"old\": 1}"});
  EXPECT_EQ(read_lines(csv), std::vector<std::string>{"old"});

  // Training starts a fresh file (the header only, for CSV) once something came out (a batch's end); a run
  // that stops before (its first batch refused) leaves the file of the run before as it was.
  {
    CsvWriter c(CsvWriterOptions().path(csv.string()));
    c.run_event(Event::Init, state, logger);
    c.run_event(Event::FitStart, state, logger);
    c.close();
  }
  EXPECT_EQ(read_lines(csv), std::vector<std::string>{"old"});
  CsvWriter c(CsvWriterOptions().path(csv.string()));
  c.run_event(Event::Init, state, logger);
  c.run_event(Event::FitStart, state, logger);
  c.run_event(Event::BatchEnd, state, logger);
  c.close();
  EXPECT_EQ(read_lines(csv), std::vector<std::string>{"epoch,batch,sample,wct,key,value"});
}

// ---------------------------------------------------------------------------------------------------------
// Resuming a metrics file (JSONL and CSV alike)

using WriterFactory = std::function<std::unique_ptr<LoggerDestination>(const fs::path&)>;

const std::vector<std::pair<std::string, WriterFactory>>& writer_kinds() {
  static const std::vector<std::pair<std::string, WriterFactory>> kinds{
      {"jsonl", [](const fs::path& p) { return std::make_unique<JsonlWriter>(JsonlWriterOptions().path(p.string())); }},
      {"csv", [](const fs::path& p) { return std::make_unique<CsvWriter>(CsvWriterOptions().path(p.string())); }},
      {"tensorboard",
       [](const fs::path& p) {
         return std::make_unique<TensorboardWriter>(TensorboardWriterOptions().path(p.string() + ".tfevents"));
       }},
  };
  return kinds;
}

/// The file a `kind` writer made from writer_kinds() writes for `path`.
fs::path file_of(const std::string& kind, const fs::path& path) {
  return kind == "tensorboard" ? fs::path(path.string() + ".tfevents") : path;
}

/// The file of a `kind` writer as two runs that log the same should agree on: all of it, except TensorBoard's
/// wall times.
std::string comparable(const std::string& kind, const fs::path& path) {
  std::ifstream in(file_of(kind, path), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (kind != "tensorboard") return bytes;
  std::string out;
  for (const auto& p : tfevents_payloads(bytes)) out += std::to_string(p.size()) + ":" + p + "\n";
  return out;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int64_t bytes_of(const StateDict& state) { return state.at("bytes").item<int64_t>(); }

/// What a Trainer does with its loggers while it is built: a plan warning (logged before Init), the setup
/// events and, between before_load and after_load, the checkpoint's state when `resume_from` is given.
void setup(LoggerDestination& w, State& state, Logger& logger, const StateDict* resume_from = nullptr) {
  w.log_text("warning", "plan warning");
  w.run_event(Event::Init, state, logger);
  w.run_event(Event::BeforeLoad, state, logger);
  if (resume_from) w.load_state_dict(*resume_from);
  w.run_event(Event::AfterLoad, state, logger);
}

/// Batches [first, last] of 4 per epoch: loss and accuracy per batch, epoch_end after every 4th.
void train(LoggerDestination& w, State& state, Logger& logger, int64_t first, int64_t last) {
  for (int64_t b = first; b <= last; ++b) {
    w.log_metrics({{"loss/train/total", 1.0 / static_cast<double>(b)}, {"metrics/train/accuracy", 0.125 * static_cast<double>(b)}},
                  stamp((b - 1) / 4, b, 32 * b, 0.5 * static_cast<double>(b)));
    if (b % 4 == 0) w.run_event(Event::EpochEnd, state, logger);
  }
}

TEST(MetricWriters, ResumedFileEqualsAnUninterruptedRun) {
  for (const auto& [kind, make] : writer_kinds()) {
    SCOPED_TRACE(kind);
    TempDir dir;
    State state;
    Logger logger;

    // One run in one go.
    const fs::path whole = dir.path() / "whole" / "metrics";
    {
      auto w = make(whole);
      setup(*w, state, logger);
      w->run_event(Event::FitStart, state, logger);
      train(*w, state, logger, 1, 10);
      w->run_event(Event::FitEnd, state, logger);
      w->close();
    }

    // A run checkpointed after batch 6 and killed after batch 8 (its file then holds batches 7 and 8)...
    const fs::path resumed = dir.path() / "resumed" / "metrics";
    StateDict saved;
    {
      auto w = make(resumed);
      setup(*w, state, logger);
      w->run_event(Event::FitStart, state, logger);
      train(*w, state, logger, 1, 6);
      saved = w->state_dict();
      EXPECT_EQ(bytes_of(saved), static_cast<int64_t>(fs::file_size(file_of(kind, resumed))));  // flushed: on disk
      train(*w, state, logger, 7, 8);
      w->close();
    }
    EXPECT_GT(fs::file_size(file_of(kind, resumed)), static_cast<uintmax_t>(bytes_of(saved)));
    // ... then resumed from the checkpoint by a fresh writer: batches 7-8 are dropped and written again, the
    // plan warning and the CSV header are not repeated.
    {
      auto w = make(resumed);
      setup(*w, state, logger, &saved);
      w->run_event(Event::FitStart, state, logger);
      train(*w, state, logger, 7, 10);
      w->run_event(Event::FitEnd, state, logger);
      w->close();
    }
    const std::string expected = comparable(kind, whole);
    EXPECT_EQ(comparable(kind, resumed), expected);
    EXPECT_EQ(count_of(expected, "plan warning"), kind == "csv" ? 0u : 1u);
    EXPECT_EQ(count_of(expected, "epoch,batch,sample,wct,key,value"), kind == "csv" ? 1u : 0u);
    // CSV: header + 2 per batch; JSONL: warning + 1 per batch; TensorBoard: version, warning, 1 per batch
    const size_t entries = kind == "tensorboard" ? tfevents_payloads(read_file(file_of(kind, whole))).size()
                                                 : split_lines(expected).size();
    EXPECT_EQ(entries, kind == "csv" ? 21u : kind == "jsonl" ? 11u : 12u);
  }
}

TEST(MetricWriters, ResumeBeforeAnythingWasWrittenStartsAFreshFile) {
  // A checkpoint saved before the writer had written anything (bytes 0): the file is started afresh, with
  // the CSV header.
  for (const auto& [kind, make] : writer_kinds()) {
    SCOPED_TRACE(kind);
    TempDir dir;
    State state;
    Logger logger;
    const fs::path path = dir.path() / "metrics";
    std::ofstream(file_of(kind, path)) << "stale\n";
    const StateDict nothing_written{{"bytes", at::scalar_tensor(int64_t{0}, at::kLong)}};
    auto w = make(path);
    setup(*w, state, logger, &nothing_written);
    w->run_event(Event::FitStart, state, logger);
    w->run_event(Event::BatchEnd, state, logger);
    w->close();
    std::string fresh = kind == "csv" ? "epoch,batch,sample,wct,key,value\n" : "";
    if (kind == "tensorboard") {  // TensorBoard's version event alone
      const std::string version = tfevents_payloads(tfevents::file_version(0))[0];
      fresh = std::to_string(version.size()) + ":" + version + "\n";
    }
    EXPECT_EQ(comparable(kind, path), fresh);
  }
}

TEST(MetricWriters, StateDictBeforeTrainingWritesTheFile) {
  // Trainer::save_checkpoint before fit: the file is started (with what was logged at setup) and counted.
  TempDir dir;
  State state;
  Logger logger;
  const fs::path path = dir.path() / "m.jsonl";
  JsonlWriter w(JsonlWriterOptions().path(path.string()));
  setup(w, state, logger);
  EXPECT_FALSE(fs::exists(path));
  const int64_t bytes = bytes_of(w.state_dict());
  EXPECT_EQ(read_file(path), "{\"level\":\"warning\",\"text\":\"plan warning\"}\n");
  EXPECT_EQ(bytes, static_cast<int64_t>(fs::file_size(path)));
  w.close();
  EXPECT_EQ(bytes_of(w.state_dict()), bytes);  // closed: no more writes, same count
}

TEST(MetricWriters, LoadingIntoAWriterAlreadyWritingRewindsItsFile) {
  // trainer.fit(); trainer.load_checkpoint(earlier); trainer.fit(): the file goes back to the checkpoint.
  TempDir dir;
  State state;
  Logger logger;
  const fs::path path = dir.path() / "m.csv";
  CsvWriter w(CsvWriterOptions().path(path.string()));
  setup(w, state, logger);
  w.run_event(Event::FitStart, state, logger);
  train(w, state, logger, 1, 2);
  const StateDict saved = w.state_dict();
  const std::string at_checkpoint = read_file(path);
  train(w, state, logger, 3, 4);
  w.run_event(Event::BeforeLoad, state, logger);
  w.load_state_dict(saved);
  EXPECT_EQ(read_file(path), at_checkpoint);
  w.run_event(Event::AfterLoad, state, logger);
  w.run_event(Event::FitStart, state, logger);
  train(w, state, logger, 3, 3);
  w.close();
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 7u);
  EXPECT_EQ(lines[0], "epoch,batch,sample,wct,key,value");
  EXPECT_EQ(lines[5], "0,3,96,1.5,loss/train/total,0.3333333333333333");
  EXPECT_EQ(lines[6], "0,3,96,1.5,metrics/train/accuracy,0.375");
}

TEST(MetricWriters, ResumeRefusesAFileShorterThanTheCheckpoint) {
  for (const auto& [kind, make] : writer_kinds()) {
    SCOPED_TRACE(kind);
    TempDir dir;
    State state;
    Logger logger;
    const fs::path given = dir.path() / "metrics", path = file_of(kind, given);
    const StateDict saved{{"bytes", at::scalar_tensor(int64_t{100}, at::kLong)}};
    for (const bool exists : {false, true}) {
      if (exists) std::ofstream(path) << "only 20 bytes here.\n";
      auto w = make(given);
      try {
        setup(*w, state, logger, &saved);
        FAIL() << "expected tessera::Error";
      } catch (const InputError& e) {
        FAIL() << "expected tessera::Error, not InputError: " << e.what();
      } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(path.string()), std::string::npos) << what;
        EXPECT_NE(what.find("changed since the checkpoint"), std::string::npos) << what;
        if (exists) EXPECT_NE(what.find("it has 20 bytes, the checkpoint expects at least 100"), std::string::npos) << what;
      }
      w->close();
      EXPECT_EQ(fs::exists(path), exists);  // left alone
      if (exists) EXPECT_EQ(read_file(path), "only 20 bytes here.\n");
    }
    // A state without the entry (or with a wrong one) is an InputError naming the writer.
    auto w = make(given);
    EXPECT_THROW(w->load_state_dict({}), InputError);
    EXPECT_THROW(w->load_state_dict({{"bytes", at::scalar_tensor(-1, at::kLong)}}), InputError);
    EXPECT_THROW(w->load_state_dict({{"bytes", at::scalar_tensor(1.5, at::kDouble)}}), InputError);
  }
}

TEST(JsonlWriter, UnwritablePathIsInputErrorNamingIt) {
  TempDir dir;
  const fs::path blocker = dir.path() / "a_file";
  std::ofstream(blocker) << "x";
  const std::string bad = (blocker / "sub" / "metrics.jsonl").string();  // parent is a regular file
  try {
    JsonlWriter writer(JsonlWriterOptions().path(bad));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  // The path is an existing folder.
  EXPECT_THROW(JsonlWriter(JsonlWriterOptions().path(dir.path().string())), InputError);
  EXPECT_THROW(JsonlWriter(JsonlWriterOptions().path("")), InputError);
}

// ---------------------------------------------------------------------------------------------------------
// CSV

TEST(CsvWriter, WritesLongFormatRowsWithHeader) {
  TempDir dir;
  const fs::path path = dir.path() / "out" / "metrics.csv";
  CsvWriter writer(CsvWriterOptions().path(path.string()));
  EXPECT_EQ(writer.name(), "csv");
  State state;
  Logger logger({&writer});
  logger.log_hyperparameters({{"seed", "1"}});  // not written
  logger.log_metrics({{"loss/train/total", 0.5}, {"metrics/train/accuracy", 0.25}}, stamp(0, 2, 64, 1.5));
  logger.log_metrics({{"odd,key \"q\"", -2.0}}, stamp(1, 4, 128, 3.0));
  logger.warn("not written");
  writer.run_event(Event::FitEnd, state, logger);  // flushes

  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "epoch,batch,sample,wct,key,value");
  EXPECT_EQ(lines[1], "0,2,64,1.5,loss/train/total,0.5");
  EXPECT_EQ(lines[2], "0,2,64,1.5,metrics/train/accuracy,0.25");
  EXPECT_EQ(lines[3], "1,4,128,3,\"odd,key \"\"q\"\"\",-2");
  writer.close();
}

TEST(CsvWriter, UnwritablePathIsInputErrorNamingIt) {
  TempDir dir;
  const fs::path blocker = dir.path() / "a_file";
  std::ofstream(blocker) << "x";
  const std::string bad = (blocker / "metrics.csv").string();
  try {
    CsvWriter writer(CsvWriterOptions().path(bad));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------------------
// TensorBoard

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

TEST(Tfevents, RecordsAreTheBytesTensorBoardsOwnProtosSerialize) {
  // CRC-32C check values (RFC 3720, B.4; the Castagnoli CRC's "123456789") and TFRecord's mask.
  EXPECT_EQ(tfevents::crc32c("123456789", 9), 0xe3069283u);
  EXPECT_EQ(tfevents::crc32c(std::string(32, '\0').data(), 32), 0x8a9136aau);
  EXPECT_EQ(tfevents::masked_crc32c(""), 0xa282ead8u);
  EXPECT_EQ(tfevents::masked_crc32c("123456789"), 0xc78ab0e5u);
  // Each expected record: the Event built with tensorboard 2.21.0's event_pb2 / plugin protos, serialized
  // (deterministic), framed with its masked_crc32c.
  EXPECT_EQ(tfevents::file_version(1.5),
            from_hex("1800000000000000a37f4b2209000000000000f83f1a0d627261696e2e4576656e743a322a28646c"));
  EXPECT_EQ(tfevents::scalars(1.5, 3, {{"a", 0.25}, {"loss", 2.0}}),
            from_hex("2400000000000000422b804d09000000000000f83f10032a170a080a0161150000803e0a0b0a046c6f7373150000"
                     "0040de617f05"));
  EXPECT_EQ(tfevents::text(2.0, 300, "log/info", "hi *there*"),
            from_hex("34000000000000005e33175c09000000000000004010ac022a260a240a086c6f672f696e666f420e0807420a686920"
                     "2a74686572652a4a080a060a047465787410e61458"));
  EXPECT_EQ(tfevents::session_start(2.5, 0, {{"lr", "0.1"}, {"name", "sgd"}}, 1.25),
            from_hex("6d000000000000003d4de6710900000000000004402a620a600a1c5f68706172616d735f2f73657373696f6e5f7374"
                     "6172745f696e666f42060801120212004a380a360a0768706172616d73122b1a290a0f0a026c721209119a99999999"
                     "99b93f0a0d0a046e616d6512051a0373676429000000000000f43f0a8f21bc"));
}

TEST(TensorboardWriter, WritesScalarsTextAndTheRunsSettingsOnce) {
  TempDir dir;
  const fs::path path = dir.path() / "tb" / "events.out.tfevents.x";
  TensorboardWriter writer(TensorboardWriterOptions().path(path.string()));
  EXPECT_EQ(writer.name(), "tensorboard");
  State state;
  Logger logger({&writer});
  // What a Trainer does: the recipe's settings at Init, training, the fingerprint at the end.
  writer.run_event(Event::Init, state, logger);
  logger.log_hyperparameters({{"optimizer.sgd.lr", "0.1"}, {"model", "a|b"}});
  writer.run_event(Event::AfterLoad, state, logger);
  EXPECT_FALSE(fs::exists(path));  // nothing on disk before training starts
  writer.run_event(Event::FitStart, state, logger);
  logger.log_metrics({{"loss/train/total", 0.5}, {"lr", 0.1}}, stamp(0, 1, 32, 0.5));
  state.timestamp.batch = 2;
  writer.run_event(Event::BatchEnd, state, logger);
  logger.warn("careful");
  logger.log_hyperparameters({{"weights_fingerprint", "0123"}});
  writer.run_event(Event::FitEnd, state, logger);
  writer.close();

  std::ifstream in(path, std::ios::binary);
  const auto got = tfevents_payloads(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
  // Without wall times, each record is what the encoder makes with wall time 0.
  auto payload = [](const std::string& record) { return tfevents_payloads(record).at(0); };
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got[0], payload(tfevents::file_version(0)));
  EXPECT_EQ(got[1], payload(tfevents::text(0, 0, "hyperparameters",
                                           "| name | value |\n|---|---|\n| model | a\\|b |\n| optimizer.sgd.lr | 0.1 |\n")));
  // The session-start summary at the first training event, with the settings logged before it: "0.1" as a
  // number (google.protobuf.Value's number_value: field 2, a double), "a|b" as text (string_value: field 3).
  EXPECT_NE(got[2].find("_hparams_/session_start_info"), std::string::npos);
  const double lr = 0.1;
  std::string lr_value = "\x11";
  lr_value.append(reinterpret_cast<const char*>(&lr), 8);
  EXPECT_NE(got[2].find("optimizer.sgd.lr\x12\x09" + lr_value), std::string::npos);
  EXPECT_NE(got[2].find(std::string("model\x12\x05\x1a\x03") + "a|b"), std::string::npos);
  EXPECT_EQ(got[3], payload(tfevents::scalars(0, 1, {{"loss/train/total", 0.5}, {"lr", 0.1}})));
  EXPECT_EQ(got[4], payload(tfevents::text(0, 2, "log/warning", "careful")));  // at the latest event's batch
  // Settings logged after training started are text only: one session per run.
  EXPECT_EQ(got[5], payload(tfevents::text(0, 2, "hyperparameters",
                                           "| name | value |\n|---|---|\n| weights_fingerprint | 0123 |\n")));
}

TEST(TensorboardWriter, WritesPicturesAsPngImageSummaries) {
  TempDir dir;
  const fs::path path = dir.path() / "events.out.tfevents.x";
  TensorboardWriter writer(TensorboardWriterOptions().path(path.string()));
  EXPECT_TRUE(writer.takes_images());
  Logger logger({&writer});
  EXPECT_TRUE(logger.takes_images());
  const at::Tensor gray = at::arange(6, at::kByte).reshape({2, 3, 1});
  const at::Tensor rgb = at::arange(24, at::kByte).reshape({1, 8, 3}).slice(1, 0, 8, 2);  // not contiguous
  ASSERT_FALSE(rgb.is_contiguous());
  logger.log_image("images/train", gray, stamp(0, 3, 96, 1.0));
  logger.log_image("images/eval", rgb, stamp(0, 4, 128, 1.5));
  writer.close();
  const auto got = tfevents_payloads(read_file(path));
  ASSERT_EQ(got.size(), 3u);
  const at::Tensor packed = rgb.contiguous();
  EXPECT_EQ(got[1], tfevents_payloads(tfevents::image(0, 3, "images/train",
                                                      png::encode(gray.data_ptr<uint8_t>(), 2, 3, 1), 2, 3, 1))[0]);
  EXPECT_EQ(got[2], tfevents_payloads(tfevents::image(0, 4, "images/eval",
                                                      png::encode(packed.data_ptr<uint8_t>(), 1, 4, 3), 1, 4, 3))[0]);
  // Anything but uint8 [height, width, 1 or 3] on the CPU is a programming error, said as such.
  TensorboardWriter other(TensorboardWriterOptions().path((dir.path() / "b.tfevents").string()));
  EXPECT_THROW(other.log_image("x", at::zeros({2, 3, 1}), stamp(0, 0, 0, 0)), Error);
  EXPECT_THROW(other.log_image("x", at::zeros({2, 3, 2}, at::kByte), stamp(0, 0, 0, 0)), Error);
  EXPECT_THROW(other.log_image("x", at::zeros({6}, at::kByte), stamp(0, 0, 0, 0)), Error);
  // The file writers and the progress bar keep no pictures.
  JsonlWriter jsonl(JsonlWriterOptions().path((dir.path() / "m.jsonl").string()));
  EXPECT_FALSE(jsonl.takes_images());
  EXPECT_FALSE(Logger({&jsonl}).takes_images());
}

TEST(TensorboardWriter, ResumedWriterDoesNotRepeatTheSettings) {
  // Resuming: the settings logged at Init again are dropped with the rest of what came before the load.
  TempDir dir;
  const fs::path path = dir.path() / "events.out.tfevents.x";
  State state;
  Logger none;
  StateDict saved;
  {
    TensorboardWriter w(TensorboardWriterOptions().path(path.string()));
    w.log_hyperparameters({{"seed", "1"}});
    w.run_event(Event::Init, state, none);
    w.run_event(Event::FitStart, state, none);
    saved = w.state_dict();
    w.close();
  }
  const std::string before = read_file(path);
  TensorboardWriter w(TensorboardWriterOptions().path(path.string()));
  w.log_hyperparameters({{"seed", "1"}});
  w.run_event(Event::Init, state, none);
  w.run_event(Event::BeforeLoad, state, none);
  w.load_state_dict(saved);
  w.run_event(Event::AfterLoad, state, none);
  w.run_event(Event::FitStart, state, none);
  w.close();
  EXPECT_EQ(read_file(path), before);  // byte for byte: nothing was added
  EXPECT_EQ(count_of(before, "_hparams_/session_start_info"), 1u);
}

TEST(TensorboardWriter, RefusesAPathTensorBoardWouldNotRead) {
  TempDir dir;
  try {
    TensorboardWriter w(TensorboardWriterOptions().path((dir.path() / "metrics.tb").string()));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("names contain \"tfevents\""), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("metrics.tb"), std::string::npos) << e.what();
  }
  EXPECT_THROW(TensorboardWriter(TensorboardWriterOptions().path(dir.path().string())), InputError);  // a folder
}

// ---------------------------------------------------------------------------------------------------------
// Progress bar

/// Drives `dest` through one epoch of `n` batches of 32 samples taking 0.1 s each, loss 1/(batch+1).
void run_epoch(Callback& dest, State& state, Logger& logger, int64_t epoch, int64_t n) {
  state.timestamp.epoch = epoch;
  state.timestamp.batch_in_epoch = 0;
  state.timestamp.sample_in_epoch = 0;
  state.timestamp.epoch_wct = 0;
  dest.run_event(Event::EpochStart, state, logger);
  for (int64_t i = 1; i <= n; ++i) {
    state.timestamp.batch += 1;
    state.timestamp.sample += 32;
    state.timestamp.batch_in_epoch = i;
    state.timestamp.sample_in_epoch = 32 * i;
    state.timestamp.epoch_wct = 0.1 * static_cast<double>(i);
    state.metrics["loss/train/total"] = 1.0 / static_cast<double>(state.timestamp.batch + 1);
    dest.run_event(Event::BatchEnd, state, logger);
  }
  // as the trainer does: the epoch counters move on before EpochEnd
  state.timestamp = state.timestamp.to_next_epoch();
  dest.run_event(Event::EpochEnd, state, logger);
}

State bar_state(Time max_duration, int64_t batches_per_epoch) {
  State state;
  state.time.max_duration = max_duration;
  state.time.batches_per_epoch = batches_per_epoch;
  state.time.samples_per_epoch = 32 * batches_per_epoch;
  return state;
}

TEST(ProgressBar, PlainModePrintsTenPercentStepsEpochLinesAndEval) {
  std::ostringstream out;
  ProgressBar bar(ProgressBarOptions().width(10).plain_seconds(0), &out, /*terminal=*/false);
  EXPECT_FALSE(bar.terminal());
  EXPECT_EQ(bar.name(), "progress_bar");
  State state = bar_state(Time(2, TimeUnit::Epoch), 20);
  Logger logger({&bar});
  bar.run_event(Event::FitStart, state, logger);
  run_epoch(bar, state, logger, 0, 20);

  // evaluation: the trainer logs the values and fires EvalEnd
  bar.run_event(Event::EvalStart, state, logger);
  logger.log_metrics({{"metrics/eval/accuracy", 0.75}, {"metrics/eval/cross_entropy", 0.5}}, state.timestamp);
  bar.run_event(Event::EvalEnd, state, logger);

  const std::string text = out.str();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  const auto lines = split_lines(text);
  // 9 lines at 10%..90% (every 2 batches), one at the end of the epoch, one for the evaluation
  ASSERT_EQ(lines.size(), 11u) << text;
  EXPECT_EQ(lines[0].rfind("epoch 1/2  batch  2/20 [#.........]", 0), 0u) << lines[0];
  EXPECT_EQ(lines[8].rfind("epoch 1/2  batch 18/20 [#########.]", 0), 0u) << lines[8];
  // end of epoch: 20 batches, loss 1/21, 640 samples in 2 s, 20 batches left at 0.1 s each
  EXPECT_EQ(lines[9], "epoch 1/2  batch 20/20 [##########]  loss 0.0476  320 samples/s  ETA 0:02");
  EXPECT_EQ(lines[10], "eval @ 20ba: accuracy 0.7500  cross_entropy 0.5000");

  // the second epoch ends the run: ETA 0
  run_epoch(bar, state, logger, 1, 20);
  const auto all = split_lines(out.str());
  EXPECT_EQ(all.back(), "epoch 2/2  batch 20/20 [##########]  loss 0.0244  320 samples/s  ETA 0:00");
}

TEST(ProgressBar, EtaAddsTheEvaluationsLeftAtTheMeanTimeOfThoseRunSoFar) {
  std::ostringstream out;
  ProgressBar bar(ProgressBarOptions().width(10), &out, /*terminal=*/false);
  State state = bar_state(Time(3, TimeUnit::Epoch), 20);
  Evaluator evaluator;
  evaluator.label = "eval";
  evaluator.interval = Time(1, TimeUnit::Epoch);
  state.evaluators.push_back(evaluator);
  state.eval_label = "eval";
  Logger logger({&bar});
  bar.run_event(Event::FitStart, state, logger);
  run_epoch(bar, state, logger, 0, 20);
  // no evaluation has run yet: 40 batches left at 0.1 s
  EXPECT_EQ(split_lines(out.str()).back(), "epoch 1/3  batch 20/20 [##########]  loss 0.0476  320 samples/s  ETA 0:04");
  bar.run_event(Event::EvalStart, state, logger);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  bar.run_event(Event::EvalEnd, state, logger);
  run_epoch(bar, state, logger, 1, 20);
  // after epoch 2: 20 batches left (2 s), and the evaluations at the ends of epochs 2 and 3 (1.5 s or more each)
  const std::string line = split_lines(out.str()).back();
  ASSERT_EQ(line.rfind("epoch 2/3  batch 20/20", 0), 0u) << line;
  const size_t eta = line.rfind("ETA 0:");
  ASSERT_NE(eta, std::string::npos) << line;
  const int seconds = std::stoi(line.substr(eta + 6));
  EXPECT_GE(seconds, 5) << line;
  EXPECT_LT(seconds, 30) << line;
}

TEST(ProgressBar, PlainModePrintsAtMostOneLinePerPlainSeconds) {
  // 20 batches of 0.1 s: by default (10 s) a 2 s epoch prints its end line only; with 0.55 s, the 10% steps
  // reached at 0.6 s, 1.2 s and 1.8 s (a step every 0.2 s, but 0.55 s apart at least: batches 6, 12, 18)
  std::ostringstream quiet;
  ProgressBar by_default(ProgressBarOptions().width(10), &quiet, /*terminal=*/false);
  EXPECT_EQ(by_default.options().plain_seconds(), 10);
  State state = bar_state(Time(1, TimeUnit::Epoch), 20);
  Logger logger({&by_default});
  run_epoch(by_default, state, logger, 0, 20);
  ASSERT_EQ(split_lines(quiet.str()), std::vector<std::string>{"epoch 1/1  batch 20/20 [##########]  loss 0.0476  320 samples/s  ETA 0:00"});

  std::ostringstream out;
  ProgressBar bar(ProgressBarOptions().width(10).plain_seconds(0.55), &out, false);
  State state2 = bar_state(Time(1, TimeUnit::Epoch), 20);
  Logger logger2({&bar});
  run_epoch(bar, state2, logger2, 0, 20);
  const auto lines = split_lines(out.str());
  ASSERT_EQ(lines.size(), 4u) << out.str();
  EXPECT_EQ(lines[0].rfind("epoch 1/1  batch  6/20", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1].rfind("epoch 1/1  batch 12/20", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("epoch 1/1  batch 18/20", 0), 0u) << lines[2];
  EXPECT_EQ(lines[3].rfind("epoch 1/1  batch 20/20", 0), 0u) << lines[3];
  EXPECT_THROW(ProgressBar(ProgressBarOptions().plain_seconds(-1), &out, false), InputError);
}

TEST(ProgressBar, EvalFallsBackToStateMetrics) {
  std::ostringstream out;
  ProgressBar bar(ProgressBarOptions(), &out, false);
  State state = bar_state(Time(1, TimeUnit::Epoch), 4);
  state.timestamp.batch = 4;
  state.metrics = {
      {"loss/train/total", 0.3}, {"metrics/train/accuracy", 0.9}, {"metrics/test/accuracy", 0.8}};
  Logger logger({&bar});
  bar.run_event(Event::EvalStart, state, logger);
  bar.run_event(Event::EvalEnd, state, logger);
  EXPECT_EQ(out.str(), "test @ 4ba: accuracy 0.8000\n");
}

TEST(ProgressBar, TerminalModeRedrawsInPlace) {
  std::ostringstream out;
  ProgressBar bar(ProgressBarOptions().width(8).refresh_seconds(0), &out, /*terminal=*/true);
  EXPECT_TRUE(bar.terminal());
  State state = bar_state(Time(1, TimeUnit::Epoch), 5);
  Logger logger({&bar});
  run_epoch(bar, state, logger, 0, 5);
  const std::string text = out.str();
  // every batch redraws, and the end of the epoch redraws once more and ends the line
  EXPECT_EQ(count_of(text, "\r"), 6u) << text;
  EXPECT_EQ(count_of(text, "\n"), 1u);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_NE(text.find("\repoch 1/1  batch 3/5 [####....]"), std::string::npos) << text;
  EXPECT_NE(text.find("\repoch 1/1  batch 5/5 [########]  loss 0.1667"), std::string::npos) << text;

  // a warning while a line is open starts on a fresh line
  std::ostringstream out2;
  ProgressBar bar2(ProgressBarOptions().refresh_seconds(0), &out2, true);
  Logger logger2({&bar2});
  State state2 = bar_state(Time(1, TimeUnit::Epoch), 5);
  bar2.run_event(Event::EpochStart, state2, logger2);
  state2.timestamp.batch = state2.timestamp.batch_in_epoch = 1;
  bar2.run_event(Event::BatchEnd, state2, logger2);
  logger2.warn("slow data");
  const std::string text2 = out2.str();
  EXPECT_NE(text2.find("\ntessera: warning: slow data\n"), std::string::npos) << text2;
}

TEST(ProgressBar, TerminalModeThrottlesRedraws) {
  std::ostringstream out;
  ProgressBar bar(ProgressBarOptions().refresh_seconds(3600), &out, true);
  State state = bar_state(Time(1, TimeUnit::Epoch), 50);
  Logger logger({&bar});
  run_epoch(bar, state, logger, 0, 50);
  // the first batch, the last batch and the end of the epoch
  EXPECT_EQ(count_of(out.str(), "\r"), 3u) << out.str();
}

TEST(ProgressBar, BatchDurationShortensTheLastEpoch) {
  std::ostringstream out;
  ProgressBar bar(ProgressBarOptions().width(4), &out, false);
  State state = bar_state(Time(25, TimeUnit::Batch), 20);
  Logger logger({&bar});
  run_epoch(bar, state, logger, 0, 20);
  run_epoch(bar, state, logger, 1, 5);
  const auto lines = split_lines(out.str());
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back().rfind("epoch 2/2  batch 5/5 [####]", 0), 0u) << lines.back();
}

TEST(ProgressBar, OnlyRankZeroPrintsAndOptionsAreValidated) {
  std::ostringstream out;
  ProgressBar bar(ProgressBarOptions(), &out, false);
  State state = bar_state(Time(1, TimeUnit::Epoch), 4);
  state.rank = 1;
  Logger logger({&bar});
  run_epoch(bar, state, logger, 0, 4);
  logger.warn("hidden");
  EXPECT_EQ(out.str(), "");

  EXPECT_THROW(ProgressBar(ProgressBarOptions().width(0), &out, false), InputError);
  EXPECT_THROW(ProgressBar(ProgressBarOptions().refresh_seconds(-1), &out, false), InputError);
}

// ---------------------------------------------------------------------------------------------------------
// Console summary

TEST(ConsoleSummary, PrintsTotalsLossMetricsAndThroughput) {
  State state;
  state.timestamp = stamp(2, 40, 1280, 4.0);
  state.metrics = {{"loss/train/total", 0.25}, {"metrics/eval/accuracy", 0.875}, {"time/batch", 1.0}};
  const std::string table = ConsoleSummary::summary(state);
  const auto lines = split_lines(table);
  ASSERT_EQ(lines.size(), 8u) << table;
  EXPECT_EQ(lines[0], "tessera: training summary");
  EXPECT_EQ(lines[1], "  epochs                 2");
  EXPECT_EQ(lines[2], "  batches                40");
  EXPECT_EQ(lines[3], "  samples                1280");
  EXPECT_EQ(lines[4], "  wall time              4.00 s");
  EXPECT_EQ(lines[5], "  throughput             320.0 samples/s");
  EXPECT_EQ(lines[6], "  final train loss       0.2500");
  EXPECT_EQ(lines[7], "  metrics/eval/accuracy  0.8750");
}

TEST(ConsoleSummary, PrintsAtFitEndOnly) {
  std::ostringstream out;
  ConsoleSummary summary(callbacks::ConsoleSummaryOptions(), &out);
  EXPECT_EQ(summary.name(), "console_summary");
  State state;
  state.timestamp = stamp(1, 10, 320, 1.0);
  state.metrics = {{"loss/train/total", 0.5}};
  Logger logger({&summary});
  summary.run_event(Event::FitStart, state, logger);
  summary.run_event(Event::EpochEnd, state, logger);
  EXPECT_EQ(out.str(), "");
  summary.run_event(Event::FitEnd, state, logger);
  const std::string text = out.str();
  EXPECT_EQ(text.rfind("tessera: training summary\n", 0), 0u);
  EXPECT_NE(text.find("  samples           320\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  train time        1.00 s\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  throughput        320.0 samples/s\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  final train loss  0.5000\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace tessera
