// Mixed precision (autocast), the GradScaler and automatic microbatching (issue 15).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/modules/normalization.h>
#include <torch/version.h>

#include <tessera/tessera.h>

#include "../../src/grad_scaler_ops.h"
#include "support.h"

namespace tessera {
namespace {

// ------------------------------------------------------------------------------------------ GradScaler

TEST(GradScaler, DefaultsArePyTorchs) {
  GradScaler scaler;
  EXPECT_EQ(scaler.scale_value(), 65536.0);
  EXPECT_EQ(scaler.options().growth_factor(), 2.0);
  EXPECT_EQ(scaler.options().backoff_factor(), 0.5);
  EXPECT_EQ(scaler.options().growth_interval(), 2000);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  EXPECT_FALSE(scaler.found_inf());
}

TEST(GradScaler, BadOptionsAreRefusedWithTheirRange) {
  try {
    GradScaler(GradScalerOptions().backoff_factor(1.5));
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("grad_scaler.backoff_factor"), std::string::npos) << e.what();
  }
  EXPECT_THROW(GradScaler(GradScalerOptions().growth_factor(1.0)), InputError);
  EXPECT_THROW(GradScaler(GradScalerOptions().growth_interval(0)), InputError);
}

TEST(GradScaler, UnscaleDividesByTheScaleAndAnInfSkipsAndBacksOff) {
  GradScaler scaler;
  at::Tensor a = at::tensor({65536.0f * 3, -65536.0f}), b = at::tensor({131072.0f});
  scaler.unscale({a, b});
  EXPECT_TRUE(at::equal(a, at::tensor({3.0f, -1.0f})));
  EXPECT_TRUE(at::equal(b, at::tensor({2.0f})));
  EXPECT_FALSE(scaler.found_inf());
  scaler.update();
  EXPECT_EQ(scaler.scale_value(), 65536.0);
  EXPECT_EQ(scaler.growth_tracker(), 1);

  // Injected overflow: one inf among finite values.
  at::Tensor c = at::tensor({1.0f, std::numeric_limits<float>::infinity()});
  at::Tensor d = at::tensor({2.0f});
  scaler.unscale({c, d});
  EXPECT_TRUE(scaler.found_inf());
  scaler.update();
  EXPECT_EQ(scaler.scale_value(), 32768.0);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  EXPECT_FALSE(scaler.found_inf()) << "update() clears the record";
  at::Tensor e = at::tensor({std::numeric_limits<float>::quiet_NaN()});
  scaler.unscale({e});
  EXPECT_TRUE(scaler.found_inf()) << "NaN counts as an overflow too";
}

TEST(GradScaler, GrowsAfterTheIntervalOnlyToAFiniteScale) {
  GradScaler scaler(GradScalerOptions().growth_interval(3).init_scale(4.0));
  for (int step = 1; step <= 2; ++step) {
    scaler.update();
    EXPECT_EQ(scaler.scale_value(), 4.0);
    EXPECT_EQ(scaler.growth_tracker(), step);
  }
  scaler.update();
  EXPECT_EQ(scaler.scale_value(), 8.0);
  EXPECT_EQ(scaler.growth_tracker(), 0);

  GradScaler top(GradScalerOptions().growth_interval(1).init_scale(3.0e38));
  top.update();
  EXPECT_EQ(static_cast<float>(top.scale_value()), 3.0e38f) << "6e38 is not a float: the scale stays";
  EXPECT_EQ(top.growth_tracker(), 0);
}

TEST(GradScaler, StateRoundTripContinuesIdentically) {
  GradScaler a(GradScalerOptions().growth_interval(4));
  a.update();
  a.update();
  at::Tensor inf = at::tensor({std::numeric_limits<float>::infinity()});
  a.unscale({inf});
  a.update();  // backs off: 32768, tracker 0
  a.update();  // tracker 1
  const StateDict saved = a.state_dict();
  EXPECT_EQ(saved.at("scale").scalar_type(), at::kFloat);
  EXPECT_EQ(saved.at("growth_tracker").scalar_type(), at::kInt);

  GradScaler b(GradScalerOptions().growth_interval(4));
  b.load_state_dict(saved);
  EXPECT_EQ(b.scale_value(), 32768.0);
  EXPECT_EQ(b.growth_tracker(), 1);
  for (int i = 0; i < 5; ++i) {
    a.update();
    b.update();
    EXPECT_EQ(a.scale_value(), b.scale_value());
    EXPECT_EQ(a.growth_tracker(), b.growth_tracker());
  }
  EXPECT_EQ(b.scale_value(), 65536.0);

  StateDict broken = saved;
  broken.erase("growth_tracker");
  try {
    b.load_state_dict(broken);
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("\"growth_tracker\""), std::string::npos) << e.what();
  }
}

