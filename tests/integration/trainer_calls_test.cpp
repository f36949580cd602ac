// What a Trainer may be asked, and when: save_checkpoint only at batch boundaries, load_checkpoint and evaluate
// not while fit() runs, nothing from another thread during fit(), and nothing after a failed fit().
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

/// Calls `action` at `event` of batch `batch` (timestamp.batch as the event sees it).
class CallAt : public Callback {
 public:
  CallAt(Event event, int64_t batch, std::function<void()> action)
      : event_(event), batch_(batch), action_(std::move(action)) {}
  std::string name() const override { return "call_at"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event == event_ && state.timestamp.batch == batch_) action_();
  }

 private:
  Event event_;
  int64_t batch_;
  std::function<void()> action_;
};

struct Fixture {
  fs::path dir;
  Fixture() {
    dir = fs::temp_directory_path() / ("tessera_calls_" + std::to_string(::getpid()) + "_" +
                                       std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id())));
    fs::create_directories(dir);
  }
  ~Fixture() { fs::remove_all(dir); }
};

std::unique_ptr<Trainer> make(std::shared_ptr<Callback> callback, const fs::path& dir) {
  Components c = testing::tiny_components();
  if (callback) c.callbacks.push_back(std::move(callback));
  return std::make_unique<Trainer>(TrainerOptions().max_duration(Time(2, TimeUnit::Epoch)).threads(1).run_dir(dir.string()),
                                   std::move(c));
}

