// The profiler (TrainerOptions::profiler): Composer's cyclic schedule per epoch, one Chrome trace file per window
// of active batches with the trainer's phases, every event, algorithm and callback nested where they ran, and the
// torch operators; training unchanged by it; its settings checked before step 1 and read from recipes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

struct Folder {
  fs::path dir = fs::temp_directory_path() / ("tessera_profiler_" + std::to_string(::getpid()));
  Folder() {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Folder() { fs::remove_all(dir); }
};

/// One complete event ("ph": "X") of a trace.
struct Span {
  std::string name, category, event;
  double begin = 0, end = 0;
  int tid = 0;
  int64_t batch = -1;
  bool contains(const Span& o) const { return begin <= o.begin && o.end <= end; }
};

struct TraceFile {
  nlohmann::json doc;
  std::vector<Span> spans;
  explicit TraceFile(const std::string& path) {
    std::ifstream in(path);
    doc = nlohmann::json::parse(in);
    for (const auto& e : doc.at("traceEvents")) {
      if (e.at("ph") != "X") continue;
      Span s;
      s.name = e.at("name");
      s.category = e.at("cat");
      s.begin = e.at("ts");
      s.end = s.begin + e.at("dur").get<double>();
      s.tid = e.at("tid");
      if (e.contains("args") && e["args"].contains("batch")) s.batch = e["args"]["batch"];
      if (e.contains("args") && e["args"].contains("event")) s.event = e["args"]["event"];
      spans.push_back(s);
    }
  }
  std::vector<Span> named(const std::string& name) const {
    std::vector<Span> out;
    for (const Span& s : spans) {
      if (s.name == name) out.push_back(s);
    }
    return out;
  }
  std::vector<Span> in_category(const std::string& category) const {
    std::vector<Span> out;
    for (const Span& s : spans) {
      if (s.category == category) out.push_back(s);
    }
    return out;
  }
};

/// Acts at after_dataloader and before_forward (so that its spans sit inside those events).
std::shared_ptr<Algorithm> marker() {
  return std::make_shared<testing::FakeAlgorithm>(testing::spec_on("marker", {Event::AfterDataloader, Event::BeforeForward}));
}

/// Looks at every event (so that its spans sit inside each).
class Watcher : public Callback {
 public:
  std::string name() const override { return "watcher"; }
  void run_event(Event, State&, Logger&) override { ++seen; }
  int64_t seen = 0;
};

/// Keeps the notes logged (the profiler's "wrote ..." lines).
class Notes : public LoggerDestination {
 public:
  std::string name() const override { return "notes"; }
  void log_text(const std::string& level, const std::string& text) override { lines.push_back(level + ": " + text); }
  bool shows_text() const override { return true; }
  std::vector<std::string> lines;
};

/// 2 epochs of 6 batches of 8 examples, 2 microbatches each, an evaluation each epoch.
std::unique_ptr<Trainer> make(const fs::path& run_dir, ProfilerOptions profiler, uint64_t seed = 0,
                              std::shared_ptr<Notes> notes = nullptr) {
  Components c = testing::tiny_components(48, 8, seed);
  c.algorithms.push_back(marker());
  c.callbacks.push_back(std::make_shared<Watcher>());
  if (notes) c.callbacks.push_back(notes);
  return std::make_unique<Trainer>(TrainerOptions()
                                       .max_duration(Time(2, TimeUnit::Epoch))
                                       .microbatch_size(4)
                                       .threads(1)
                                       .run_dir(run_dir.string())
                                       .profiler(profiler),
                                   std::move(c));
}

TEST(Profiler, TheScheduleIsComposersCyclicSchedulePerEpoch) {
  using A = ProfilerAction;
  const auto o = ProfilerOptions().skip_first(1).wait(1).warmup(1).active(2).repeat(2);
  const std::vector<A> expected = {A::Skip,   A::Skip,          A::Warmup, A::Active, A::ActiveAndSave, A::Skip,
                                   A::Warmup, A::Active,        A::ActiveAndSave, A::Skip, A::Skip,     A::Skip};
  for (int64_t b = 0; b < 12; ++b) EXPECT_EQ(profiler_action(o, b, 12), expected[static_cast<size_t>(b)]) << b;
  // repeat 0: cycles to the end of the epoch, whose last batch ends its window
  const auto forever = ProfilerOptions().warmup(0).active(3).repeat(0);
  EXPECT_EQ(profiler_action(forever, 5, 100), A::ActiveAndSave);
  EXPECT_EQ(profiler_action(forever, 96, 100), A::Active);
  EXPECT_EQ(profiler_action(forever, 97, 100), A::Active);
  EXPECT_EQ(profiler_action(forever, 99, 100), A::ActiveAndSave);  // a cycle cut short by the epoch's end
  // Composer's defaults: batch 0 warms up, 1-4 are traced
  const auto defaults = ProfilerOptions();
  EXPECT_EQ(profiler_action(defaults, 0, 10), A::Warmup);
  EXPECT_EQ(profiler_action(defaults, 1, 10), A::Active);
  EXPECT_EQ(profiler_action(defaults, 4, 10), A::ActiveAndSave);
  EXPECT_EQ(profiler_action(defaults, 5, 10), A::Skip);
}

TEST(Profiler, WritesOneTracePerWindowWithPhasesEventsAlgorithmsCallbacksAndTorchOperatorsNested) {
  Folder f;
  // Per epoch: batch 0 warms up, batches 1-2 are traced.
  const auto notes = std::make_shared<Notes>();
  auto t = make(f.dir, ProfilerOptions().enabled(true).warmup(1).active(2).repeat(1), 0, notes);
  t->fit();
  const std::vector<std::string> expected = {(f.dir / "traces" / "ep0-ba1-rank0.json").string(),
                                             (f.dir / "traces" / "ep1-ba7-rank0.json").string()};
  ASSERT_EQ(t->traces(), expected);
  // Each file is announced with where the window's batches went.
  std::vector<std::string> wrote;
  for (const std::string& line : notes->lines) {
    if (line.find("profiler: wrote") != std::string::npos) wrote.push_back(line);
  }
  ASSERT_EQ(wrote.size(), 2u);
  // ... the window's summary, from its complete batches (1 and 2), the same as the spans say
  const auto windows = t->profiled_windows();
  ASSERT_EQ(windows.size(), 2u);
  const ProfiledWindow& w = windows[0];
  EXPECT_EQ(w.file, expected[0]);
  EXPECT_EQ(w.epoch, 0);
  EXPECT_EQ(w.first_batch, 1);
  EXPECT_EQ(w.last_batch, 2);
  EXPECT_EQ(w.complete_batches, 2);
  std::vector<std::string> phases;
  for (const auto& [name, ms] : w.phases_ms) phases.push_back(name);
  EXPECT_EQ(phases, (std::vector<std::string>{"dataloader", "forward", "loss", "backward", "optimizer_step"}));
  ASSERT_EQ(w.algorithms_ms.size(), 1u);
  EXPECT_EQ(w.algorithms_ms[0].first, "marker");
  EXPECT_EQ(w.evaluation_ms, 0.0);
  EXPECT_NE(wrote[0].find("; " + w.describe()), std::string::npos) << wrote[0];
  EXPECT_EQ(wrote[0].rfind("info: profiler: wrote " + expected[0] + " (batches 1-2: ", 0), 0u) << wrote[0];
  for (const char* part : {" torch operators); per batch ", " ms: dataloader ", ", forward ", ", loss ", ", backward ",
                           ", optimizer_step ", ", marker "}) {
    EXPECT_NE(wrote[0].find(part), std::string::npos) << part << " in " << wrote[0];
  }
  size_t files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(f.dir / "traces")) ++files;
  EXPECT_EQ(files, 2u);  // no temporary file left behind

