// The composition engine: default order, FILO on after_* events, declared rules overriding both, cycles,
// conflicts, repeats, plan printing, and the run order of algorithms, callbacks and loggers.
#include <gtest/gtest.h>

#include "support.h"

namespace tessera {
namespace {

using testing::FakeAlgorithm;
using testing::spec_on;

std::vector<std::string> names_at(const Plan& plan, Event e) {
  std::vector<std::string> out;
  for (const auto& entry : plan.at(e)) out.push_back(entry.algorithm->name());
  return out;
}

std::vector<Algorithm*> raw(const std::vector<std::shared_ptr<Algorithm>>& v) {
  std::vector<Algorithm*> out;
  for (const auto& a : v) out.push_back(a.get());
  return out;
}

std::string compile_error(const std::vector<std::shared_ptr<Algorithm>>& algos) {
  try {
    compile_plan(raw(algos));
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(Engine, CrossEventDependenciesListWhatOneWritesAndTheOtherUsesAtAnotherEvent) {
  AlgorithmSpec surgery, freezing, smoother;
  surgery.name = "surgery";
  surgery.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure}},
                      {Event::BatchEnd, {Resource::Parameters}, {}}};
  freezing.name = "freezing";
  freezing.accesses = {{Event::EpochEnd, {Resource::ModelStructure}, {Resource::Parameters}},
                       {Event::Init, {}, {Resource::ModelStructure}}};
  smoother.name = "smoother";
  smoother.accesses = {{Event::BeforeLoss, {Resource::Targets}, {Resource::Targets}}};
  EXPECT_EQ(cross_event_dependencies(surgery, freezing),
            (std::vector<std::string>{
                "surgery writes model structure at init; freezing reads it at epoch_end",
                "freezing writes parameters at epoch_end; surgery reads it at batch_end",
            }));
  // Both writing model structure at init is a shared event (the plan orders it), not a dependency across events.
  EXPECT_EQ(cross_event_dependencies(freezing, surgery).size(), 2u);
  EXPECT_TRUE(cross_event_dependencies(surgery, smoother).empty());
  // A writer and a reader-writer at two events: the reading is the dependency, whichever order they are given in.
  AlgorithmSpec late;
  late.name = "late";
  late.accesses = {{Event::AfterLoss, {}, {Resource::Targets}}};
  const std::vector<std::string> read{"late writes targets at after_loss; smoother reads it at before_loss"};
  EXPECT_EQ(cross_event_dependencies(smoother, late), read);
  EXPECT_EQ(cross_event_dependencies(late, smoother), read);
  // Two writers, neither reading.
  AlgorithmSpec early = late;
  early.name = "early";
  early.accesses = {{Event::BeforeLoss, {}, {Resource::Targets}}};
  EXPECT_EQ(cross_event_dependencies(early, late),
            (std::vector<std::string>{"early writes targets at before_loss; late writes it too at after_loss"}));
}

TEST(Engine, RecipeOrderOnBeforeEventsAndReverseOnAfterEvents) {
  std::vector<std::shared_ptr<Algorithm>> algos;
  for (const char* n : {"a", "b", "c"}) {
    algos.push_back(std::make_shared<FakeAlgorithm>(spec_on(n, {Event::BeforeLoss, Event::AfterLoss, Event::BatchEnd})));
  }
  Plan plan = compile_plan(raw(algos));
  EXPECT_EQ(names_at(plan, Event::BeforeLoss), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(names_at(plan, Event::AfterLoss), (std::vector<std::string>{"c", "b", "a"}));
  // *_end events are not after_* events: recipe order.
  EXPECT_EQ(names_at(plan, Event::BatchEnd), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(plan.at(Event::Init).empty());
}

TEST(Engine, AfterEventsAreExactlyTheAfterPrefixedOnes) {
  std::vector<std::string> after;
  for (Event e : all_events()) {
    if (is_after_event(e)) after.push_back(event_name(e));
  }
  EXPECT_EQ(after, (std::vector<std::string>{"after_load", "after_dataloader", "after_forward", "after_loss",
                                             "after_backward", "after_train_batch"}));
  EXPECT_EQ(kNumEvents, 40);
  EXPECT_EQ(event_from_name("eval_after_forward"), Event::EvalAfterForward);
  EXPECT_FALSE(event_from_name("after_dinner").has_value());
}

TEST(Engine, DeclaredRuleOverridesFiloOnAfterDataloader) {
  // The Python original sorts selective backprop first and then reverses the list on AFTER_DATALOADER,
  // so it ends up last. A declared rule must survive the reversal.
  AlgorithmSpec sb = spec_on("selective_backprop", {Event::AfterDataloader});
  sb.accesses[0].writes = {Resource::BatchRows};
  sb.order.push_back({OrderRule::Relation::Before, Selector::writers_of(Resource::Inputs), Event::AfterDataloader,
                      "its scores must see the clean batch"});
  AlgorithmSpec pr = spec_on("progressive_resizing", {Event::AfterDataloader});
  pr.accesses[0].writes = {Resource::Inputs, Resource::Resolution};
  AlgorithmSpec other = spec_on("noop", {Event::AfterDataloader});
  std::vector<std::shared_ptr<Algorithm>> algos{std::make_shared<FakeAlgorithm>(sb), std::make_shared<FakeAlgorithm>(pr),
                                                std::make_shared<FakeAlgorithm>(other)};
  Plan plan = compile_plan(raw(algos));
  // FILO alone would give noop, progressive_resizing, selective_backprop.
  EXPECT_EQ(names_at(plan, Event::AfterDataloader),
            (std::vector<std::string>{"noop", "selective_backprop", "progressive_resizing"}));
  const auto& entry = plan.at(Event::AfterDataloader)[1];
  ASSERT_EQ(entry.reasons.size(), 1u);
  EXPECT_NE(entry.reasons[0].find("its scores must see the clean batch"), std::string::npos);
  EXPECT_NE(plan.table().find("why: selective_backprop before writers of inputs"), std::string::npos);
}

TEST(Engine, AfterRuleByNameOverridesRecipeOrder) {
  AlgorithmSpec a = spec_on("a", {Event::BeforeLoss});
  a.order.push_back({OrderRule::Relation::After, Selector::named("c"), std::nullopt, "needs c's targets"});
  std::vector<std::shared_ptr<Algorithm>> algos{std::make_shared<FakeAlgorithm>(a),
                                                std::make_shared<FakeAlgorithm>(spec_on("b", {Event::BeforeLoss})),
                                                std::make_shared<FakeAlgorithm>(spec_on("c", {Event::BeforeLoss}))};
  Plan plan = compile_plan(raw(algos));
  // a must follow c; b keeps its place before c as far as allowed (stable: b, c, a).
  EXPECT_EQ(names_at(plan, Event::BeforeLoss), (std::vector<std::string>{"b", "c", "a"}));
}

TEST(Engine, RuleForOtherEventDoesNotApply) {
  AlgorithmSpec a = spec_on("a", {Event::BeforeLoss, Event::BatchEnd});
  a.order.push_back({OrderRule::Relation::After, Selector::named("b"), Event::BatchEnd, "only at batch end"});
  std::vector<std::shared_ptr<Algorithm>> algos{
      std::make_shared<FakeAlgorithm>(a), std::make_shared<FakeAlgorithm>(spec_on("b", {Event::BeforeLoss, Event::BatchEnd}))};
  Plan plan = compile_plan(raw(algos));
  EXPECT_EQ(names_at(plan, Event::BeforeLoss), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(names_at(plan, Event::BatchEnd), (std::vector<std::string>{"b", "a"}));
}

TEST(Engine, CycleIsAnErrorNamingTheCycle) {
  AlgorithmSpec a = spec_on("alpha", {Event::BeforeForward});
  a.order.push_back({OrderRule::Relation::Before, Selector::named("beta"), std::nullopt, "alpha first"});
  AlgorithmSpec b = spec_on("beta", {Event::BeforeForward});
  b.order.push_back({OrderRule::Relation::Before, Selector::named("alpha"), std::nullopt, "beta first"});
  std::string msg = compile_error({std::make_shared<FakeAlgorithm>(a), std::make_shared<FakeAlgorithm>(b)});
  EXPECT_NE(msg.find("ordering cycle at before_forward"), std::string::npos) << msg;
  const bool named = msg.find("alpha -> beta -> alpha") != std::string::npos ||
                     msg.find("beta -> alpha -> beta") != std::string::npos;
  EXPECT_TRUE(named) << msg;
  EXPECT_NE(msg.find("alpha first"), std::string::npos) << msg;
  EXPECT_NE(msg.find("beta first"), std::string::npos) << msg;
}

TEST(Engine, ThreeWayCycle) {
  auto make = [](const char* n, const char* before) {
    AlgorithmSpec s = spec_on(n, {Event::AfterLoss});
    s.order.push_back({OrderRule::Relation::Before, Selector::named(before), std::nullopt, std::string(n) + " rule"});
    return std::make_shared<FakeAlgorithm>(s);
  };
  std::string msg = compile_error({make("x", "y"), make("y", "z"), make("z", "x")});
  EXPECT_NE(msg.find("ordering cycle at after_loss"), std::string::npos) << msg;
  EXPECT_TRUE(msg.find("x -> y -> z -> x") != std::string::npos || msg.find("y -> z -> x -> y") != std::string::npos ||
              msg.find("z -> x -> y -> z") != std::string::npos)
      << msg;
}

TEST(Engine, HardConflictIsRefusedWithReasonSoftIsWarned) {
  AlgorithmSpec ema = spec_on("ema", {Event::BatchEnd});
  ema.conflicts.push_back({Selector::named("swa"), false, "model-averaging methods do not compose well"});
  AlgorithmSpec swa = spec_on("swa", {Event::EpochEnd});
  const std::vector<std::shared_ptr<Algorithm>> pair{std::make_shared<FakeAlgorithm>(ema),
                                                     std::make_shared<FakeAlgorithm>(swa)};
  Plan plan = compile_plan(raw(pair));
  ASSERT_EQ(plan.warnings().size(), 1u);
  EXPECT_NE(plan.warnings()[0].find("ema and swa may not compose well: model-averaging"), std::string::npos);

  AlgorithmSpec x = spec_on("x", {Event::Init});
  x.conflicts.push_back({Selector::writers_of(Resource::ModelStructure), true, "x needs the original layers"});
  AlgorithmSpec y = spec_on("y", {Event::Init});
  y.accesses[0].writes = {Resource::ModelStructure};
  std::string msg = compile_error({std::make_shared<FakeAlgorithm>(x), std::make_shared<FakeAlgorithm>(y)});
  EXPECT_NE(msg.find("x and y cannot be combined: x needs the original layers"), std::string::npos) << msg;
}

TEST(Engine, RepeatedAlgorithmIsRefusedUnlessDeclared) {
  auto a1 = std::make_shared<FakeAlgorithm>(spec_on("label_smoothing", {Event::BeforeLoss}));
  auto a2 = std::make_shared<FakeAlgorithm>(spec_on("label_smoothing", {Event::BeforeLoss}));
  std::string msg = compile_error({a1, a2});
  EXPECT_NE(msg.find("label_smoothing appears 2 times (positions 1 2"), std::string::npos) << msg;

  AlgorithmSpec rep = spec_on("hook", {Event::BatchEnd});
  rep.may_repeat = true;
  EXPECT_NO_THROW(compile_plan(raw({std::make_shared<FakeAlgorithm>(rep), std::make_shared<FakeAlgorithm>(rep)})));
}

TEST(Engine, ContextAddedOnTheWayUpKeepsTheSubjectAndItsDetail) {
  const int part = 0;
  const InputError bare("monitor: no such metric");
  EXPECT_EQ(bare.subject(), nullptr);
  const InputError named = bare.with_context("callback \"x\" at init", &part);
  EXPECT_STREQ(named.what(), "callback \"x\" at init: monitor: no such metric");
  EXPECT_EQ(named.subject(), &part);
  EXPECT_EQ(named.detail(), "monitor: no such metric");
  const int outer = 0;
  const InputError twice = named.with_context("trainer", &outer);  // the first subject stays
  EXPECT_STREQ(twice.what(), "trainer: callback \"x\" at init: monitor: no such metric");
  EXPECT_EQ(twice.subject(), &part);
  EXPECT_EQ(twice.detail(), "monitor: no such metric");
}

TEST(Engine, DataTransformWithoutAnAccessAtBeforeDataloaderIsRefused) {
  // The engine orders data-pipeline transforms by their algorithms' places at before_dataloader; one declared
  // elsewhere would be left out of the pipeline without a word.
  struct Noop : data::BatchTransform {
    void apply(Batch&, Rng&) const override {}
    std::string name() const override { return "noop"; }
  };
  struct WithTransform : FakeAlgorithm {
    using FakeAlgorithm::FakeAlgorithm;
    std::shared_ptr<const data::BatchTransform> data_transform() const override { return std::make_shared<Noop>(); }
  };
  const std::string msg = compile_error({std::make_shared<WithTransform>(spec_on("augmenter", {Event::AfterDataloader}))});
  EXPECT_NE(msg.find("augmenter: it has a data-pipeline transform (data_transform()) but declares no access at "
                     "before_dataloader"),
            std::string::npos)
      << msg;
  EXPECT_NO_THROW(compile_plan(raw({std::make_shared<WithTransform>(spec_on("augmenter", {Event::BeforeDataloader}))})));
}

TEST(Engine, SeveralLossInterpolatorsWarn) {
  AlgorithmSpec m = spec_on("mixup", {Event::BeforeBackward});
  m.interpolates_loss = true;
  AlgorithmSpec c = spec_on("cutmix", {Event::BeforeBackward});
  c.interpolates_loss = true;
  const std::vector<std::shared_ptr<Algorithm>> pair{std::make_shared<FakeAlgorithm>(m), std::make_shared<FakeAlgorithm>(c)};
  Plan plan = compile_plan(raw(pair));
  ASSERT_EQ(plan.warnings().size(), 1u);
  EXPECT_NE(plan.warnings()[0].find("mixup, cutmix"), std::string::npos);
}

class NeedsPerExampleLoss : public FakeAlgorithm {
 public:
  using FakeAlgorithm::FakeAlgorithm;
  void check(const State& state) const override {
    if (!state.model || !state.model->supports_per_example_loss()) throw InputError("the model has no per-example loss");
  }
};

TEST(Engine, PlanTimeChecksReportEveryProblemAtOnce) {
  auto a = std::make_shared<NeedsPerExampleLoss>(spec_on("picky", {Event::AfterDataloader}));
  auto b1 = std::make_shared<FakeAlgorithm>(spec_on("dup", {Event::Init}));
  auto b2 = std::make_shared<FakeAlgorithm>(spec_on("dup", {Event::Init}));
  State state;  // no model
  try {
    compile_plan(raw({a, b1, b2}), &state);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("picky: the model has no per-example loss"), std::string::npos) << msg;
    EXPECT_NE(msg.find("dup appears 2 times"), std::string::npos) << msg;
  }
}

TEST(Engine, APlanErrorNamesTheAlgorithmItIsAboutAsItsSubject) {
  // The first error's algorithm: the repeat (not the first of its kind), the later of two in conflict, the one whose
  // plan-time check failed. A recipe run points at its line (registry.h, make_trainer).
  const auto subject_of = [](const std::vector<std::shared_ptr<Algorithm>>& algorithms, const State* state) {
    try {
      compile_plan(raw(algorithms), state);
    } catch (const InputError& e) {
      return e.subject();
    }
    return static_cast<const void*>(nullptr);
  };
  auto first = std::make_shared<FakeAlgorithm>(spec_on("label_smoothing", {Event::BeforeLoss}));
  auto other = std::make_shared<FakeAlgorithm>(spec_on("other", {Event::Init}));
  auto repeat = std::make_shared<FakeAlgorithm>(spec_on("label_smoothing", {Event::BeforeLoss}));
  EXPECT_EQ(subject_of({first, other, repeat}, nullptr), static_cast<const Algorithm*>(repeat.get()));

  AlgorithmSpec x = spec_on("x", {Event::Init});
  x.conflicts.push_back({Selector::writers_of(Resource::ModelStructure), true, "x needs the original layers"});
  AlgorithmSpec y = spec_on("y", {Event::Init});
  y.accesses[0].writes = {Resource::ModelStructure};
  auto ax = std::make_shared<FakeAlgorithm>(x);
  auto ay = std::make_shared<FakeAlgorithm>(y);
  EXPECT_EQ(subject_of({ax, ay}, nullptr), static_cast<const Algorithm*>(ay.get()));
  EXPECT_EQ(subject_of({ay, ax}, nullptr), static_cast<const Algorithm*>(ax.get()));

  State state;  // no model
  auto picky = std::make_shared<NeedsPerExampleLoss>(spec_on("picky", {Event::AfterDataloader}));
  EXPECT_EQ(subject_of({other, picky}, &state), static_cast<const Algorithm*>(picky.get()));
}

TEST(Engine, PlanTableAndJson) {
  std::vector<std::shared_ptr<Algorithm>> algos{
      std::make_shared<FakeAlgorithm>(spec_on("first", {Event::Init, Event::AfterForward})),
      std::make_shared<FakeAlgorithm>(spec_on("second", {Event::AfterForward}))};
  Plan plan = compile_plan(raw(algos));
  const std::string table = plan.table();
  EXPECT_NE(table.find("init"), std::string::npos);
  EXPECT_NE(table.find("1. first"), std::string::npos);
  EXPECT_NE(table.find("after_forward"), std::string::npos);
  EXPECT_NE(table.find("1. second   (after_* event: reverse recipe order)"), std::string::npos) << table;
  EXPECT_NE(table.find("2. first"), std::string::npos);
  EXPECT_EQ(plan.to_json(), R"({"init": ["first"], "after_forward": ["second", "first"]})");
}

class RecordingCallback : public LoggerDestination {
 public:
  RecordingCallback(std::string name, bool logger, std::shared_ptr<std::vector<std::string>> log)
      : name_(std::move(name)), logger_(logger), log_(std::move(log)) {}
  std::string name() const override { return name_; }
  bool is_logger() const override { return logger_; }
  void run_event(Event event, State&, Logger&) override { log_->push_back(name_ + "@" + event_name(event)); }
  void close() override { log_->push_back(name_ + "@close"); }

 private:
  std::string name_;
  bool logger_;
  std::shared_ptr<std::vector<std::string>> log_;
};

TEST(Engine, AlgorithmsThenCallbacksThenLoggersAndLoggersFirstAtInit) {
  auto log = std::make_shared<std::vector<std::string>>();
  std::vector<std::shared_ptr<Algorithm>> algos{
      std::make_shared<FakeAlgorithm>(spec_on("algo", {Event::Init, Event::BatchEnd}), log)};
  std::vector<std::shared_ptr<Callback>> cbs{std::make_shared<RecordingCallback>("logger", true, log),
                                             std::make_shared<RecordingCallback>("callback", false, log)};
  Engine engine(algos, cbs);
  State state;
  engine.compile(state);
  engine.run_event(Event::Init, state);
  engine.run_event(Event::BatchEnd, state);
  state.timestamp.batch = 5;
  engine.run_event(Event::BatchEnd, state);
  engine.close();
  engine.close();  // idempotent
  EXPECT_EQ(*log, (std::vector<std::string>{"logger@init", "callback@init", "algo@init", "algo@batch_end",
                                            "callback@batch_end", "logger@batch_end", "algo@batch_end",
                                            "callback@batch_end", "logger@batch_end", "logger@close",
                                            "callback@close"}));
  const auto& rec = engine.trace().at("algo/batch_end");
  EXPECT_EQ(rec.count, 2);
  EXPECT_EQ(rec.first_batch, 0);
  EXPECT_EQ(rec.last_batch, 5);
  EXPECT_EQ(engine.trace().at("algo/init").count, 1);
  EXPECT_THROW(engine.run_event(Event::BatchEnd, state), Error);
}

TEST(Engine, RuleNamingNoAlgorithmOfTheRunIsAWarningWithDidYouMean) {
  AlgorithmSpec counter = spec_on("counter", {Event::AfterDataloader});
  counter.order.push_back({OrderRule::Relation::Before, Selector::named("selectve_backprop"), std::nullopt, "typo"});
  counter.order.push_back({OrderRule::Relation::After, Selector::named("label_smoothing"), std::nullopt, "absent"});
  counter.order.push_back({OrderRule::Relation::After, Selector::named("late"), std::nullopt, "no shared event"});
  counter.conflicts.push_back({Selector::named("blurpol"), true, "typo in a conflict"});
  AlgorithmSpec sb = spec_on("selective_backprop", {Event::AfterDataloader});
  AlgorithmSpec late = spec_on("late", {Event::BatchEnd});
  // The plan refers to its algorithms (PlanEntry::algorithm): they must outlive it (ASan found a temporary list
  // here, freed before plan.table() read the names).
  const std::vector<std::shared_ptr<Algorithm>> three{std::make_shared<FakeAlgorithm>(counter),
                                                      std::make_shared<FakeAlgorithm>(sb),
                                                      std::make_shared<FakeAlgorithm>(late)};
  Plan plan = compile_plan(raw(three));
  ASSERT_EQ(plan.warnings().size(), 3u) << plan.table();
  EXPECT_EQ(plan.warnings()[0],
            "counter: the ordering rule \"before selectve_backprop\" matches no algorithm of this run; did you mean "
            "\"selective_backprop\"?");
  // a registered algorithm that is not in the run (label_smoothing): no warning, the rule orders the pair when both
  // are used
  EXPECT_EQ(plan.warnings()[1],
            "counter: the ordering rule \"after late\" matches no algorithm of this run (late is in it, but acts at "
            "none of the events of counter)");
  EXPECT_EQ(plan.warnings()[2], "counter: the conflict with \"blurpol\" names no known algorithm; did you mean \"blurpool\"?");
  EXPECT_NE(plan.table().find("did you mean \"selective_backprop\""), std::string::npos);

  // the same rule spelt right, with the algorithm in the run: no warning, and it orders
  AlgorithmSpec right = spec_on("counter", {Event::AfterDataloader});
  right.order.push_back({OrderRule::Relation::Before, Selector::named("selective_backprop"), std::nullopt, "first"});
  const std::vector<std::shared_ptr<Algorithm>> both{std::make_shared<FakeAlgorithm>(sb),
                                                     std::make_shared<FakeAlgorithm>(right)};
  Plan ok = compile_plan(raw(both));
  EXPECT_TRUE(ok.warnings().empty());
  EXPECT_EQ(names_at(ok, Event::AfterDataloader), (std::vector<std::string>{"counter", "selective_backprop"}));
}

TEST(Engine, RuleAtAnEventTheAlgorithmDoesNotActOnIsRefused) {
  AlgorithmSpec a = spec_on("counter", {Event::AfterDataloader, Event::BatchEnd});
  a.order.push_back({OrderRule::Relation::Before, Selector::named("b"), Event::AfterLoss, "wrong event"});
  std::string msg = compile_error({std::make_shared<FakeAlgorithm>(a),
                                   std::make_shared<FakeAlgorithm>(spec_on("b", {Event::AfterLoss}))});
  EXPECT_NE(msg.find("counter: the ordering rule \"before b at after_loss\" is at after_loss, an event counter does "
                     "not act on (its events: after_dataloader, batch_end); give one of those, or no event"),
            std::string::npos)
      << msg;
}

/// Throws `E` from apply.
template <class E>
class Throwing : public FakeAlgorithm {
 public:
  using FakeAlgorithm::FakeAlgorithm;
  void apply(Event, State&, Logger&) override { throw E("bad value"); }
};

class ThrowingCallback : public Callback {
 public:
  std::string name() const override { return "saver"; }
  void run_event(Event, State&, Logger&) override { throw std::out_of_range("not wrapped"); }
};

TEST(Engine, ErrorsFromApplyNameTheAlgorithmAndEventAndKeepTheirType) {
  auto run = [](std::shared_ptr<Algorithm> a) {
    Engine engine({std::move(a)}, {});
    State state;
    engine.compile(state);
    engine.run_event(Event::AfterLoss, state);
  };
  try {
    run(std::make_shared<Throwing<InputError>>(spec_on("typed", {Event::AfterLoss})));
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "algorithm \"typed\" at after_loss: bad value");
  }
  try {
    run(std::make_shared<Throwing<Error>>(spec_on("typed", {Event::AfterLoss})));
    FAIL() << "no exception";
  } catch (const InputError&) {
    FAIL() << "an Error became an InputError";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "algorithm \"typed\" at after_loss: bad value");
  }
  // torch's errors keep their type too, with the algorithm and event added
  class Doubles : public FakeAlgorithm {
   public:
    using FakeAlgorithm::FakeAlgorithm;
    void apply(Event, State&, Logger&) override {
      at::Tensor x = at::ones({2}, at::kDouble);
      (void)x.mm(at::ones({2, 2}, at::kFloat));
    }
  };
  try {
    run(std::make_shared<Doubles>(spec_on("doubles", {Event::AfterLoss})));
    FAIL() << "no exception";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("in algorithm \"doubles\" at after_loss"), std::string::npos)
        << e.what_without_backtrace();
  }
  // other exceptions pass through unchanged (a Python exception from a Python plugin keeps its type and text)
  Engine engine({}, {std::make_shared<ThrowingCallback>()});
  State state;
  engine.compile(state);
  EXPECT_THROW(
      {
        try {
          engine.run_event(Event::BatchEnd, state);
        } catch (const std::out_of_range& e) {
          EXPECT_STREQ(e.what(), "not wrapped");
          throw;
        }
      },
      std::out_of_range);
}