TEST(GradScaler, TensorOpPathMatchesATenWhereATenHasACpuKernel) {
  // The same gradients through both paths: equal results, bitwise.
  at::manual_seed(5);
  auto grads = [] {
    at::Tensor g = at::randn({64}) * 1000;
    g[7] = std::numeric_limits<float>::infinity();
    return std::vector<at::Tensor>{at::randn({3, 5}) * 65536, g};
  };
  std::vector<at::Tensor> mine = grads(), theirs;
  for (const auto& g : mine) theirs.push_back(g.clone());
  const at::Tensor inv = at::full({}, 1.0f / 65536.0f);
  at::Tensor found_mine = at::zeros({}), found_theirs = at::zeros({});
  detail::unscale_with_tensor_ops({mine[0]}, found_mine, inv);
  EXPECT_EQ(found_mine.item<float>(), 0.0f);
  detail::unscale_with_tensor_ops({mine[1]}, found_mine, inv);
  EXPECT_EQ(found_mine.item<float>(), 1.0f);
  at::Tensor scale = at::full({}, 65536.0f), tracker = at::zeros({}, at::kInt);
  detail::update_with_tensor_ops(scale, tracker, found_mine, 2.0, 0.5, 2000);
  EXPECT_EQ(scale.item<float>(), 32768.0f);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  at::_amp_foreach_non_finite_check_and_unscale_(theirs, found_theirs, inv);
  EXPECT_TRUE(at::equal(mine[0], theirs[0]));
  EXPECT_TRUE(at::equal(mine[1].nan_to_num(0, 0, 0), theirs[1].nan_to_num(0, 0, 0)));
  EXPECT_EQ(found_theirs.item<float>(), 1.0f);
  at::Tensor scale2 = at::full({}, 65536.0f), tracker2 = at::zeros({}, at::kInt);
  at::_amp_update_scale_(scale2, tracker2, found_theirs, 2.0, 0.5, 2000);
  EXPECT_EQ(scale2.item<float>(), scale.item<float>());
  EXPECT_EQ(tracker2.item<int>(), tracker.item<int>());
#else
  GTEST_SKIP() << "LibTorch " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR
               << " has no CPU kernels for ATen's GradScaler ops (the tensor-op path above is what runs)";
#endif
}