TEST(TrainerCalls, SaveCheckpointInsideABatchIsRefusedAndAtItsEndWorks) {
  Fixture f;
  Trainer* trainer = nullptr;
  std::string error;
  auto inside = std::make_shared<CallAt>(Event::AfterForward, 3, [&] {
    try {
      trainer->save_checkpoint((f.dir / "inside.ckpt").string());
    } catch (const InputError& e) {
      error = e.what();
    }
  });
  auto t = make(inside, f.dir);
  trainer = t.get();
  t->fit();
  EXPECT_NE(error.find("save_checkpoint: called in the middle of batch 3"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(f.dir / "inside.ckpt"));

  // At batch_end the state is one point of the run: the file resumes to the same weights as the run in one go.
  auto at_end = std::make_shared<CallAt>(Event::BatchEnd, 4, [&] { trainer->save_checkpoint((f.dir / "end.ckpt").string()); });
  auto u = make(at_end, f.dir);
  trainer = u.get();
  u->fit();
  auto resumed = make(nullptr, f.dir);
  resumed->load_checkpoint((f.dir / "end.ckpt").string());
  EXPECT_EQ(resumed->state().timestamp.batch, 4);
  resumed->fit();
  EXPECT_EQ(weights_fingerprint(*resumed->state().model), weights_fingerprint(*u->state().model));
}

/// A run of 3 epochs of 5 batches (an evaluation at each epoch's end) trained by fit(until) to each of `untils`, then
/// fit(): every event the run fired and its weights. `between` runs at each pause.
std::pair<std::vector<std::string>, std::string> run_in_parts(const std::vector<std::string>& untils,
                                                              const fs::path& dir,
                                                              const std::function<void(Trainer&)>& between = {}) {
  auto log = std::make_shared<std::vector<std::string>>();
  Components c = testing::tiny_components(40, 8);
  c.algorithms.push_back(std::make_shared<testing::FakeAlgorithm>(
      testing::spec_on("rec", std::vector<Event>(all_events().begin(), all_events().end())), log));
  Trainer trainer(TrainerOptions().max_duration(Time::parse("3ep")).threads(1).run_dir(dir.string()), std::move(c));
  for (const auto& until : untils) {
    trainer.fit(Time::parse(until));
    EXPECT_FALSE(trainer.state().fit_complete);
    if (between) between(trainer);
  }
  trainer.fit();
  EXPECT_TRUE(trainer.state().fit_complete);
  return {*log, weights_fingerprint(*trainer.state().model)};
}

TEST(TrainerCalls, FitUntilPausesTheRunAndTheNextFitContinuesItAsIfUnbroken) {
  Fixture f;
  const auto whole = run_in_parts({}, f.dir);
  ASSERT_EQ(std::count(whole.first.begin(), whole.first.end(), "rec@fit_start"), 1);
  // Mid-epoch, at an epoch's last batch (its end and evaluation done before the pause), in epochs, in fractions.
  for (const std::vector<std::string>& untils : std::vector<std::vector<std::string>>{
           {"3ba"}, {"5ba"}, {"1ep", "7ba", "0.8dur"}, {"2ba", "3ba", "4ba", "5ba", "6ba", "14ba"}}) {
    SCOPED_TRACE(::testing::PrintToString(untils));
    EXPECT_EQ(run_in_parts(untils, f.dir), whole);  // the same events in the same order, the same weights
  }
  // Paused, the trainer answers: where it stands, an evaluation, a checkpoint that a new trainer resumes from.
  const fs::path saved = f.dir / "paused.ckpt";
  const auto evaluated = run_in_parts({"7ba"}, f.dir, [&](Trainer& t) {
    EXPECT_EQ(t.state().timestamp.batch, 7);
    EXPECT_TRUE(t.evaluate().count("metrics/eval/accuracy"));
    t.save_checkpoint(saved.string());
  });
  EXPECT_EQ(evaluated.second, whole.second);
  Components c = testing::tiny_components(40, 8);
  c.algorithms.push_back(std::make_shared<testing::FakeAlgorithm>(
      testing::spec_on("rec", std::vector<Event>(all_events().begin(), all_events().end())),
      std::make_shared<std::vector<std::string>>()));
  Trainer resumed(TrainerOptions().max_duration(Time::parse("3ep")).threads(1).run_dir(f.dir.string()), std::move(c));
  resumed.load_checkpoint(saved.string());
  resumed.fit();
  EXPECT_EQ(weights_fingerprint(*resumed.state().model), whole.second);
  // What cannot be: a time already reached, past the run, or in a unit the run cannot count.
  Components d = testing::tiny_components(40, 8);
  Trainer t(TrainerOptions().max_duration(Time::parse("3ep")).threads(1).run_dir(f.dir.string()), std::move(d));
  t.fit(Time::parse("6ba"));
  EXPECT_THAT(testing::input_error_of([&] { t.fit(Time::parse("1ep")); }),
              ::testing::HasSubstr("trainer.fit: until 1ep is already reached: the run is at 6 batches"));
  EXPECT_THAT(testing::input_error_of([&] { t.fit(Time::parse("4ep")); }),
              ::testing::HasSubstr("trainer.fit: until 4ep is past max_duration 3ep; give a time within the run"));
  EXPECT_THAT(testing::input_error_of([&] { t.fit(Time::parse("100tok")); }),
              ::testing::HasSubstr("trainer.fit: until: cannot convert 100tok to batches"));
  t.fit();  // the refusals changed nothing: it still ends the run
  EXPECT_EQ(weights_fingerprint(*t.state().model), whole.second);
}

/// The lines of `path` that contain `text`.
int64_t lines_with(const fs::path& path, const std::string& text) {
  std::ifstream in(path);
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(text) != std::string::npos;
  return n;
}

TEST(TrainerCalls, FitUntilReturnsWithTheMetricFilesWrittenUpToThePause) {
  Fixture f;
  Components c = testing::tiny_components(40, 8);
  c.callbacks.push_back(std::make_shared<callbacks::JsonlWriter>(
      callbacks::JsonlWriterOptions().path((f.dir / "m.jsonl").string())));
  c.callbacks.push_back(std::make_shared<callbacks::CsvWriter>(
      callbacks::CsvWriterOptions().path((f.dir / "m.csv").string())));
  c.evaluators[0].interval = Time::parse("4ba");
  Trainer trainer(TrainerOptions().max_duration(Time::parse("3ep")).threads(1).run_dir(f.dir.string()), std::move(c));
  // Read while the trainer (and its open files) lives on: every batch's loss and the evaluation at the pause.
  trainer.fit(Time::parse("4ba"));
  EXPECT_EQ(lines_with(f.dir / "m.jsonl", "loss/train/total"), 4);
  EXPECT_EQ(lines_with(f.dir / "m.jsonl", "metrics/eval/accuracy"), 1);
  EXPECT_EQ(lines_with(f.dir / "m.csv", ",loss/train/total,"), 4);
  EXPECT_EQ(lines_with(f.dir / "m.csv", ",metrics/eval/accuracy,"), 1);
  trainer.fit(Time::parse("7ba"));
  EXPECT_EQ(lines_with(f.dir / "m.jsonl", "loss/train/total"), 7);
  EXPECT_EQ(lines_with(f.dir / "m.csv", ",loss/train/total,"), 7);
  EXPECT_EQ(lines_with(f.dir / "m.csv", ",metrics/eval/accuracy,"), 1);
}

TEST(TrainerCalls, LoadCheckpointEvaluateAndPredictAreRefusedWhileFitRuns) {
  Fixture f;
  auto first = make(nullptr, f.dir);
  first->save_checkpoint((f.dir / "start.ckpt").string());
  Trainer* trainer = nullptr;
  std::string load_error, eval_error, predict_error;
  auto cb = std::make_shared<CallAt>(Event::BatchEnd, 2, [&] {
    try {
      trainer->load_checkpoint((f.dir / "start.ckpt").string());
    } catch (const InputError& e) {
      load_error = e.what();
    }
    try {
      trainer->evaluate();
    } catch (const InputError& e) {
      eval_error = e.what();
    }
    try {
      trainer->predict(*trainer->state().train_dataloader);
    } catch (const InputError& e) {
      predict_error = e.what();
    }
  });
  auto t = make(cb, f.dir);
  trainer = t.get();
  t->fit();
  EXPECT_NE(load_error.find("load_checkpoint: not while fit() runs"), std::string::npos) << load_error;
  EXPECT_NE(eval_error.find("evaluate: not while fit() runs"), std::string::npos) << eval_error;
  EXPECT_NE(predict_error.find("predict: not while fit() runs"), std::string::npos) << predict_error;
  EXPECT_EQ(t->state().timestamp.batch, 12);  // nothing was rewound
  EXPECT_NO_THROW(t->evaluate());             // after fit() it works
}

TEST(TrainerCalls, CallsFromAnotherThreadWhileFitRunsAreRefused) {
  Fixture f;
  std::promise<void> reached;
  std::promise<void> tried;
  std::shared_future<void> tried_future = tried.get_future().share();
  auto cb = std::make_shared<CallAt>(Event::BatchEnd, 3, [&] {
    reached.set_value();
    tried_future.wait();  // fit() is held at a batch boundary while the other thread tries
  });
  auto t = make(cb, f.dir);
  std::thread fitting([&] { t->fit(); });
  reached.get_future().wait();
  std::string save_error, eval_error;
  try {
    t->save_checkpoint((f.dir / "other.ckpt").string());
  } catch (const InputError& e) {
    save_error = e.what();
  }
  try {
    t->evaluate();
  } catch (const InputError& e) {
    eval_error = e.what();
  }
  tried.set_value();
  fitting.join();
  EXPECT_NE(save_error.find("called from another thread while fit() runs"), std::string::npos) << save_error;
  EXPECT_NE(eval_error.find("called from another thread while fit() runs"), std::string::npos) << eval_error;
  EXPECT_FALSE(fs::exists(f.dir / "other.ckpt"));
}

TEST(TrainerCalls, AfterAFailedFitEveryCallNamesTheFailure) {
  Fixture f;
  auto boom = std::make_shared<CallAt>(Event::AfterForward, 2, [] { throw Error("boom in a plugin"); });
  auto t = make(boom, f.dir);
  EXPECT_THROW(t->fit(), Error);
  for (const std::function<void()>& call : std::vector<std::function<void()>>{
           [&] { t->fit(); }, [&] { t->evaluate(); }, [&] { t->save_checkpoint((f.dir / "x.ckpt").string()); },
           [&] { t->load_checkpoint((f.dir / "x.ckpt").string()); }}) {
    try {
      call();
      ADD_FAILURE() << "expected an Error";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("this trainer's fit() failed ("), std::string::npos) << what;
      EXPECT_NE(what.find("boom in a plugin"), std::string::npos) << what;
    }
  }
  EXPECT_FALSE(fs::exists(f.dir / "x.ckpt"));
}