/// Turns the inputs into `dtype` at after_dataloader (an algorithm writing float64 inputs for a float32 model).
class CastsInputs : public FakeAlgorithm {
 public:
  CastsInputs(at::ScalarType dtype) : FakeAlgorithm(spec_on("casts", {Event::AfterDataloader})), dtype_(dtype) {}
  void apply(Event, State& state, Logger&) override { state.batch.set(Batch::kInput, state.batch.input().to(dtype_)); }

 private:
  at::ScalarType dtype_;
};

TEST(Engine, InputsCastAwayFromTheModelsDtypeAreRefusedNamingTheAlgorithm) {
  auto run = [](at::ScalarType to) {
    Engine engine({std::make_shared<CastsInputs>(to)}, {});
    State state;
    state.model = testing::tiny_model();
    state.batch = Batch(at::zeros({2, 1, 8, 8}), at::zeros({2}, at::kLong));
    engine.compile(state);
    engine.run_event(Event::AfterDataloader, state);
    return state.batch.input().scalar_type();
  };
  try {
    run(at::kDouble);
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "algorithm \"casts\" at after_dataloader: the inputs were Float and are now Double, but the model's "
                 "parameters are Float (its forward would fail); keep the inputs' dtype (x.to(Float))");
  }
  EXPECT_EQ(run(at::kFloat), at::kFloat);  // no change: nothing to say
  EXPECT_EQ(run(at::kLong), at::kLong);    // not floating: not this check's business
}