TEST(GradScaler, BackwardOverMicrobatchesGivesTheUnscaledGradientsBitwise) {
  // A power-of-two scale commutes with float rounding: scaled backward + unscale = plain backward.
  auto model = testing::tiny_model(1);
  const Batch batch(at::randn({8, 1, 4, 4}), at::randint(0, 3, {8}));
  auto grads_of = [&](bool scaled) {
    for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
    GradScaler scaler;
    for (const Batch& mb : batch.split(3)) {
      at::Tensor loss = model->loss(model->forward(mb), mb) * (static_cast<double>(mb.size()) / 8.0);
      if (scaled) {
        scaler.backward(loss, model->parameters());
      } else {
        loss.backward();
      }
    }
    std::vector<at::Tensor> out;
    for (auto& p : model->parameters()) out.push_back(p.grad().clone());
    return out;
  };
  const auto plain = grads_of(false), scaled = grads_of(true);
  ASSERT_EQ(plain.size(), scaled.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(at::equal(plain[i], scaled[i])) << "parameter " << i;
}

// ------------------------------------------------------------------------------------------ precision

TEST(Precision, ParsesTheThreeNamesAndRefusesOthers) {
  EXPECT_EQ(parse_precision("fp32"), Precision::Fp32);
  EXPECT_EQ(parse_precision("amp_bf16"), Precision::AmpBf16);
  EXPECT_EQ(parse_precision("amp_fp16"), Precision::AmpFp16);
  EXPECT_THROW(parse_precision("bf16"), InputError);
  EXPECT_THROW(Trainer(TrainerOptions().precision("fp16"), testing::tiny_components()), InputError);
}

TEST(Precision, AutocastScopeRunsMatmulsInBfloat16AndRestoresTheState) {
  const at::Tensor a = at::randn({4, 4}), b = at::randn({4, 4});
  {
    const AutocastScope scope(Precision::AmpBf16, c10::Device(c10::kCPU));
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat) << "autocast is off again after the scope";
  {
    const AutocastScope scope(Precision::Fp32, c10::Device(c10::kCPU));
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
  }
}

/// A Linear into a LayerNorm and a Conv2d into a GroupNorm, as in a user's own model: under bfloat16 autocast on the
/// CPU each norm gets a bfloat16 input and float32 weights, a mix LibTorch 1.13's CPU kernels refuse ("expected scalar
/// type BFloat16 but found Float") and 2.x's take. With Tessera's autocast both versions give the norm computed in
/// float32 on that input, returned in bfloat16, with float32 gradients for the float32 weights.
TEST(Precision, LayerAndGroupNormsTakeABfloat16InputWithFloat32WeightsUnderCpuAutocast) {
  at::manual_seed(0);
  torch::nn::Linear linear(6, 8);
  torch::nn::LayerNorm layer_norm(torch::nn::LayerNormOptions({8}));
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 4, 3).padding(1));
  torch::nn::GroupNorm group_norm(2, 4);
  {
    const at::NoGradGuard no_grad;
    for (auto* norm : {&layer_norm->weight, &layer_norm->bias, &group_norm->weight, &group_norm->bias}) {
      norm->copy_(at::randn_like(*norm));
    }
  }
  const at::Tensor x = at::randn({5, 6}), image = at::randn({2, 3, 5, 5});
  at::Tensor features, normed, maps, grouped;
  {
    const AutocastScope scope(Precision::AmpBf16, c10::Device(c10::kCPU));
    features = linear->forward(x);
    normed = layer_norm->forward(features);
    maps = conv->forward(image);
    grouped = group_norm->forward(maps);
  }
  ASSERT_EQ(features.scalar_type(), at::kBFloat16);
  ASSERT_EQ(maps.scalar_type(), at::kBFloat16);
  EXPECT_EQ(normed.scalar_type(), at::kBFloat16);
  EXPECT_EQ(grouped.scalar_type(), at::kBFloat16);
  const at::Tensor expected_normed =
      at::layer_norm(features.to(at::kFloat), {8}, layer_norm->weight, layer_norm->bias).to(at::kBFloat16);
  const at::Tensor expected_grouped =
      at::group_norm(maps.to(at::kFloat), 2, group_norm->weight, group_norm->bias).to(at::kBFloat16);
  EXPECT_TRUE(at::equal(normed, expected_normed)) << (normed - expected_normed).abs().max();
  EXPECT_TRUE(at::equal(grouped, expected_grouped)) << (grouped - expected_grouped).abs().max();

  (normed.to(at::kFloat) * at::randn({5, 8})).sum().backward();
  (grouped.to(at::kFloat) * at::randn({2, 4, 5, 5})).sum().backward();
  for (const at::Tensor& p : {layer_norm->weight, layer_norm->bias, group_norm->weight, group_norm->bias,
                              linear->weight, conv->weight}) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().scalar_type(), at::kFloat);
    EXPECT_TRUE(p.grad().isfinite().all().item<bool>());
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
  }
}