/// Keeps the State it is handed at Init (as a Python plugin's view does) and counts its close() calls.
class KeepsStateAtInit : public Callback {
 public:
  std::string name() const override { return "keeps_state"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event == Event::Init) kept = &state;
  }
  void close() override { ++closed; }
  State* kept = nullptr;
  int closed = 0;
};

TEST(TrainerCalls, AConstructionThatFailsAfterInitClosesTheCallbacks) {
  Fixture f;
  auto keeper = std::make_shared<KeepsStateAtInit>();
  Components c = testing::tiny_components();
  c.callbacks.push_back(keeper);
  c.callbacks.push_back(std::make_shared<CallAt>(Event::Init, 0, [] { throw Error("boom at init"); }));
  EXPECT_THROW(Trainer(TrainerOptions().max_duration(Time(2, TimeUnit::Batch)).threads(1).run_dir(f.dir.string()),
                       std::move(c)),
               Error);
  EXPECT_NE(keeper->kept, nullptr);
  EXPECT_EQ(keeper->closed, 1);  // opened at Init, closed once
}

TEST(TrainerCalls, MakeTrainerIntoASlotKeepsATrainerWhoseStartFailed) {
  // The Python bindings' case: a plugin keeps a view of the State at Init, and the run's checkpoint (here: a callback
  // at Init) fails after. The Trainer stays in the slot, so what the plugin kept is still the trainer's memory.
  Fixture f;
  auto run_of = [&](int batches) {
    return build_run(Recipe::parse(fmt::format("max_duration: {}ba\nmodel: {{mlp: {{hidden: [8]}}}}\ndata: {{train: "
                                               "{{dataset: {{synthetic: {{size: 32, input_shape: [1, 4, 4], "
                                               "num_classes: 3}}}}, loader: {{batch_size: 16, workers: 0}}}}}}\n"
                                               "optimizer: {{sgd: {{lr: 0.1}}}}\nthreads: 1\nrun_dir: {}\n",
                                               batches, f.dir.string()),
                                   "<string>"));
  };
  tessera::Run run = run_of(2);
  auto keeper = std::make_shared<KeepsStateAtInit>();
  run.components.callbacks.push_back(keeper);
  run.components.callbacks.push_back(std::make_shared<CallAt>(Event::Init, 0, [] { throw Error("boom at init"); }));
  std::unique_ptr<Trainer> slot;
  try {
    make_trainer(std::move(run), "", slot);
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("boom at init"), std::string::npos) << e.what();
  }
  ASSERT_NE(slot, nullptr);
  EXPECT_EQ(keeper->kept, &slot->state());
  EXPECT_EQ(keeper->kept->timestamp.batch, 0);
  EXPECT_GT(keeper->kept->model->named_parameters().size(), 0);
  EXPECT_EQ(keeper->closed, 1);
  slot.reset();
  EXPECT_EQ(keeper->closed, 1);  // not again
  // Without a failure the slot holds the trainer as make_trainer returns it.
  make_trainer(run_of(1), "", slot);
  ASSERT_NE(slot, nullptr);
  slot->fit();
  EXPECT_EQ(slot->state().timestamp.batch, 1);
}

TEST(TrainerCalls, ThreadsAndDeterminismApplyWhileTheTrainerWorksAndAreRestoredAfter) {
  Fixture f;
  const int threads_before = at::get_num_threads();
  at::set_num_threads(1);
  at::globalContext().setDeterministicAlgorithms(false, false);
  int seen_threads = 0;
  bool seen_deterministic = false;
  auto cb = std::make_shared<CallAt>(Event::BatchEnd, 1, [&] {
    seen_threads = at::get_num_threads();
    seen_deterministic = at::globalContext().deterministicAlgorithms();
  });
  Components c = testing::tiny_components();
  c.callbacks.push_back(cb);
  Trainer t(TrainerOptions().max_duration(Time(2, TimeUnit::Batch)).threads(2).deterministic(true).run_dir(f.dir.string()),
            std::move(c));
  EXPECT_EQ(at::get_num_threads(), 1);  // the constructor put them back
  EXPECT_FALSE(at::globalContext().deterministicAlgorithms());
  t.fit();
  EXPECT_EQ(seen_threads, 2);
  EXPECT_TRUE(seen_deterministic);
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_FALSE(at::globalContext().deterministicAlgorithms());
  at::set_num_threads(threads_before);
}

}  // namespace
}  // namespace tessera