  const TraceFile trace(expected[0]);
  EXPECT_EQ(trace.doc["otherData"]["format"], "tessera-trace/1");
  EXPECT_EQ(trace.doc["otherData"]["epoch"], 0);
  EXPECT_EQ(trace.doc["otherData"]["first_batch"], 1);
  EXPECT_EQ(trace.doc["otherData"]["last_batch"], 2);
  EXPECT_EQ(trace.doc["otherData"]["rank"], 0);

  // The phases of batches 1 and 2 only (batch 0 was the warm-up), 2 microbatches each.
  const auto batches = trace.named("batch");
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].batch, 1);
  EXPECT_EQ(batches[1].batch, 2);
  EXPECT_LE(batches[0].end, batches[1].begin);
  for (const char* phase : {"dataloader", "train_batch", "optimizer_step"}) EXPECT_EQ(trace.named(phase).size(), 2u) << phase;
  for (const char* phase : {"microbatch", "forward", "loss", "backward"}) EXPECT_EQ(trace.named(phase).size(), 4u) << phase;
  EXPECT_TRUE(trace.named("evaluation").empty());  // the epoch's evaluation came after the window
  for (const Span& s : trace.spans) {
    if (s.tid == 0) {
      EXPECT_TRUE(s.batch == 1 || s.batch == 2) << s.name;
      EXPECT_GE(s.end, s.begin) << s.name;
    }
  }
  // Nesting: each phase and event inside its batch; forward, loss and backward inside a microbatch inside the
  // train batch; each algorithm and callback span inside the span of the event it ran at.
  auto inside_one = [](const Span& s, const std::vector<Span>& outer) {
    int n = 0;
    for (const Span& o : outer) n += o.contains(s) ? 1 : 0;
    return n;
  };
  for (const Span& s : trace.spans) {
    if (s.tid != 0 || s.name == "batch") continue;
    EXPECT_EQ(inside_one(s, batches), 1) << s.name << " of batch " << s.batch;
  }
  for (const char* phase : {"forward", "loss", "backward"}) {
    for (const Span& s : trace.named(phase)) {
      EXPECT_EQ(inside_one(s, trace.named("microbatch")), 1) << phase;
      EXPECT_EQ(inside_one(s, trace.named("train_batch")), 1) << phase;
    }
  }
  const auto algorithms = trace.in_category("algorithm");
  ASSERT_EQ(algorithms.size(), 2u * (1 + 2));  // at after_dataloader once and at before_forward per microbatch
  for (const Span& a : algorithms) {
    EXPECT_EQ(a.name, "algorithm/marker");
    EXPECT_EQ(inside_one(a, trace.named("event/" + a.event)), 1) << a.event;
  }
  const auto callbacks = trace.in_category("callback");
  EXPECT_EQ(trace.named("callback/watcher").size(), trace.in_category("event").size());  // at every event
  EXPECT_EQ(trace.named("callback/notes").size(), trace.in_category("event").size());    // the logger too
  for (const Span& c : callbacks) EXPECT_EQ(inside_one(c, trace.named("event/" + c.event)), 1) << c.name << " at " << c.event;
  EXPECT_EQ(trace.named("event/before_forward").size(), 4u);
  EXPECT_EQ(trace.named("event/batch_end").size(), 2u);
  // The forward phase lies between the two events that bound it.
  const auto forward = trace.named("forward");
  const auto before = trace.named("event/before_forward"), after = trace.named("event/after_forward");
  for (size_t i = 0; i < forward.size(); ++i) {
    EXPECT_LE(before[i].end, forward[i].begin);
    EXPECT_LE(forward[i].end, after[i].begin);
  }

  // Torch's operators, on their own lines, inside the window, the linear layers' among them, forward and backward.
  const auto ops = trace.in_category("torch_op");
  ASSERT_FALSE(ops.empty());
  std::map<std::string, int> names;
  for (const Span& op : ops) {
    ++names[op.name];
    EXPECT_GE(op.tid, 1);
    EXPECT_GE(op.begin, batches[0].begin - 2.0) << op.name;  // clocks aligned to within a microsecond or two
    EXPECT_LE(op.end, batches[1].end + 2.0) << op.name;
    EXPECT_NE(op.name, "tessera::profiler_clock");  // the scope that aligns them is not shown
  }
  EXPECT_GT(names["aten::addmm"], 0);
  bool backward_op = false;
  for (const auto& [name, n] : names) backward_op = backward_op || name.find("Backward") != std::string::npos;
  EXPECT_TRUE(backward_op);
  EXPECT_EQ(trace.doc["otherData"]["torch_ops"].get<size_t>(), ops.size());

  // The host's memory with each batch's data and at its end (on CUDA the allocator's after each forward and backward
  // too).
  std::vector<double> rss;
  for (const auto& e : trace.doc["traceEvents"]) {
    if (e.at("ph") != "C") continue;
    EXPECT_EQ(e.at("name"), "host RSS (MB)");  // no CUDA counter on the CPU
    rss.push_back(e.at("args").at("resident").get<double>());
    EXPECT_GE(e.at("ts").get<double>(), batches[0].begin);
    EXPECT_LE(e.at("ts").get<double>(), batches[1].end);
  }
  EXPECT_EQ(rss.size(), 2u * 2);
  for (double mb : rss) EXPECT_GT(mb, 1.0);

  const TraceFile second(expected[1]);
  EXPECT_EQ(second.named("batch").size(), 2u);
  EXPECT_EQ(second.named("batch")[0].batch, 7);
}