/// A user's own model with a GroupNorm after a convolution and a LayerNorm after a linear layer trains in amp_bf16
/// on the CPU: finite losses, every parameter moved.
struct NormedNetImpl : torch::nn::Module {
  NormedNetImpl()
      : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3).padding(1)))),
        group_norm(register_module("group_norm", torch::nn::GroupNorm(2, 4))),
        fc1(register_module("fc1", torch::nn::Linear(64, 8))),
        layer_norm(register_module("layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({8})))),
        fc2(register_module("fc2", torch::nn::Linear(8, 3))) {}
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h = at::relu(group_norm->forward(conv->forward(x))).flatten(1);
    return fc2->forward(at::relu(layer_norm->forward(fc1->forward(h))));
  }
  torch::nn::Conv2d conv;
  torch::nn::GroupNorm group_norm;
  torch::nn::Linear fc1;
  torch::nn::LayerNorm layer_norm;
  torch::nn::Linear fc2;
};

TEST(Precision, AUsersModelWithLayerAndGroupNormsTrainsInAmpBf16OnTheCpu) {
  at::manual_seed(0);
  Components c = testing::tiny_components();
  c.model = std::make_shared<Classifier<NormedNetImpl>>(std::make_shared<NormedNetImpl>(), 3);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  std::map<std::string, at::Tensor> before;
  for (const auto& p : c.model->named_parameters()) before[p.key()] = p.value().detach().clone();
  Trainer trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1).precision("amp_bf16"), c);
  trainer.fit();
  EXPECT_TRUE(std::isfinite(trainer.state().metrics.at("loss/train/total")));
  for (const auto& p : trainer.state().model->named_parameters()) {
    EXPECT_FALSE(at::equal(p.value(), before.at(p.key()))) << p.key() << " did not move";
  }
}

TEST(Precision, AmpFp16OnTheCpuIsRefusedBeforeStep1WithTheReason) {
  try {
    Trainer trainer(TrainerOptions().precision("amp_fp16").device("cpu"), testing::tiny_components());
    FAIL() << "no exception";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("amp_fp16 cannot run on cpu"), std::string::npos) << msg;
    EXPECT_NE(msg.find("amp_bf16"), std::string::npos) << msg;
  }
}

TEST(Precision, AmpBf16OnAGpuOlderThanAmpereIsRefusedWithTheReason) {
  const std::string turing = precision_problem_on_capability(Precision::AmpBf16, 7, 5, "cuda:1");
  EXPECT_NE(turing.find("amp_bf16 needs a GPU of compute capability 8.0 or newer"), std::string::npos) << turing;
  EXPECT_NE(turing.find("cuda:1 has 7.5"), std::string::npos) << turing;
  EXPECT_NE(turing.find("amp_fp16"), std::string::npos) << turing;
  EXPECT_EQ(precision_problem_on_capability(Precision::AmpBf16, 8, 0, "cuda:0"), "");
  EXPECT_EQ(precision_problem_on_capability(Precision::AmpBf16, 9, 0, "cuda:0"), "");
  EXPECT_EQ(precision_problem_on_capability(Precision::AmpFp16, 7, 0, "cuda:0"), "") << "float16 runs on Volta";
  EXPECT_EQ(precision_problem_on_capability(Precision::Fp32, 6, 1, "cuda:0"), "");
}

/// Records, at every AfterBackward, the gradients it reads (it declares that it reads them there).
class GradientReader : public Algorithm {
 public:
  GradientReader() {
    spec_.name = "gradient_reader";
    spec_.accesses.push_back({Event::AfterBackward, {Resource::Gradients}, {}});
  }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& state, Logger&) override {
    for (const auto& p : state.model->parameters()) seen.push_back(p.grad().clone());
  }
  std::vector<at::Tensor> seen;

 private:
  AlgorithmSpec spec_;
};