TEST(Engine, ErrorsFromCallbacksNameTheCallbackAndEvent) {
  class Failing : public Callback {
   public:
    std::string name() const override { return "writer"; }
    void run_event(Event e, State&, Logger&) override {
      if (e == Event::EpochEnd) throw InputError("cannot write");
    }
  };
  Engine engine({}, {std::make_shared<Failing>()});
  State state;
  engine.compile(state);
  engine.run_event(Event::BatchEnd, state);
  try {
    engine.run_event(Event::EpochEnd, state);
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "callback \"writer\" at epoch_end: cannot write");
  }
}

class OnlyOnEvenBatches : public FakeAlgorithm {
 public:
  using FakeAlgorithm::FakeAlgorithm;
  bool match(Event e, const State& s) const override { return s.timestamp.batch % 2 == 0; }
};

TEST(Engine, MatchFiltersAtRunTimeAndTraceCountsOnlyApplied) {
  auto a = std::make_shared<OnlyOnEvenBatches>(spec_on("even", {Event::BatchStart}));
  Engine engine({a}, {});
  State state;
  engine.compile(state);
  for (int b = 0; b < 5; ++b) {
    state.timestamp.batch = b;
    engine.run_event(Event::BatchStart, state);
  }
  EXPECT_EQ(engine.trace().at("even/batch_start").count, 3);
  EXPECT_EQ(engine.trace().at("even/batch_start").last_batch, 4);
}

}  // namespace
}  // namespace tessera