TEST(Profiler, AWindowAtTheEndOfAnEpochHoldsItsEvaluationAndTheRunSummaryListsTheTraces) {
  Folder f;
  auto t = make(f.dir, ProfilerOptions().enabled(true).skip_first(4).warmup(0).active(2).torch_ops(false));
  t->fit();
  ASSERT_EQ(t->traces().size(), 2u);
  const TraceFile trace(t->traces()[0]);
  EXPECT_EQ(trace.named("batch").size(), 2u);
  EXPECT_TRUE(trace.in_category("torch_op").empty());
  EXPECT_EQ(trace.doc["otherData"]["torch_ops"], 0);
  ASSERT_EQ(trace.named("evaluation").size(), 1u);
  EXPECT_EQ(trace.named("eval_batch").size(), 1u);  // 16 examples in one batch
  EXPECT_EQ(trace.named("eval_forward").size(), 1u);
  EXPECT_EQ(trace.named("event/epoch_end").size(), 1u);
  EXPECT_LE(trace.named("batch")[1].end, trace.named("evaluation")[0].begin);
  // The second window ends the run: the final events are in it.
  const TraceFile last(t->traces()[1]);
  EXPECT_EQ(last.named("event/fit_end").size(), 1u);
  std::ifstream in(f.dir / "run.json");
  const nlohmann::json summary = nlohmann::json::parse(in);
  const auto windows = t->profiled_windows();
  ASSERT_EQ(summary["profiler_windows"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const auto& w = summary["profiler_windows"][i];
    EXPECT_EQ(w["file"], t->traces()[i]);
    EXPECT_EQ(w["first_batch"], windows[i].first_batch);
    EXPECT_EQ(w["complete_batches"], 2);
    EXPECT_EQ(w["batch_ms"].get<double>(), windows[i].batch_ms);
    EXPECT_EQ(w["phases_ms"]["forward"].get<double>(), windows[i].phases_ms[1].second);
    EXPECT_EQ(w["algorithms_ms"]["marker"].get<double>(), windows[i].algorithms_ms[0].second);
    EXPECT_GT(w["evaluation_ms"].get<double>(), 0.0);  // each window reaches its epoch's end
  }
}

TEST(Profiler, ShapesAreRecordedWhenAsked) {
  Folder f;
  auto t = make(f.dir, ProfilerOptions().enabled(true).warmup(0).active(1).record_shapes(true));
  t->fit();
  const TraceFile trace(t->traces()[0]);
  bool found = false;
  for (const auto& e : trace.doc["traceEvents"]) {
    if (e.value("name", "") != "aten::addmm" || !e.contains("args")) continue;
    const auto& shapes = e["args"]["input_shapes"];
    ASSERT_TRUE(shapes.is_array());
    ASSERT_GE(shapes.size(), 3u);
    EXPECT_EQ(shapes[1], nlohmann::json({4, 16}));  // fc1's input: a microbatch of 4 examples of 16 features
    found = true;
    break;
  }
  EXPECT_TRUE(found);
}

TEST(Profiler, TrainingWithTheProfilerEndsOnTheSameWeights) {
  Folder f;
  auto plain = make(f.dir / "plain", ProfilerOptions());
  plain->fit();
  auto traced = make(f.dir / "traced", ProfilerOptions().enabled(true).warmup(1).active(3).repeat(0).record_shapes(true));
  traced->fit();
  EXPECT_EQ(traced->traces().size(), 4u);  // batches 1-3 and 5 of each epoch (cycles of 4, cut by the epoch's end)
  EXPECT_TRUE(plain->traces().empty());
  EXPECT_FALSE(fs::exists(f.dir / "plain" / "traces"));
  EXPECT_EQ(weights_fingerprint(*plain->state().model), weights_fingerprint(*traced->state().model));
  const auto a = plain->state().model->parameters(), b = traced->state().model->parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(a[i].equal(b[i]));
}

TEST(Profiler, AFailedRunKeepsTheTraceOfItsLastWindow) {
  class FailAt : public Callback {
   public:
    std::string name() const override { return "fail_at"; }
    void run_event(Event event, State& s, Logger&) override {
      if (event == Event::BatchEnd && s.timestamp.batch == 3) throw Error("deliberate failure");
    }
  };
  Folder f;
  Components c = testing::tiny_components();
  c.callbacks.push_back(std::make_shared<FailAt>());
  Trainer t(TrainerOptions().max_duration(Time(1, TimeUnit::Epoch)).threads(1).run_dir(f.dir.string()).profiler(
                ProfilerOptions().enabled(true).warmup(0).active(4)),
            std::move(c));
  EXPECT_THROW(t.fit(), Error);
  ASSERT_EQ(t.traces().size(), 1u);
  const TraceFile trace(t.traces()[0]);
  EXPECT_EQ(trace.doc["otherData"]["first_batch"], 0);
  EXPECT_EQ(trace.doc["otherData"]["last_batch"], 2);  // batch 2 (the third) failed at its end
  EXPECT_EQ(trace.named("batch").size(), 2u);            // the failed batch's span never closed
  EXPECT_EQ(trace.named("train_batch").size(), 3u);
}

TEST(Profiler, BadSettingsAreRefusedBeforeStepOne) {
  Folder f;
  auto with = [&](ProfilerOptions o) {
    return testing::input_error_of([&] {
      Trainer t(TrainerOptions().run_dir(f.dir.string()).profiler(o), testing::tiny_components());
    });
  };
  EXPECT_NE(with(ProfilerOptions().enabled(true).active(0)).find("profiler.active"), std::string::npos);
  EXPECT_NE(with(ProfilerOptions().enabled(true).wait(-1)).find("profiler.wait"), std::string::npos);
  std::ofstream(f.dir / "a_file") << "x";
  const std::string blocked = with(ProfilerOptions().enabled(true).folder((f.dir / "a_file" / "traces").string()));
  EXPECT_NE(blocked.find("profiler.folder: cannot create"), std::string::npos) << blocked;
  EXPECT_NE(with(ProfilerOptions().enabled(true).folder("")).find("profiler.folder: is empty"), std::string::npos);
}

TEST(Profiler, ARecipesProfilerSectionTurnsItOnAndIsCheckedAtItsLine) {
  auto options = [](const std::string& text) { return build_run(Recipe::parse(text, "r.yaml"), {}).trainer.profiler(); };
  const std::string base =
      "model: {mlp: {hidden: [8]}}\n"
      "data: {train: {dataset: {synthetic: {size: 16, input_shape: [1, 4, 4], num_classes: 3}}}}\n"
      "optimizer: {sgd: {lr: 0.1}}\n";
  EXPECT_FALSE(options(base).enabled());
  const ProfilerOptions on = options(base + "profiler: {active: 3, torch_ops: false}\n");
  EXPECT_TRUE(on.enabled());
  EXPECT_EQ(on.active(), 3);
  EXPECT_FALSE(on.torch_ops());
  EXPECT_TRUE(options(base + "profiler: {}\n").enabled());
  EXPECT_FALSE(options(base + "profiler: {enabled: false, active: 3}\n").enabled());
  const std::string typo = testing::input_error_of([&] { options(base + "profiler: {activ: 3}\n"); });
  EXPECT_NE(typo.find("r.yaml:4:"), std::string::npos) << typo;
  EXPECT_NE(typo.find("did you mean \"active\""), std::string::npos) << typo;
  const std::string range = testing::input_error_of([&] { options(base + "profiler: {repeat: -1}\n"); });
  EXPECT_NE(range.find("r.yaml:4:"), std::string::npos) << range;
}

}  // namespace
}  // namespace tessera