TEST(Precision, GradientReadersSeeUnscaledGradientsUnderLossScaling) {
  auto run = [](const std::string& scaling) {
    auto reader = std::make_shared<GradientReader>();
    Components c = testing::tiny_components(48, 8, 2);
    c.algorithms.push_back(reader);
    Trainer t(TrainerOptions().max_duration(Time::parse("4ba")).microbatch_size(3).threads(1).loss_scaling(scaling),
              std::move(c));
    t.fit();
    EXPECT_EQ(t.grad_scaler() != nullptr, scaling == "dynamic");
    return std::make_pair(reader->seen, weights_fingerprint(*t.state().model));
  };
  const auto [plain, plain_weights] = run("none");
  const auto [scaled, scaled_weights] = run("dynamic");
  ASSERT_EQ(plain.size(), scaled.size());
  ASSERT_EQ(plain.size(), 4u * 3u * 4u) << "4 batches x 3 microbatches x 4 parameters";
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(at::equal(plain[i], scaled[i])) << "read " << i;
  EXPECT_EQ(plain_weights, scaled_weights);
}

/// Weights fingerprint, optimizer steps and learning rate at every BatchEnd.
class StepLog : public Callback {
 public:
  std::string name() const override { return "step_log"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event != Event::BatchEnd) return;
    weights.push_back(weights_fingerprint(*s.model));
    steps.push_back(s.optimizer->step_count());
    lr.push_back(s.optimizer->param_groups()[0].lr);
  }
  std::vector<std::string> weights;
  std::vector<int64_t> steps;
  std::vector<double> lr;
};

TEST(Precision, InjectedOverflowSkipsTheStepBacksOffAndKeepsTheScheduleTime) {
  auto run = [](int64_t overflow_batch) {
    auto log = std::make_shared<StepLog>();
    Components c = testing::tiny_components(48, 8, 4);
    c.schedulers.push_back(optim::make_linear_scheduler(optim::LinearSchedulerOptions().alpha_i(1.0).alpha_f(0.1)));
    c.algorithms.push_back(std::make_shared<testing::OverflowAt>(overflow_batch));
    c.callbacks.push_back(log);
    auto t = std::make_unique<Trainer>(
        TrainerOptions().max_duration(Time::parse("6ba")).threads(1).precision("amp_bf16").loss_scaling("dynamic"),
        std::move(c));
    t->fit();
    return std::make_pair(std::move(t), log);
  };
  auto [clean, clean_log] = run(-1);
  auto [hit, hit_log] = run(2);
  EXPECT_EQ(clean->skipped_steps(), 0);
  EXPECT_EQ(clean->grad_scaler()->scale_value(), 65536.0);
  EXPECT_EQ(hit->skipped_steps(), 1);
  EXPECT_EQ(hit->skipped_batches(), 0) << "the loss was finite: nonfinite_loss has nothing to do";
  EXPECT_EQ(hit->grad_scaler()->scale_value(), 32768.0);
  EXPECT_EQ(hit->grad_scaler()->growth_tracker(), 3) << "3 clean steps after the overflow";
  EXPECT_EQ(hit->state().metrics.at("trainer/skipped_steps"), 1.0);
  // Batch 2 (the third) changed nothing; its time still passed.
  EXPECT_EQ(hit_log->weights[1], clean_log->weights[1]);
  EXPECT_EQ(hit_log->weights[2], hit_log->weights[1]);
  EXPECT_EQ(hit_log->steps, (std::vector<int64_t>{1, 2, 2, 3, 4, 5}));
  EXPECT_EQ(hit_log->lr, clean_log->lr) << "the learning-rate schedule keeps its time";
  EXPECT_EQ(hit->state().timestamp.batch, 6);
}

TEST(Precision, LossScalingOptionIsCheckedAndAutoScalesOnlyFp16) {
  EXPECT_THROW(Trainer(TrainerOptions().loss_scaling("static"), testing::tiny_components()), InputError);
  Trainer bf16(TrainerOptions().precision("amp_bf16"), testing::tiny_components());
  EXPECT_EQ(bf16.grad_scaler(), nullptr) << "bfloat16 has float32's range: no scaler unless asked";
  EXPECT_EQ(bf16.state().precision, Precision::AmpBf16);
}

