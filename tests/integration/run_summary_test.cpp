// run_dir/run.json: written when fit() ends (complete, interrupted, failed) into a run folder the run writes to,
// with the plan, what ran and how long it took, the final metrics and the fingerprint; none without a folder.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

/// Sleeps `ms` milliseconds in every apply at before_forward.
class Slow : public Algorithm {
 public:
  explicit Slow(int ms) : ms_(ms), spec_(testing::spec_on("slow", {Event::BeforeForward})) {}
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State&, Logger&) override { std::this_thread::sleep_for(std::chrono::milliseconds(ms_)); }

 private:
  int ms_;
  AlgorithmSpec spec_;
};

/// Raises `signal` (or throws, with 0) at the end of batch `batch`.
class FailAt : public Callback {
 public:
  FailAt(int64_t batch, int signal) : batch_(batch), signal_(signal) {}
  std::string name() const override { return "fail_at"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event != Event::BatchEnd || s.timestamp.batch != batch_) return;
    if (signal_ == 0) throw Error("deliberate failure");
    std::raise(signal_);
  }

 private:
  int64_t batch_;
  int signal_;
};

struct RunFolder {
  fs::path dir = fs::temp_directory_path() / ("tessera_summary_" + std::to_string(::getpid()));
  RunFolder() {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~RunFolder() { fs::remove_all(dir); }
  nlohmann::json summary() const {
    std::ifstream in(dir / "run.json");
    return nlohmann::json::parse(in);
  }
};

std::unique_ptr<Trainer> make(const fs::path& run_dir, std::shared_ptr<Callback> callback = nullptr) {
  Components c = testing::tiny_components();
  c.algorithms.push_back(std::make_shared<Slow>(2));
  if (callback) c.callbacks.push_back(std::move(callback));
  return std::make_unique<Trainer>(TrainerOptions().max_duration(Time(2, TimeUnit::Epoch)).threads(1).run_dir(run_dir.string()),
                                   std::move(c), CheckpointOptions(), "max_duration: 2ep\n");
}

TEST(RunSummary, ACompleteRunRecordsItsPlanTraceTimesMetricsAndFingerprint) {
  RunFolder f;
  auto t = make(f.dir);
  t->fit();
  const nlohmann::json j = f.summary();
  EXPECT_EQ(j["format"], "tessera-run-summary/1");
  EXPECT_EQ(j["status"], "complete");
  EXPECT_EQ(j["recipe"], "max_duration: 2ep\n");
  EXPECT_EQ(j["seed"].get<uint64_t>(), t->state().seed);  // the report groups runs of one recipe by seed
  EXPECT_EQ(j["timestamp"]["batch"], 12);  // 2 epochs of 48 examples in batches of 8
  EXPECT_EQ(j["batches_per_epoch"], 6);
  EXPECT_EQ(j["plan"]["events"][0]["event"], "before_forward");
  EXPECT_EQ(j["plan"]["events"][0]["algorithms"][0]["name"], "slow");
  const auto& slow = j["trace"]["slow/before_forward"];
  EXPECT_EQ(slow["count"], 12);
  EXPECT_EQ(slow["first_batch"], 0);
  EXPECT_EQ(slow["last_batch"], 11);
  EXPECT_GE(slow["seconds"].get<double>(), 12 * 0.002);  // the time apply() took, at least the sleeps
  EXPECT_EQ(t->trace().at("slow/before_forward").seconds, slow["seconds"].get<double>());
  EXPECT_EQ(j["metrics"]["metrics/eval/accuracy"], t->state().metrics.at("metrics/eval/accuracy"));
  EXPECT_EQ(j["weights_fingerprint"], weights_fingerprint(*t->state().model));
}

TEST(RunSummary, InterruptedAndFailedRunsSaySoAndNoFolderMeansNoFile) {
  {
    RunFolder f;
    const StopSignalScope scope({SIGINT});
    auto t = make(f.dir, std::make_shared<FailAt>(3, SIGINT));
    EXPECT_THROW(t->fit(), Interrupted);
    const nlohmann::json j = f.summary();
    EXPECT_EQ(j["status"], "interrupted");
    EXPECT_EQ(j["timestamp"]["batch"], 3);
    EXPECT_NE(j["error"].get<std::string>().find("stopped by SIGINT after batch 3"), std::string::npos);
  }
  {
    RunFolder f;
    auto t = make(f.dir, std::make_shared<FailAt>(2, 0));
    EXPECT_THROW(t->fit(), Error);
    const nlohmann::json j = f.summary();
    EXPECT_EQ(j["status"], "failed");
    EXPECT_NE(j["error"].get<std::string>().find("deliberate failure"), std::string::npos);
    EXPECT_FALSE(j.contains("weights_fingerprint"));
  }
  const fs::path absent = fs::temp_directory_path() / ("tessera_summary_absent_" + std::to_string(::getpid()));
  fs::remove_all(absent);
  make(absent)->fit();
  EXPECT_FALSE(fs::exists(absent));  // a run that writes no files leaves no folder behind
}

}  // namespace
}  // namespace tessera