/// The baseline recipe's data, optimizer and schedule (Fashion-MNIST, SGD with Nesterov, cosine) for one
/// epoch with an MLP (ResNet-8 in bfloat16 is 4-8x slower than float32 on some CPUs with LibTorch 1.13: see
/// docs/results.md), in fp32 and in amp_bf16.
TEST(Precision, Bf16AutocastTrainsTheBaselineWithinHalfAPointOfFp32) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST is not installed (apt install dataset-fashion-mnist)";
  }
  auto accuracy = [](const std::string& precision) {
    const Recipe recipe = Recipe::load(std::string(TESSERA_SOURCE_DIR) + "/examples/recipes/fashion_mnist_baseline.yaml",
                                       {"max_duration=1ep", "threads=2", "precision=" + precision, "callbacks=[]",
                                        "loggers=[]", "checkpoint={}", "model={mlp: {hidden: [128]}}",
                                        "schedulers=[{cosine: {warmup: 0.1dur}}]",
                                        "data.train.transforms=[{normalize: {mean: [0.2860], std: [0.3530]}}]",
                                        "data.train.loader.workers=0"});
    auto trainer = make_trainer(recipe);
    trainer->fit();
    return trainer->state().metrics.at("metrics/test/accuracy");
  };
  const double fp32 = accuracy("fp32"), bf16 = accuracy("amp_bf16");
  EXPECT_GT(fp32, 0.80);
  EXPECT_NEAR(bf16, fp32, 0.005) << "fp32 " << fp32 << ", amp_bf16 " << bf16;
}

/// Records the dtype of the outputs at every eval_after_forward.
class EvalOutputDtypes : public Callback {
 public:
  std::string name() const override { return "eval_output_dtypes"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event == Event::EvalAfterForward) seen.insert(state.outputs.scalar_type());
  }
  std::set<at::ScalarType> seen;
};

/// eval_precision amp_bf16 runs each evaluation forward under autocast (bfloat16 outputs) while the training stays
/// fp32: the weights after training are bitwise those of the run that evaluates in fp32, and the metrics agree.
TEST(Precision, EvalPrecisionAutocastsTheEvaluationForwardOnlyAndLeavesTrainingAlone) {
  auto run = [](const std::string& eval_precision) {
    Components c = testing::tiny_components();
    auto dtypes = std::make_shared<EvalOutputDtypes>();
    c.callbacks.push_back(dtypes);
    auto trainer = std::make_unique<Trainer>(
        TrainerOptions().max_duration(Time::parse("2ep")).threads(1).seed(5).eval_precision(eval_precision), c);
    trainer->fit();
    return std::pair{std::move(trainer), dtypes->seen};
  };
  const auto [fp32, fp32_dtypes] = run("fp32");
  const auto [bf16, bf16_dtypes] = run("amp_bf16");
  EXPECT_EQ(fp32_dtypes, std::set<at::ScalarType>{at::kFloat});
  EXPECT_EQ(bf16_dtypes, std::set<at::ScalarType>{at::kBFloat16});
  const auto fp32_params = fp32->state().model->named_parameters();
  const auto bf16_params = bf16->state().model->named_parameters();
  for (const auto& p : fp32_params) EXPECT_TRUE(at::equal(p.value(), bf16_params[p.key()])) << p.key();
  EXPECT_NEAR(bf16->state().metrics.at("metrics/eval/accuracy"), fp32->state().metrics.at("metrics/eval/accuracy"),
              1.0 / 16 + 1e-9)
      << "at most one of the 16 evaluation examples may change class";
}

TEST(Precision, EvalPrecisionAmpFp16OnTheCpuIsRefusedBeforeStep1) {
  const std::string msg = testing::input_error_of(
      [] { Trainer(TrainerOptions().eval_precision("amp_fp16").device("cpu"), testing::tiny_components()); });
  EXPECT_EQ(msg.rfind("eval_precision: amp_fp16 cannot run on cpu", 0), 0u) << msg;
  const std::string unknown = testing::input_error_of(
      [] { Trainer(TrainerOptions().eval_precision("bf16"), testing::tiny_components()); });
  EXPECT_NE(unknown.find("eval_precision"), std::string::npos) << unknown;
}

/// Metrics take bfloat16 or float16 logits (a forward under autocast) in float32: the cross-entropy of bfloat16
/// logits is bitwise that of the same values in float32, not a bfloat16 sum.
TEST(Precision, MetricsOfLowPrecisionLogitsAreComputedInFloat32) {
  at::manual_seed(3);
  const at::Tensor logits = (at::randn({64, 10}) * 4).to(at::kBFloat16);
  Batch batch(at::zeros({64, 1}), at::randint(10, {64}));
  auto values = [&](const at::Tensor& l) {
    CrossEntropyMetric ce;
    Accuracy accuracy;
    ce.update(l, batch);
    accuracy.update(l, batch);
    return std::pair{ce.compute(), accuracy.compute()};
  };
  EXPECT_EQ(values(logits), values(logits.to(at::kFloat)));
}

// ------------------------------------------------------------------------------------------ microbatching

TEST(Microbatching, SizeParsesAutoAndNumbersAndRefusesTheRest) {
  EXPECT_TRUE(MicrobatchSize::parse("auto").is_auto());
  EXPECT_EQ(MicrobatchSize::parse("16").examples(), 16);
  EXPECT_EQ(MicrobatchSize(0), MicrobatchSize::parse("0"));
  EXPECT_THROW(MicrobatchSize::parse("-2"), InputError);
  EXPECT_THROW(MicrobatchSize::parse("auto2"), InputError);
  EXPECT_THROW(MicrobatchSize(-1), InputError);
  EXPECT_EQ(halve_microbatch_size(0, 8), 4);
  EXPECT_EQ(halve_microbatch_size(3, 8), 1);
  EXPECT_THROW(halve_microbatch_size(1, 8), Error);
}

/// Sets TESSERA_TEST_OOM_ABOVE for the life of the scope.
struct OomAbove {
  explicit OomAbove(int64_t n) { ::setenv("TESSERA_TEST_OOM_ABOVE", std::to_string(n).c_str(), 1); }
  ~OomAbove() { ::unsetenv("TESSERA_TEST_OOM_ABOVE"); }
};

/// A run on the CNN (batch norm: the failed attempts' statistics must be put back), 8 examples per batch.
std::unique_ptr<Trainer> cnn_run(MicrobatchSize microbatch, const std::string& precision = "fp32") {
  Components c;
  at::manual_seed(3);
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(3).num_classes(4).width(4));
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(48).input_shape(std::vector<int64_t>{3, 8, 8}).num_classes(4).seed(7)),
      8);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  return std::make_unique<Trainer>(
      TrainerOptions().max_duration(Time::parse("2ep")).threads(1).microbatch_size(microbatch).precision(precision),
      std::move(c));
}

TEST(Microbatching, AutoHalvesOnOutOfMemoryAndEqualsARunStartedAtTheFoundSize) {
  for (const std::string precision : {"fp32", "amp_bf16"}) {
    SCOPED_TRACE(precision);
    auto fixed = cnn_run(2, precision);
    fixed->fit();
    std::unique_ptr<Trainer> automatic;
    {
      const OomAbove oom(3);  // 8 fails, 4 fails, 2 fits
      automatic = cnn_run(MicrobatchSize::automatic(), precision);
      automatic->fit();
    }
    EXPECT_EQ(automatic->state().microbatch_size, 2);
    EXPECT_EQ(automatic->state().metrics.at("trainer/microbatch_size"), 2.0);
    EXPECT_EQ(weights_fingerprint(*automatic->state().model), weights_fingerprint(*fixed->state().model));
    EXPECT_EQ(automatic->state().metrics.at("loss/train/total"), fixed->state().metrics.at("loss/train/total"));
  }
}

/// At after_loss, for microbatches of more than `limit` rows, the error LibTorch raises when cuBLAS cannot allocate
/// its workspace (a plain c10::Error, not c10::OutOfMemoryError); records, at the retry's first before_forward,
/// whether the failed attempt's outputs or loss (its autograd graph) were still held.
class CublasAllocFailureAbove : public Algorithm {
 public:
  explicit CublasAllocFailureAbove(int64_t limit) : limit_(limit) {
    spec_.name = "cublas_alloc_failure_above";
    spec_.accesses.push_back({Event::BeforeForward, {Resource::Outputs, Resource::Loss}, {}});
    spec_.accesses.push_back({Event::AfterLoss, {Resource::Loss}, {}});
  }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger&) override {
    if (event == Event::BeforeForward) {
      if (failed_) held_after_failure.push_back(state.outputs.defined() || state.loss.defined());
      failed_ = false;
      return;
    }
    if (state.batch.size() > limit_) {
      failed_ = true;
      throw c10::Error({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                       "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`");
    }
  }
  std::vector<bool> held_after_failure;

 private:
  int64_t limit_;
  bool failed_ = false;
  AlgorithmSpec spec_;
};

TEST(Microbatching, AutoRetriesACublasAllocationFailureAfterTheLossWithoutHoldingTheFailedGraph) {
  auto with_failures = [](MicrobatchSize microbatch) {
    auto failures = std::make_shared<CublasAllocFailureAbove>(2);
    Components c;
    at::manual_seed(3);
    c.model = std::make_shared<CNN>(CNNOptions().in_channels(3).num_classes(4).width(4));
    c.train_dataloader = testing::loader(data::make_synthetic(data::SyntheticOptions().size(48).input_shape(
                                             std::vector<int64_t>{3, 8, 8}).num_classes(4).seed(7)),
                                         8);
    c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
    c.algorithms.push_back(failures);
    auto t = std::make_unique<Trainer>(
        TrainerOptions().max_duration(Time::parse("2ep")).threads(1).microbatch_size(microbatch), std::move(c));
    t->fit();
    return std::make_pair(std::move(t), failures);
  };
  auto [fixed, none] = with_failures(2);
  auto [automatic, failures] = with_failures(MicrobatchSize::automatic());
  EXPECT_TRUE(none->held_after_failure.empty());
  EXPECT_EQ(failures->held_after_failure, (std::vector<bool>{false, false})) << "8 failed, then 4; 2 fits";
  EXPECT_EQ(automatic->state().microbatch_size, 2);
  EXPECT_EQ(weights_fingerprint(*automatic->state().model), weights_fingerprint(*fixed->state().model));
  // Any other c10::Error is the error it is.
  EXPECT_FALSE(is_out_of_memory(c10::Error({__func__, __FILE__, 1}, "CUDA error: an illegal memory access")));
  EXPECT_TRUE(is_out_of_memory(c10::Error({__func__, __FILE__, 1}, "cuDNN error: CUDNN_STATUS_ALLOC_FAILED")));
  EXPECT_TRUE(is_out_of_memory(c10::OutOfMemoryError({__func__, __FILE__, 1}, "CUDA out of memory.")));
}

TEST(Microbatching, OutOfMemoryWithoutAutoOrAtSizeOneIsAnError) {
  const OomAbove oom(0);  // nothing fits
  auto fixed = cnn_run(4);
  EXPECT_THROW(fixed->fit(), c10::OutOfMemoryError);
  auto automatic = cnn_run(MicrobatchSize::automatic());
  try {
    automatic->fit();
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("microbatches of 1 example"), std::string::npos) << e.what();
  }
}

TEST(Microbatching, TheFoundSizeIsSavedAndKeptOnResume) {
  const std::string dir = (std::filesystem::temp_directory_path() / "tessera_amp_auto_resume").string();
  std::filesystem::remove_all(dir);
  const OomAbove oom(5);  // 8 fails, 4 fits
  {
    auto t = cnn_run(MicrobatchSize::automatic());
    t->fit();
    t->save_checkpoint(dir + "/end.ckpt");
  }
  auto resumed = cnn_run(MicrobatchSize::automatic());
  resumed->load_checkpoint(dir + "/end.ckpt");
  EXPECT_EQ(resumed->state().microbatch_size, 4);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tessera
