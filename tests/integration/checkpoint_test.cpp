// Checkpoints end to end through the C++ API: bitwise-exact resume (optimizers, gradient accumulation, each
// algorithm and all five together, at several interruption points), the checkpoint folder (names, `latest`,
// keep, intervals, inspect_checkpoint), corrupt files, runs that do not fit a checkpoint, non-finite losses,
// stop signals, and seeded determinism.
#include <ATen/Context.h>
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <tessera/algorithms/alibi.h>
#include <tessera/algorithms/augmix.h>
#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/channels_last.h>
#include <tessera/algorithms/colout.h>
#include <tessera/algorithms/cutmix.h>
#include <tessera/algorithms/cutout.h>
#include <tessera/algorithms/ema.h>
#include <tessera/algorithms/factorize.h>
#include <tessera/algorithms/gated_linear_units.h>
#include <tessera/algorithms/ghost_batchnorm.h>
#include <tessera/algorithms/gradient_clipping.h>
#include <tessera/algorithms/gyro_dropout.h>
#include <tessera/algorithms/label_smoothing.h>
#include <tessera/algorithms/layer_freezing.h>
#include <tessera/algorithms/low_precision_groupnorm.h>
#include <tessera/algorithms/low_precision_layernorm.h>
#include <tessera/algorithms/mixup.h>
#include <tessera/algorithms/no_op_model.h>
#include <tessera/algorithms/progressive_resizing.h>
#include <tessera/algorithms/randaugment.h>
#include <tessera/algorithms/sam.h>
#include <tessera/algorithms/selective_backprop.h>
#include <tessera/algorithms/seq_length_warmup.h>
#include <tessera/algorithms/squeeze_excite.h>
#include <tessera/algorithms/stochastic_depth.h>
#include <tessera/algorithms/swa.h>
#include <tessera/algorithms/weight_standardization.h>
#include <tessera/version.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>

#include "../../src/checkpoint/checkpoint_file.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::NanInputs;

constexpr int64_t kBatchesPerEpoch = 6;  // 48 examples in batches of 8
constexpr int64_t kEpochs = 3;
constexpr int64_t kTotalBatches = kEpochs * kBatchesPerEpoch;

// ------------------------------------------------------------------------------------------------ runs

/// Everything a run is made of; `components(spec)` builds it afresh (same initial weights, same data).
struct RunSpec {
  std::string name;
  std::string model = "tiny";     ///< tiny, tiny_wide, mlp_dropout, mlp1, mlp2, cnn or resnet (3x8x8 images), gpt (text)
  /// sgd (momentum 0.9), adamw, rmsprop, adagrad, nadam, radam, adamax, adadelta, or with parameter groups
  /// adafactor_groups, adam_groups, lion_groups, muon_groups, lamb_groups, lars_groups, sgd_groups
  std::string optimizer = "sgd";
  int64_t microbatch_size = 0;
  bool auto_microbatch = false;  ///< microbatch_size auto, with out-of-memory errors injected above `oom_above`
  int64_t oom_above = -1;
  std::string precision = "fp32";
  std::string loss_scaling = "auto";
  std::vector<std::string> algorithms;
  bool scheduler = false;  ///< a linear learning-rate decay over the run
  bool inverse_sqrt = false;  ///< an inverse square root decay after a warmup
  bool one_cycle_momentum = false;  ///< a one-cycle schedule that cycles the momentum (or beta1) too
  /// torch's warmup-then-cosine (a sequential schedule), the lr set once per epoch (step_schedulers_every_batch false)
  bool per_epoch_schedule = false;
  /// torch's ReduceLROnPlateau on the evaluator's accuracy (evaluator true), reducing at each epoch end that
  /// does not raise it by half
  bool plateau = false;
  bool evaluator = false;
  int64_t train_size = 48;
  int64_t batch_size = 8;
  int64_t seed = 42;
  std::string nonfinite_loss = "error";
  int64_t nan_at_batch = -1;  ///< NanInputs poisons this batch (-1 = none)
  bool deterministic = false;
  int64_t log_interval = 1;
  std::string max_duration;  ///< "" = kEpochs epochs
};

void PrintTo(const RunSpec& spec, std::ostream* os) { *os << spec.name; }

const std::vector<std::string> kAllFive = {"blurpool", "label_smoothing", "selective_backprop",
                                           "progressive_resizing", "layer_freezing"};

std::shared_ptr<Model> make_model(const std::string& kind) {
  at::manual_seed(3);
  auto mlp = [](std::vector<int64_t> hidden, double dropout) {
    return std::make_shared<MLP>(
        MLPOptions().in_features(16).hidden(std::move(hidden)).num_classes(3).dropout(dropout));
  };
  if (kind == "tiny") return testing::tiny_model(3);
  if (kind == "tiny_wide") {
    auto net = std::make_shared<testing::TinyNetImpl>(16, 10, 3);  // hidden width 10 instead of 8
    return std::make_shared<Classifier<testing::TinyNetImpl>>(net, 3);
  }
  if (kind == "mlp_dropout") return mlp({12}, 0.25);
  if (kind == "mlp1") return mlp({8}, 0.0);
  if (kind == "mlp2") return mlp({8, 8}, 0.0);
  if (kind == "cnn") return std::make_shared<CNN>(CNNOptions().in_channels(3).num_classes(4).width(4));
  if (kind == "resnet") return std::make_shared<ResNet>(ResNetOptions().depth(8).width(4).in_channels(3).num_classes(4));
  if (kind == "resnet_group") {
    return std::make_shared<ResNet>(
        ResNetOptions().depth(8).width(4).in_channels(3).num_classes(4).norm("group").groups(2));
  }
  if (kind == "gpt") return testing::tiny_gpt();
  if (kind == "gpt2") {  // as GPT-2 has it: the head is the token embedding, GELU's tanh approximation
    at::manual_seed(3);
    return std::make_shared<GPT>(GPTOptions().vocab_size(16).max_seq_length(8).d_model(16).n_layers(2).n_heads(2)
                                     .tie_embeddings(true).activation("gelu_tanh"));
  }
  if (kind == "llama") {  // as Llama has it: RMSNorm, rotary positions, SwiGLU, no biases; grouped-query attention
    at::manual_seed(3);
    return std::make_shared<GPT>(GPTOptions().vocab_size(16).max_seq_length(8).d_model(16).n_layers(2).n_heads(2)
                                     .n_kv_heads(1).norm("rms_norm").positions("rotary").gated(true)
                                     .activation("silu").bias(false));
  }
  if (kind == "bert_classifier") {
    BERTClassifierOptions options;
    options.num_classes(3);
    options.vocab_size(16).max_seq_length(8).d_model(16).n_layers(2).n_heads(2);
    at::manual_seed(3);
    return std::make_shared<BERTClassifier>(options);
  }
  throw std::invalid_argument("unknown test model " + kind);
}

/// Options that make each algorithm act within this short run, before and after every interruption point.
std::shared_ptr<Algorithm> make_algorithm(const std::string& name) {
  using namespace algorithms;
  if (name == "blurpool") return std::make_shared<BlurPool>(BlurPoolOptions().min_channels(1));
  if (name == "label_smoothing") {
    return std::make_shared<LabelSmoothing>(LabelSmoothingOptions().smoothing(0.1));
  }
  if (name == "selective_backprop") {
    // start 0, end 1, every 2nd batch in full: both modes alternate all run long.
    return std::make_shared<SelectiveBackprop>(
        SelectiveBackpropOptions().start(0).end(1).keep(0.5).interrupt(2));
  }
  if (name == "progressive_resizing") {
    // Widths 4 -> 6 -> 8 of 8 over the run, random crops.
    return std::make_shared<ProgressiveResizing>(ProgressiveResizingOptions()
                                                     .mode("crop")
                                                     .initial_scale(0.5)
                                                     .delay_fraction(0.2)
                                                     .finetune_fraction(0.2)
                                                     .size_increment(2));
  }
  if (name == "channels_last") return std::make_shared<ChannelsLast>();
  if (name == "gradient_clipping") {
    return std::make_shared<GradientClipping>(GradientClippingOptions().clipping_type("adaptive").clipping_threshold(0.05));
  }
  if (name == "ema") {
    // Starts at 0.2 of 18 batches (after batch 4, an interruption point), then averages every batch.
    return std::make_shared<EMA>(EMAOptions().half_life(Time::parse("4ba")).ema_start(Time::parse("0.2dur")));
  }
  if (name == "mixup") return std::make_shared<MixUp>(MixUpOptions().alpha(1.0));
  // CNN width 4: conv2 (4 -> 8), conv3 (8 -> 16) and fc (16 -> 4) factorized at rank 2.
  if (name == "factorize") {
    return std::make_shared<Factorize>(
        FactorizeOptions().min_channels(4).latent_channels(2).min_features(4).latent_features(2));
  }
  if (name == "ghost_batchnorm") return std::make_shared<GhostBatchNorm>(GhostBatchNormOptions().ghost_batch_size(2));
  // CNN width 4: conv2 (4 -> 8) and conv3 (8 -> 16) get SE blocks of 2 channels.
  if (name == "squeeze_excite") return std::make_shared<SqueezeExcite>(SqueezeExciteOptions().min_channels(4).latent_channels(2));
  if (name == "cutmix") return std::make_shared<CutMix>(CutMixOptions().uniform_sampling(true));
  if (name == "sam") return std::make_shared<SAM>(SAMOptions().rho(0.1).interval(2));  // odd batches: double pass
  if (name == "colout") return std::make_shared<ColOut>(ColOutOptions().p_row(0.25).batch(false));
  if (name == "cutout") return std::make_shared<CutOut>(CutOutOptions().num_holes(2).uniform_sampling(true));
  if (name == "swa") {
    // Snapshots after every batch from batch 3, the average in at batch 15 (after the last interruption point, 13)
    // with the statistics recomputed; the SWA learning rate annealed (cos) from batch 3 over 4 batches to 0.02.
    return std::make_shared<SWA>(SWAOptions()
                                     .swa_start(Time::parse("3ba"))
                                     .swa_end(Time::parse("15ba"))
                                     .update_interval(Time::parse("1ba"))
                                     .schedule_swa_lr(true)
                                     .anneal_strategy("cos")
                                     .anneal_steps(4)
                                     .swa_lr(0.02));
  }
  if (name == "swa_epochs") {
    // Snapshots at the ends of epochs 1 and 2, the average in at the end of epoch 2 (batch 12): the run interrupted
    // at 13 resumes from a finished average.
    return std::make_shared<SWA>(SWAOptions().swa_start(Time::parse("1ep")).swa_end(Time::parse("2ep")));
  }
  if (name == "swa_to_the_end") {
    // Snapshots at the ends of epochs 1, 2 and 3, the average in at the end of the run (epoch 3's end, batch
    // 18).
    return std::make_shared<SWA>(SWAOptions().swa_start(Time::parse("1ep")).swa_end(Time::parse("1dur")));
  }
  if (name == "randaugment") return std::make_shared<RandAugment>(RandAugmentOptions().depth(2).severity(9));
  if (name == "augmix") return std::make_shared<AugMix>(AugMixOptions().width(2));
  if (name == "layer_freezing") {
    // CNN: 7 freezable layers; 1 frozen after epoch 1, 3 after epoch 2, 6 after epoch 3.
    return std::make_shared<LayerFreezing>(LayerFreezingOptions().freeze_start(0.1).freeze_level(1.0));
  }
  // ResNet-8: 3 residual gates; drops drawn from (seed, batch, rank), the rate ramping over the first 0.3 of the run.
  if (name == "stochastic_depth") {
    return std::make_shared<StochasticDepth>(StochasticDepthOptions().drop_rate(0.5).drop_warmup(0.3));
  }
  if (name == "stochastic_depth_sample") {
    return std::make_shared<StochasticDepth>(StochasticDepthOptions().stochastic_method("sample").drop_rate(0.5));
  }
  if (name == "weight_standardization") return std::make_shared<WeightStandardization>();
  // 18 batches cut into periods of floor(18 / 4) * 2 = 8: new masks at batches 8 and 16, across the interruptions.
  if (name == "gyro_dropout") return std::make_shared<GyroDropout>(GyroDropoutOptions().sigma(4).tau(2));
  // 18 batches, lengths 2, 4, 6, 8 of 8 for 3 batches each over the first 9, across the interruptions.
  const auto warmup = SeqLengthWarmupOptions().duration(0.5).min_seq_length(2).step_size(2);
  if (name == "seq_length_warmup") return std::make_shared<SeqLengthWarmup>(SeqLengthWarmupOptions(warmup).truncate(true));
  if (name == "seq_length_warmup_rechunk") return std::make_shared<SeqLengthWarmup>(SeqLengthWarmupOptions(warmup).truncate(false));
  if (name == "alibi") return std::make_shared<Alibi>(AlibiOptions().train_sequence_length_scaling(0.5));
  if (name == "gated_linear_units") return std::make_shared<GatedLinearUnits>();
  if (name == "low_precision_layernorm") return std::make_shared<LowPrecisionLayerNorm>();
  if (name == "low_precision_groupnorm") return std::make_shared<LowPrecisionGroupNorm>();
  if (name == "no_op_model") return std::make_shared<NoOpModel>();
  throw std::invalid_argument("unknown test algorithm " + name);
}

Components components(const RunSpec& s) {
  Components c;
  c.model = make_model(s.model);
  std::shared_ptr<data::TensorDataset> train = testing::tiny_data(s.train_size);
  if (s.model == "cnn" || s.model == "resnet" || s.model == "resnet_group") {
    train = data::make_synthetic(
        data::SyntheticOptions().size(s.train_size).input_shape(std::vector<int64_t>{3, 8, 8}).num_classes(4).seed(7));
  } else if (s.model == "gpt" || s.model == "gpt2" || s.model == "llama") {
    train = testing::tiny_text(s.train_size);
  } else if (s.model == "bert_classifier") {
    // tiny_text's sequences (ids 1 to 15) cut to 1 to 8 tokens and padded with 0, in 3 classes.
    std::vector<int64_t> every(static_cast<size_t>(s.train_size));
    std::iota(every.begin(), every.end(), 0);
    const Batch all = testing::tiny_text(s.train_size)->get_batch(every);
    const at::Tensor rows = at::arange(s.train_size, at::kLong).unsqueeze(1);
    const at::Tensor length = rows.remainder(8).add(1);
    const at::Tensor ids = all.input().clamp_min(1).masked_fill(at::arange(8, at::kLong).ge(length), 0);
    train = std::make_shared<data::TensorDataset>(ids, rows.squeeze(1).remainder(3), 3, "tiny_labelled_text");
  }
  for (const char* augmenter : {"randaugment", "augmix"}) {  // images with intensities in [0, 1]
    if (std::find(s.algorithms.begin(), s.algorithms.end(), augmenter) != s.algorithms.end()) {
      train = testing::unit_interval(*train);
      break;
    }
  }
  c.train_dataloader = testing::loader(train, s.batch_size);
  using optim::ParamGroupOptions;
  if (s.optimizer == "adamw") {
    c.optimizer = std::make_shared<optim::AdamW>(c.model->parameters(), optim::AdamWOptions().lr(0.01));
  } else if (s.optimizer == "adam_groups") {  // AMSGrad; no decay on biases, a faster last layer
    c.optimizer = std::make_shared<optim::Adam>(
        c.model->named_parameters(),
        optim::AdamOptions().lr(0.01).weight_decay(0.01).amsgrad(true).groups(
            {ParamGroupOptions().names({"*head.*"}).lr(0.03), ParamGroupOptions().max_dims(1).weight_decay(0)}));
  } else if (s.optimizer == "lion_groups") {  // squeeze_excite's gates, added at Init, in a group of their own
    c.optimizer = std::make_shared<optim::Lion>(
        c.model->named_parameters(),
        optim::LionOptions().lr(0.003).weight_decay(0.1).decoupled_weight_decay(true).groups(
            {ParamGroupOptions().names({"*.se.*"}).lr(0.01), ParamGroupOptions().max_dims(1).weight_decay(0)}));
  } else if (s.optimizer == "rmsprop") {  // both extra buffers: momentum and the centred mean
    c.optimizer = std::make_shared<optim::RMSprop>(
        c.model->named_parameters(), optim::RMSpropOptions().lr(0.003).momentum(0.5).centered(true).weight_decay(0.01));
  } else if (s.optimizer == "adagrad") {  // its step counts drive the lr decay
    c.optimizer = std::make_shared<optim::Adagrad>(
        c.model->named_parameters(), optim::AdagradOptions().lr(0.05).lr_decay(0.1).initial_accumulator_value(0.1));
  } else if (s.optimizer == "lamb_groups") {  // trust ratios in group 0, Adam's steps for biases and norms
    c.optimizer = std::make_shared<optim::Lamb>(
        c.model->named_parameters(),
        optim::LambOptions().lr(0.01).weight_decay(0.01).groups({ParamGroupOptions().max_dims(1).weight_decay(0)}));
  } else if (s.optimizer == "lars_groups") {
    c.optimizer = std::make_shared<optim::Lars>(
        c.model->named_parameters(),
        optim::LarsOptions().lr(2.0).weight_decay(5e-4).nesterov(true).groups(
            {ParamGroupOptions().max_dims(1).weight_decay(0).lr(0.05)}));
  } else if (s.optimizer == "muon_groups") {  // kernels and SE gates by Muon; biases, norms and the head: AdamW
    c.optimizer = std::make_shared<optim::Muon>(
        c.model->named_parameters(),
        optim::MuonOptions().lr(0.02).weight_decay(0.01).adamw_lr(0.003).adamw_names({"fc.*"}).groups(
            {ParamGroupOptions().max_dims(1).weight_decay(0)}));
  } else if (s.optimizer == "nadam") {  // its mu_product, a float scalar beside the step count
    c.optimizer = std::make_shared<optim::NAdam>(c.model->named_parameters(),
                                                 optim::NAdamOptions().lr(0.01).weight_decay(0.01));
  } else if (s.optimizer == "radam") {  // the step count decides between its two kinds of step
    c.optimizer = std::make_shared<optim::RAdam>(
        c.model->named_parameters(), optim::RAdamOptions().lr(0.01).weight_decay(0.01).decoupled_weight_decay(true));
  } else if (s.optimizer == "adamax") {  // its infinity norm, a running maximum
    c.optimizer = std::make_shared<optim::Adamax>(c.model->named_parameters(),
                                                  optim::AdamaxOptions().lr(0.01).weight_decay(0.01));
  } else if (s.optimizer == "adadelta") {
    c.optimizer = std::make_shared<optim::Adadelta>(c.model->named_parameters(),
                                                    optim::AdadeltaOptions().lr(0.5).weight_decay(0.01));
  } else if (s.optimizer == "adafactor_groups") {  // factored state of kernels (4-d) and matrices, full of vectors
    c.optimizer = std::make_shared<optim::Adafactor>(
        c.model->named_parameters(),
        optim::AdafactorOptions().lr(0.01).weight_decay(0.01).groups(
            {ParamGroupOptions().max_dims(1).weight_decay(0)}));
  } else if (s.optimizer == "sgd_groups") {
    c.optimizer = std::make_shared<optim::SGD>(
        c.model->named_parameters(),
        optim::SGDOptions().lr(0.1).momentum(0.9).groups({ParamGroupOptions().max_dims(1).weight_decay(0.01)}));
  } else {
    c.optimizer =
        std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  }
  if (s.scheduler) {
    c.schedulers.push_back(
        optim::make_linear_scheduler(optim::LinearSchedulerOptions().alpha_i(1.0).alpha_f(0.1)));
  }
  if (s.inverse_sqrt) {
    c.schedulers.push_back(optim::make_inverse_sqrt_scheduler(
        optim::InverseSqrtSchedulerOptions().warmup(Time::parse("3ba")).timescale(Time::parse("2ba"))));
  }
  if (s.one_cycle_momentum) {
    c.schedulers.push_back(optim::make_onecycle_scheduler(
        optim::OneCycleSchedulerOptions().pct_start(0.4).cycle_momentum(true).base_momentum(0.6).max_momentum(0.95)));
  }
  if (s.per_epoch_schedule) {
    c.schedulers.push_back(optim::make_sequential_scheduler(
        {optim::make_linear_scheduler(optim::LinearSchedulerOptions().alpha_i(0.2).alpha_f(1.0).t_max(Time::parse("1ep"))),
         optim::make_cosine_scheduler(optim::CosineSchedulerOptions().t_max(Time::parse("2ep")))},
        {Time::parse("1ep")}));
  }
  if (s.plateau) {
    c.schedulers.push_back(optim::make_plateau_scheduler(
        optim::PlateauSchedulerOptions().monitor("accuracy").factor(0.5).patience(0).threshold(0.5)));
  }
  if (s.evaluator) {
    Evaluator ev;
    ev.label = "eval";
    ev.dataloader = testing::loader(testing::tiny_data(16, 99), 4, false);  // 4 batches
    ev.metrics = {std::make_shared<Accuracy>(1)};
    c.evaluators.push_back(ev);
  }
  for (const auto& name : s.algorithms) c.algorithms.push_back(make_algorithm(name));
  if (s.nan_at_batch >= 0) c.algorithms.push_back(std::make_shared<NanInputs>(s.nan_at_batch));
  return c;
}

TrainerOptions trainer_options(const RunSpec& s) {
  return TrainerOptions()
      .max_duration(s.max_duration.empty() ? Time(kEpochs, TimeUnit::Epoch) : Time::parse(s.max_duration))
      .microbatch_size(s.auto_microbatch ? MicrobatchSize::automatic() : MicrobatchSize(s.microbatch_size))
      .precision(s.precision)
      .loss_scaling(s.loss_scaling)
      .threads(1)
      .seed(s.seed)
      .deterministic(s.deterministic)
      .nonfinite_loss(s.nonfinite_loss)
      .log_interval(s.log_interval)
      .step_schedulers_every_batch(!s.per_epoch_schedule);
}

std::string fingerprint(const Trainer& t) { return weights_fingerprint(*t.state().model); }

/// Records "ba<batch> step<optimizer steps> <weights fingerprint>" at FitStart and after every batch, and
/// "ba<batch> [N, C, H, W]": the shape of each batch as trained (after selective backprop and resizing).
class Recorder : public Callback {
 public:
  std::string name() const override { return "recorder"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::FitStart || event == Event::BatchEnd) {
      lines.push_back(fmt::format("ba{} step{} {}", s.timestamp.batch, s.optimizer->step_count(),
                                  weights_fingerprint(*s.model)));
    }
    if (event == Event::BatchEnd) {
      shapes.push_back(fmt::format("ba{} {}", s.timestamp.batch, c10::str(s.batch.input().sizes())));
    }
  }
  std::vector<std::string> lines;
  std::vector<std::string> shapes;
};

/// At BatchEnd of batch `batch` (counted from 1): stops training (like a job whose time is up), or raises
/// `signal` in this process.
class StopAfter : public Callback {
 public:
  explicit StopAfter(int64_t batch, int signal = 0) : batch_(batch), signal_(signal) {}
  std::string name() const override { return "stop_after"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event != Event::BatchEnd || s.timestamp.batch != batch_) return;
    if (signal_ != 0) {
      std::raise(signal_);
    } else {
      s.stop_training();
    }
  }

 private:
  int64_t batch_;
  int signal_;
};

/// Copies every parameter and buffer (by name) at BatchEnd.
class WeightsAtBatchEnd : public Callback {
 public:
  std::string name() const override { return "weights_at_batch_end"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event != Event::BatchEnd) return;
    auto& out = by_batch[s.timestamp.batch];
    for (const auto& item : s.model->named_parameters(true)) {
      out.emplace_back("param " + item.key(), item.value().detach().clone());
    }
    for (const auto& item : s.model->named_buffers(true)) {
      out.emplace_back("buffer " + item.key(), item.value().detach().clone());
    }
  }
  std::map<int64_t, std::vector<std::pair<std::string, at::Tensor>>> by_batch;
};

struct TestRun {
  std::shared_ptr<Recorder> recorder;
  std::unique_ptr<Trainer> trainer;
  Trainer* operator->() const { return trainer.get(); }
};

TestRun make_run(const RunSpec& spec, CheckpointOptions checkpoint = {},
                 std::vector<std::shared_ptr<Callback>> extra = {}) {
  Components c = components(spec);
  TestRun run;
  run.recorder = std::make_shared<Recorder>();
  c.callbacks.push_back(run.recorder);
  for (auto& cb : extra) c.callbacks.push_back(std::move(cb));
  run.trainer = std::make_unique<Trainer>(trainer_options(spec), std::move(c), std::move(checkpoint));
  return run;
}

/// The final weights fingerprint of an uninterrupted run without checkpoints.
std::string uninterrupted_fingerprint(const RunSpec& spec) {
  TestRun run = make_run(spec);
  run->fit();
  return fingerprint(*run.trainer);
}

// ------------------------------------------------------------------------------------------------ state

std::string counters(const Timestamp& t) {
  return fmt::format(
      "iteration {} epoch {} batch {} sample {} token {} epoch_in_iteration {} batch_in_epoch {} "
      "sample_in_epoch {} token_in_epoch {}",
      t.iteration, t.epoch, t.batch, t.sample, t.token, t.epoch_in_iteration, t.batch_in_epoch,
      t.sample_in_epoch, t.token_in_epoch);
}

/// The run state a checkpoint must carry, in comparable form.
struct Snapshot {
  Timestamp timestamp;
  int64_t steps = 0;
  std::vector<std::string> groups;                                 ///< "lr=.. initial_lr=.. params=a,b,"
  std::map<std::string, std::vector<at::Tensor>> optimizer_state;  ///< by parameter name
  std::string frozen;  ///< parameters that do not require gradients
  std::string fingerprint;
  uint64_t rng_key = 0;
  uint64_t rng_counter = 0;
  std::map<std::string, double> metrics;
  int64_t skipped = 0;
};

Snapshot snapshot(const State& s, int64_t skipped_batches) {
  Snapshot out;
  out.timestamp = s.timestamp;
  out.steps = s.optimizer->step_count();
  std::map<const void*, std::string> names;
  for (const auto& item : s.model->named_parameters(true)) {
    names[item.value().unsafeGetTensorImpl()] = item.key();
    if (!item.value().requires_grad()) out.frozen += item.key() + " ";
  }
  auto name_of = [&](const void* impl) {
    auto it = names.find(impl);
    return it == names.end() ? std::string("<not in the model>") : it->second;
  };
  for (const auto& g : s.optimizer->param_groups()) {
    std::string line = fmt::format("lr={} initial_lr={} params=", g.lr, g.initial_lr);
    for (const auto& p : g.params) line += name_of(p.unsafeGetTensorImpl()) + ",";
    out.groups.push_back(line);
  }
  for (const auto& [impl, slots] : s.optimizer->state()) {
    std::vector<at::Tensor> copies;
    for (const auto& slot : slots) copies.push_back(slot.defined() ? slot.detach().clone() : at::Tensor());
    out.optimizer_state[name_of(impl)] = std::move(copies);
  }
  out.fingerprint = weights_fingerprint(*s.model);
  out.rng_key = s.rng.key();
  out.rng_counter = s.rng.counter();
  out.metrics = s.metrics;
  out.skipped = skipped_batches;
  return out;
}

Snapshot snapshot(const Trainer& t) { return snapshot(t.state(), t.skipped_batches()); }

/// Snapshots of a run where a checkpoint could be taken: at FitStart, after each batch and after each
/// epoch's end (which replaces the snapshot after that epoch's last batch), by batch.
class SnapshotAt : public Callback {
 public:
  std::string name() const override { return "snapshot_at"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event != Event::FitStart && event != Event::BatchEnd && event != Event::EpochCheckpoint) return;
    auto it = s.metrics.find("trainer/skipped_batches");
    by_batch[s.timestamp.batch] = snapshot(s, it == s.metrics.end() ? 0 : static_cast<int64_t>(it->second));
  }
  std::map<int64_t, Snapshot> by_batch;
};

/// What expect_same_state compares beyond the training state proper.
enum class Same {
  Everything,             ///< a checkpoint's round trip: wall-clock times and metrics too
  ExceptTimes,            ///< another run: wall-clock times differ
  ExceptTimesAndMetrics,  ///< another run at a point where the other one had not evaluated yet
};

void expect_same_state(const Snapshot& actual, const Snapshot& expected, Same same) {
  EXPECT_EQ(counters(actual.timestamp), counters(expected.timestamp));
  if (same == Same::Everything) {
    EXPECT_EQ(actual.timestamp.total_wct, expected.timestamp.total_wct);
    EXPECT_EQ(actual.timestamp.epoch_wct, expected.timestamp.epoch_wct);
    EXPECT_EQ(actual.timestamp.batch_wct, expected.timestamp.batch_wct);
  }
  EXPECT_EQ(actual.steps, expected.steps);
  EXPECT_EQ(actual.groups, expected.groups);
  EXPECT_EQ(actual.frozen, expected.frozen);
  EXPECT_EQ(actual.fingerprint, expected.fingerprint);
  EXPECT_EQ(actual.rng_key, expected.rng_key);
  EXPECT_EQ(actual.rng_counter, expected.rng_counter);
  if (same != Same::ExceptTimesAndMetrics) EXPECT_EQ(actual.metrics, expected.metrics);
  EXPECT_EQ(actual.skipped, expected.skipped);
  ASSERT_EQ(actual.optimizer_state.size(), expected.optimizer_state.size());
  for (const auto& [name, slots] : expected.optimizer_state) {
    auto it = actual.optimizer_state.find(name);
    ASSERT_NE(it, actual.optimizer_state.end()) << "no optimizer state for " << name;
    ASSERT_EQ(it->second.size(), slots.size()) << name;
    for (size_t i = 0; i < slots.size(); ++i) {
      const at::Tensor& a = it->second[i];
      const at::Tensor& b = slots[i];
      ASSERT_EQ(a.defined(), b.defined()) << name << " slot " << i;
      if (!b.defined()) continue;
      ASSERT_EQ(a.scalar_type(), b.scalar_type()) << name << " slot " << i;
      EXPECT_TRUE(at::equal(a, b)) << "optimizer state of " << name << " slot " << i << " differs";
    }
  }
}

// ------------------------------------------------------------------------------------------------ files

/// A fresh temporary folder per test, removed afterwards.
class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tessera-checkpoint-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << "mkdtemp failed";
    root_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    if (!root_.empty()) fs::remove_all(root_, ec);
  }
  std::string folder(const std::string& name) const { return (fs::path(root_) / name).string(); }

  std::string root_;
};

std::string join(const std::string& folder, const std::string& name) {
  return (fs::path(folder) / name).string();
}

/// The file names (not paths) of checkpoint_files(folder), newest first.
std::vector<std::string> names_in(const std::string& folder) {
  std::vector<std::string> out;
  for (const auto& path : checkpoint_files(folder)) out.push_back(fs::path(path).filename().string());
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void truncate_to_half(const std::string& path) { fs::resize_file(path, fs::file_size(path) / 2); }

void xor_byte(const std::string& path, std::streamoff offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << path;
  f.seekg(offset);
  char c = 0;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x5a));
}

void overwrite_start(const std::string& path, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << path;
  f.seekp(0);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// The message of the `E` that `f` throws (a test failure when it throws nothing).
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

/// The message of the InputError `f` throws; a failure when it is a CheckpointError (the file is fine, the
/// run does not fit it).
template <class F>
std::string mismatch_message(F&& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    ADD_FAILURE() << "expected a plain InputError, got a CheckpointError: " << e.what();
    return e.what();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

// ------------------------------------------------------------------------------------------------ 1. resume

class CheckpointResume : public CheckpointTest, public ::testing::WithParamInterface<RunSpec> {};
class CheckpointSensitivity : public CheckpointTest {};

bool has(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

/// The algorithms of `spec` did act in `run` (else an exact resume would prove little about them).
/// The 4-D parameters of a channels_last run and their momentum buffers are stored channels-last (a resumed run
/// too: the algorithm runs at Init, before the checkpoint loads into the same tensors).
void expect_channels_last(const Trainer& trainer) {
  const State& s = trainer.state();
  int64_t four_d = 0;
  for (const auto& p : s.model->parameters()) {
    if (p.dim() != 4) continue;
    ++four_d;
    // A 1x1 kernel (ResNet's projections) has the same memory order in both layouts: nothing to check.
    const bool one_by_one = p.size(2) == 1 && p.size(3) == 1;
    EXPECT_TRUE(one_by_one || (algorithms::is_channels_last(p) && !p.is_contiguous()));
    auto it = s.optimizer->state().find(p.unsafeGetTensorImpl());
    if (it == s.optimizer->state().end()) continue;
    for (const auto& slot : it->second) {
      if (slot.defined() && slot.dim() == 4) {
        EXPECT_TRUE(one_by_one || (algorithms::is_channels_last(slot) && !slot.is_contiguous()));
      }
    }
  }
  EXPECT_GT(four_d, 0);
}

void expect_algorithms_acted(const RunSpec& spec, const TestRun& run, const SnapshotAt& snapshots) {
  if (has(spec.algorithms, "channels_last")) expect_channels_last(*run.trainer);
  std::set<int64_t> rows, widths;
  for (const auto& line : run.recorder->shapes) {
    const auto open = line.find('[');
    std::vector<int64_t> dims;
    std::stringstream ss(line.substr(open + 1));
    for (std::string part; std::getline(ss, part, ',');) dims.push_back(std::stoll(part));
    rows.insert(dims.front());
    widths.insert(dims.back());
  }
  if (has(spec.algorithms, "alibi")) {  // ALiBi halves the warmup's lengths
    // 64 tokens per batch in rows of 1, 2, 4; at length 3 the warmup's 10 rows of 6 (60 tokens) give 20.
    EXPECT_EQ(rows, (std::set<int64_t>{16, 20, 32, 64})) << "rows of 1, 2, 3, then 4 tokens";
  } else if (has(spec.algorithms, "seq_length_warmup_rechunk")) {
    EXPECT_EQ(rows, (std::set<int64_t>{8, 10, 16, 32})) << "64 tokens per batch in rows of 2, 4, 6, then 8";
  } else if (has(spec.algorithms, "selective_backprop")) {
    EXPECT_EQ(rows, (std::set<int64_t>{4, 8})) << "selective backprop keeps 4 of 8 on every other batch";
  } else {
    EXPECT_EQ(rows, std::set<int64_t>{8});
  }
  if (has(spec.algorithms, "colout")) {  // ColOut first (8 -> 6 columns), then progressive resizing: 4 -> 6
    EXPECT_EQ(widths, (has(spec.algorithms, "progressive_resizing") ? std::set<int64_t>{4, 6} : std::set<int64_t>{6}));
  } else if (has(spec.algorithms, "progressive_resizing")) {
    EXPECT_EQ(widths, (std::set<int64_t>{4, 6, 8})) << "progressive resizing grows 4 -> 6 -> 8";
  }
  if (has(spec.algorithms, "alibi")) {
    EXPECT_EQ(widths, (std::set<int64_t>{1, 2, 3, 4})) << "sequences of 1, 2, 3, then 4 tokens";
  } else if (has(spec.algorithms, "seq_length_warmup") || has(spec.algorithms, "seq_length_warmup_rechunk")) {
    EXPECT_EQ(widths, (std::set<int64_t>{2, 4, 6, 8})) << "sequences of 2, 4, 6, then 8 tokens";
  }
  if (has(spec.algorithms, "swa")) {  // snapshots after batches 3 to 15, the last one with the end
    EXPECT_EQ(run.trainer->trace().at("swa/batch_end").count, 13);
    EXPECT_EQ(run.trainer->trace().at("swa/batch_start").count, 15) << "the SWA learning rate from batch 3 on";
  }
  if (has(spec.algorithms, "swa_epochs")) EXPECT_EQ(run.trainer->trace().at("swa/epoch_end").count, 2);
  if (has(spec.algorithms, "layer_freezing")) {
    // Freezing happens between the interruption points (4, 6, 13) and after the last one.
    const auto& at = snapshots.by_batch;
    EXPECT_EQ(at.at(4).frozen, "");
    EXPECT_NE(at.at(6).frozen, "");
    EXPECT_NE(at.at(13).frozen, at.at(6).frozen);
    EXPECT_NE(snapshot(*run.trainer).frozen, at.at(13).frozen);
  }
  if (has(spec.algorithms, "blurpool")) {
    int64_t blurred = 0;
    for (const auto& m : run->state().model->modules()) {
      if (dynamic_cast<algorithms::BlurConv2dImpl*>(m.get()) ||
          dynamic_cast<algorithms::BlurMaxPool2dImpl*>(m.get())) {
        ++blurred;
      }
    }
    EXPECT_EQ(blurred, 2) << "blurpool replaces conv2 and the max-pool";
  }
  // Surgery re-applied before loading: the resumed model has the same structure (the weights compared bitwise by the
  // caller load into it by name).
  auto count_modules = [&](auto* kind) {
    int64_t n = 0;
    for (const auto& m : run->state().model->modules()) n += dynamic_cast<decltype(kind)>(m.get()) != nullptr;
    return n;
  };
  if (has(spec.algorithms, "ghost_batchnorm")) {
    EXPECT_EQ(count_modules(static_cast<algorithms::GhostBatchNormLayerImpl*>(nullptr)), 3);
  }
  if (has(spec.algorithms, "squeeze_excite")) {
    EXPECT_EQ(count_modules(static_cast<algorithms::SqueezeExciteConv2dImpl*>(nullptr)), 2);
  }
  if (has(spec.algorithms, "stochastic_depth") || has(spec.algorithms, "stochastic_depth_sample")) {
    // ResNet-8's 3 blocks; the classifier's 2 transformer blocks.
    EXPECT_EQ(count_modules(static_cast<algorithms::StochasticDepthGateImpl*>(nullptr)),
              spec.model == "bert_classifier" ? 2 : 3);
  }
  if (has(spec.algorithms, "weight_standardization")) {  // CNN: 3 convs; ResNet-8: 7 and 2 projections
    EXPECT_EQ(count_modules(static_cast<algorithms::WeightStandardizedConvImpl*>(nullptr)), spec.model == "cnn" ? 3 : 9);
  }
  if (has(spec.algorithms, "gyro_dropout")) {  // the MLP's one dropout slot
    EXPECT_EQ(count_modules(static_cast<algorithms::GyroDropoutLayerImpl*>(nullptr)), 1);
  }
  if (has(spec.algorithms, "factorize")) {
    EXPECT_EQ(count_modules(static_cast<algorithms::FactorizedConv2dImpl*>(nullptr)), 2);
    EXPECT_EQ(count_modules(static_cast<algorithms::FactorizedLinearImpl*>(nullptr)), 1);
  }
}

TEST_P(CheckpointResume, InterruptedAndResumedRunEndsWithTheUninterruptedWeights) {
  const RunSpec& spec = GetParam();
  struct InjectedOom {  // every run of this spec, the resumed ones too
    explicit InjectedOom(int64_t n) {
      if (n >= 0) ::setenv("TESSERA_TEST_OOM_ABOVE", std::to_string(n).c_str(), 1);
    }
    ~InjectedOom() { ::unsetenv("TESSERA_TEST_OOM_ABOVE"); }
  } oom(spec.oom_above);
  auto uninterrupted = std::make_shared<SnapshotAt>();
  TestRun full = make_run(spec, {}, {uninterrupted});
  full->fit();
  const Snapshot end = snapshot(*full.trainer);
  const std::vector<std::string>& trail = full.recorder->lines;  // FitStart, then after each batch
  ASSERT_EQ(trail.size(), static_cast<size_t>(kTotalBatches + 1));
  ASSERT_EQ(end.timestamp.batch, kTotalBatches);
  expect_algorithms_acted(spec, full, *uninterrupted);
  if (spec.plateau) EXPECT_LT(full->state().schedulers.back()->alpha(Timestamp(), full->state().time), 1.0);

  // 0: before any batch; 4: mid-epoch; 6: at the first epoch boundary; 13: mid-epoch, late in the run.
  for (int64_t k : {0, 4, 6, 13}) {
    SCOPED_TRACE("interrupted after batch " + std::to_string(k));
    const std::string dir = folder("k" + std::to_string(k));
    Snapshot at_k;
    {
      TestRun first = make_run(spec, CheckpointOptions().folder(dir), {std::make_shared<StopAfter>(k)});
      if (k == 0) {
        fs::create_directories(dir);
        first->save_checkpoint(join(dir, "ep0-ba0.ckpt"));
      } else {
        first->fit();
      }
      at_k = snapshot(*first.trainer);
    }
    ASSERT_EQ(at_k.timestamp.batch, k);
    EXPECT_EQ(trail[k], fmt::format("ba{} step{} {}", k, at_k.steps, at_k.fingerprint))
        << "the interrupted run differs from the uninterrupted one before the interruption";

    // A new trainer from freshly built components finds the checkpoint and continues exactly.
    TestRun resumed = make_run(spec, CheckpointOptions().folder(dir).autoresume(true));
    const std::string expected_file = fmt::format("ep{}-ba{}.ckpt", k / kBatchesPerEpoch, k);
    EXPECT_EQ(resumed->loaded_checkpoint(), join(dir, expected_file));
    if (has(spec.algorithms, "channels_last")) expect_channels_last(*resumed.trainer);
    {
      SCOPED_TRACE("resumed trainer vs the interrupted one");
      expect_same_state(snapshot(*resumed.trainer), at_k, Same::Everything);
    }
    {
      // (The interrupted run evaluated at its end, the uninterrupted one not at k: metrics differ there.)
      SCOPED_TRACE("resumed trainer vs the uninterrupted run at the same point");
      expect_same_state(snapshot(*resumed.trainer), uninterrupted->by_batch.at(k),
                        Same::ExceptTimesAndMetrics);
    }

    resumed->fit();
    EXPECT_EQ(resumed.recorder->lines, std::vector<std::string>(trail.begin() + k, trail.end()));
    EXPECT_EQ(resumed.recorder->shapes,
              std::vector<std::string>(full.recorder->shapes.begin() + k, full.recorder->shapes.end()));
    EXPECT_EQ(fingerprint(*resumed.trainer), end.fingerprint);
    expect_same_state(snapshot(*resumed.trainer), end, Same::ExceptTimes);
  }
}

TEST_F(CheckpointSensitivity, ResumeWithoutOptimizerStateOrGeneratorsDiverges) {
  // The exact-resume checks can tell: dropping the restored optimizer moments, or re-seeding torch's
  // generator (dropout masks), changes the result.
  RunSpec spec;
  spec.name = "adamw_dropout";
  spec.model = "mlp_dropout";
  spec.optimizer = "adamw";
  const std::string expected = uninterrupted_fingerprint(spec);
  const std::string dir = folder("ckpt");
  make_run(spec, CheckpointOptions().folder(dir), {std::make_shared<StopAfter>(8)}).trainer->fit();
  for (const std::string& tamper : {"none", "optimizer state", "generator"}) {
    SCOPED_TRACE(tamper);
    TestRun resumed = make_run(spec, CheckpointOptions().load_path(join(dir, "ep1-ba8.ckpt")));
    if (tamper == "optimizer state") resumed->state().optimizer->state().clear();
    if (tamper == "generator") at::manual_seed(42);
    resumed->fit();
    if (tamper == "none") {
      EXPECT_EQ(fingerprint(*resumed.trainer), expected);
    } else {
      EXPECT_NE(fingerprint(*resumed.trainer), expected);
    }
  }
}

std::vector<RunSpec> resume_specs() {
  std::vector<RunSpec> specs;
  RunSpec sgd;
  sgd.name = "sgd_momentum_schedule_eval";
  sgd.scheduler = true;
  sgd.evaluator = true;
  specs.push_back(sgd);

  RunSpec inverse_sqrt = sgd;
  inverse_sqrt.name = "sgd_inverse_sqrt_schedule";
  inverse_sqrt.scheduler = false;
  inverse_sqrt.inverse_sqrt = true;
  specs.push_back(inverse_sqrt);

  RunSpec one_cycle = sgd;  // the momentum is the schedule's at the resumed batch, not the options'
  one_cycle.name = "sgd_onecycle_cycled_momentum";
  one_cycle.scheduler = false;
  one_cycle.one_cycle_momentum = true;
  specs.push_back(one_cycle);
  RunSpec one_cycle_adamw = one_cycle;  // beta1, in Adam's bias correction too
  one_cycle_adamw.name = "adamw_onecycle_cycled_beta1";
  one_cycle_adamw.optimizer = "adamw";
  specs.push_back(one_cycle_adamw);

  RunSpec per_epoch;  // the lr of a resumed mid-epoch batch is its epoch's
  per_epoch.name = "sgd_sequential_schedule_per_epoch";
  per_epoch.per_epoch_schedule = true;
  specs.push_back(per_epoch);

  RunSpec plateau = sgd;  // the plateau's best value, count and reductions resume with it
  plateau.name = "sgd_schedule_plateau_on_eval_accuracy";
  plateau.plateau = true;
  specs.push_back(plateau);

  RunSpec adamw;
  adamw.name = "adamw_dropout";
  adamw.model = "mlp_dropout";
  adamw.optimizer = "adamw";
  specs.push_back(adamw);

  RunSpec adam_groups;  // per-group lr and weight decay under a schedule, AMSGrad's extra moment
  adam_groups.name = "adam_amsgrad_groups_schedule";
  adam_groups.model = "mlp_dropout";
  adam_groups.optimizer = "adam_groups";
  adam_groups.scheduler = true;
  specs.push_back(adam_groups);

  RunSpec lion_groups;  // parameters added by surgery join the group that selects them, on resume too
  lion_groups.name = "lion_groups_squeeze_excite_layer_freezing";
  lion_groups.model = "cnn";
  lion_groups.optimizer = "lion_groups";
  lion_groups.algorithms = {"squeeze_excite", "layer_freezing"};
  specs.push_back(lion_groups);

  // Both kinds of state; Muon's matrices added by surgery and removed by freezing, on resume too.
  RunSpec muon_groups;
  muon_groups.name = "muon_groups_squeeze_excite_layer_freezing_schedule";
  muon_groups.model = "cnn";
  muon_groups.optimizer = "muon_groups";
  muon_groups.algorithms = {"squeeze_excite", "layer_freezing"};
  muon_groups.scheduler = true;
  specs.push_back(muon_groups);

  // Each one's state resumes.
  for (const char* optimizer : {"rmsprop", "adagrad", "nadam", "radam", "adamax", "adadelta", "adafactor_groups",
                                "lamb_groups", "lars_groups"}) {
    RunSpec spec;
    spec.name = std::string(optimizer) + "_schedule";
    const bool matrices = optimizer == std::string("lars_groups") || optimizer == std::string("adafactor_groups");
    spec.model = matrices ? "cnn" : "mlp_dropout";
    spec.optimizer = optimizer;
    spec.scheduler = true;
    specs.push_back(spec);
  }

  RunSpec accumulation;
  accumulation.name = "gradient_accumulation";
  accumulation.microbatch_size = 3;  // 8 = 3 + 3 + 2
  specs.push_back(accumulation);

  for (const auto& algorithm : kAllFive) {
    RunSpec one;
    one.name = algorithm;
    one.model = "cnn";
    one.algorithms = {algorithm};
    specs.push_back(one);
  }
  RunSpec clipped;  // stateless, with microbatches: clipping once per step must resume exactly too
  clipped.name = "gradient_clipping_microbatches";
  clipped.model = "cnn";
  clipped.microbatch_size = 3;
  clipped.algorithms = {"gradient_clipping", "label_smoothing"};
  specs.push_back(clipped);
  RunSpec channels_last;  // weights and momentum saved from NHWC tensors load bitwise into a fresh NHWC run
  channels_last.name = "channels_last_blurpool_microbatches";
  channels_last.model = "cnn";
  channels_last.microbatch_size = 3;
  channels_last.algorithms = {"channels_last", "blurpool", "gradient_clipping"};
  specs.push_back(channels_last);
  // EMA: the training weights are the model's in the checkpoint, the averages the algorithm's; evaluations (on the
  // averages) in between, microbatches; and with batch norm, surgery, layer freezing and a loss scaler's state.
  RunSpec ema = sgd;
  ema.name = "ema_eval_microbatches";
  ema.microbatch_size = 3;
  ema.algorithms = {"ema"};
  specs.push_back(ema);
  RunSpec ema_cnn;
  ema_cnn.name = "ema_layer_freezing_amp_bf16_loss_scaling";
  ema_cnn.model = "cnn";
  ema_cnn.precision = "amp_bf16";
  ema_cnn.loss_scaling = "dynamic";
  ema_cnn.algorithms = {"blurpool", "ema", "layer_freezing"};
  specs.push_back(ema_cnn);
  // MixUp and CutMix draw from (seed, batch) and keep no state: a resumed run draws the same λ, permutations and
  // boxes. With microbatches (the permuted targets travel with the rows), label smoothing on both target sets,
  // selective backprop and progressive resizing before the mix, and under autocast.
  for (const char* mixer : {"mixup", "cutmix"}) {
    RunSpec one;
    one.name = mixer;
    one.model = "cnn";
    one.algorithms = {mixer};
    specs.push_back(one);
  }
  RunSpec mixed;
  mixed.name = "mixup_label_smoothing_selective_backprop_resizing_microbatches";
  mixed.model = "cnn";
  mixed.microbatch_size = 2;  // selective backprop keeps 4 of 8: microbatches of 2 (batch norm needs 2 rows)
  mixed.algorithms = {"mixup", "label_smoothing", "selective_backprop", "progressive_resizing"};
  specs.push_back(mixed);
  RunSpec cut = mixed;
  cut.name = "cutmix_label_smoothing_resizing_amp_bf16";
  cut.precision = "amp_bf16";
  cut.algorithms = {"cutmix", "label_smoothing", "progressive_resizing"};
  specs.push_back(cut);
  // SAM keeps no state: its schedule is the batch count. With batch norm (the second forward's statistics dropped),
  // microbatches, clipping of the second pass's gradients, and a loss scaler over both passes.
  RunSpec sam;
  sam.name = "sam_clipping_microbatches_loss_scaling";
  sam.model = "cnn";
  sam.microbatch_size = 3;
  sam.loss_scaling = "dynamic";
  sam.algorithms = {"sam", "gradient_clipping", "label_smoothing"};
  specs.push_back(sam);
  // SWA: the averages, their count and the SWA learning rate's start in checkpoints; the batch-norm pass over the
  // training data at swa_end leaves the loader where it was. With a learning-rate schedule and microbatches; and with
  // epoch snapshots, a finished average before the last interruption, layer freezing and a loss scaler.
  RunSpec swa;
  swa.name = "swa_schedule_microbatches";
  swa.model = "cnn";
  swa.scheduler = true;
  swa.microbatch_size = 3;
  swa.algorithms = {"swa"};
  specs.push_back(swa);
  RunSpec swa_epochs;
  swa_epochs.name = "swa_epochs_layer_freezing_amp_bf16_loss_scaling";
  swa_epochs.model = "cnn";
  swa_epochs.precision = "amp_bf16";
  swa_epochs.loss_scaling = "dynamic";
  swa_epochs.algorithms = {"swa_epochs", "layer_freezing"};
  specs.push_back(swa_epochs);
  // Ghost BatchNorm and Squeeze-Excite: surgery at Init in the fresh run, then the checkpoint loads by name into the
  // new structure (SE's new layers, their momentum buffers and EMA's averages of them). Ghost batches of 2 in
  // microbatches of 3 (chunks of 2 and 1); blurpool after SE blurs the conv inside it; under autocast with
  // channels-last and layer freezing (which then counts the SE layers among the freezable ones).
  RunSpec ghost;
  ghost.name = "ghost_batchnorm_squeeze_excite_blurpool_ema_microbatches";
  ghost.model = "cnn";
  ghost.microbatch_size = 3;
  ghost.algorithms = {"blurpool", "ghost_batchnorm", "squeeze_excite", "ema"};
  specs.push_back(ghost);
  RunSpec ghost_bf16;
  ghost_bf16.name = "squeeze_excite_ghost_batchnorm_channels_last_layer_freezing_amp_bf16";
  ghost_bf16.model = "cnn";
  ghost_bf16.precision = "amp_bf16";
  ghost_bf16.algorithms = {"squeeze_excite", "ghost_batchnorm", "channels_last", "layer_freezing"};
  specs.push_back(ghost_bf16);
  // Stochastic depth keeps no state (its gates' rates and draws come from the batch count, the seed and the rank) and
  // weight standardization none (the same parameter tensors): surgery at Init in the fresh run, then the checkpoint
  // loads by name. Block mode with a warmup and microbatches (one draw per microbatch); sample mode under autocast,
  // channels-last; weight standardization after blurpool and squeeze-excite on the CNN (the convs they wrap).
  RunSpec depth;
  depth.name = "stochastic_depth_weight_standardization_ema_microbatches";
  depth.model = "resnet";
  depth.microbatch_size = 3;
  depth.algorithms = {"stochastic_depth", "weight_standardization", "ema"};
  specs.push_back(depth);
  RunSpec depth_bf16;
  depth_bf16.name = "stochastic_depth_sample_weight_standardization_channels_last_amp_bf16";
  depth_bf16.model = "resnet";
  depth_bf16.precision = "amp_bf16";
  depth_bf16.algorithms = {"stochastic_depth_sample", "weight_standardization", "channels_last"};
  specs.push_back(depth_bf16);
  // Gyro dropout keeps no state (its masks and their periods come from the seed and the batch count): surgery at
  // Init in the fresh run; SAM's second pass and selective backprop's scoring use the batch's masks; microbatches
  // (each spreads the masks over its own examples) under autocast.
  RunSpec gyro;
  gyro.name = "gyro_dropout_sam_selective_backprop_microbatches_amp_bf16";
  gyro.model = "mlp_dropout";
  gyro.microbatch_size = 3;
  gyro.precision = "amp_bf16";
  gyro.algorithms = {"gyro_dropout", "sam", "selective_backprop"};
  specs.push_back(gyro);
  // A language model (a small GPT on token sequences, AdamW): sequences lengthened on schedule; selective backprop
  // scores examples by their mean token loss; label smoothing over the vocabulary at every position; microbatches
  // under autocast. Then the tokens re-chunked into more, shorter rows (as many microbatches as they make) with SAM.
  RunSpec gpt;
  gpt.name = "gpt_seq_length_warmup_glu_low_precision_layernorm_label_smoothing_selective_backprop_microbatches_amp_bf16";
  gpt.model = "gpt";
  gpt.optimizer = "adamw";
  gpt.microbatch_size = 3;
  gpt.precision = "amp_bf16";
  gpt.algorithms = {"seq_length_warmup", "gated_linear_units", "low_precision_layernorm", "label_smoothing",
                    "selective_backprop"};
  specs.push_back(gpt);
  // GPT-2's tied embeddings (one weight, two uses: its gradient and optimizer state once) with the same methods.
  RunSpec tied = gpt;
  tied.name = "gpt2_tied_seq_length_warmup_glu_label_smoothing_selective_backprop_microbatches_amp_bf16";
  tied.model = "gpt2";
  tied.algorithms = {"seq_length_warmup", "gated_linear_units", "label_smoothing", "selective_backprop"};
  specs.push_back(tied);
  // Llama's architecture (RMSNorm, rotary positions, SwiGLU, grouped-query attention) with the methods that fit it.
  RunSpec llama = gpt;
  llama.name = "llama_seq_length_warmup_label_smoothing_selective_backprop_microbatches_amp_bf16";
  llama.model = "llama";
  llama.algorithms = {"seq_length_warmup", "label_smoothing", "selective_backprop"};
  specs.push_back(llama);
  // ALiBi's surgery re-applied before loading (its frozen position embedding out of the optimizer), its rows of half
  // the warmup's length.
  RunSpec rechunk = gpt;
  rechunk.name = "gpt_seq_length_warmup_rechunked_alibi_sam_microbatches";
  rechunk.precision = "fp32";
  rechunk.microbatch_size = 5;
  rechunk.algorithms = {"seq_length_warmup_rechunk", "alibi", "sam"};
  specs.push_back(rechunk);
  // A text classifier on padded sequences: truncated on schedule, GLUs, per-example scores, smoothed labels, blocks
  // dropped, in microbatches under autocast.
  RunSpec classifier = gpt;
  classifier.name = "bert_classifier_seq_length_warmup_glu_label_smoothing_selective_backprop_stochastic_depth_"
                    "microbatches_amp_bf16";
  classifier.model = "bert_classifier";
  classifier.algorithms = {"seq_length_warmup", "gated_linear_units", "label_smoothing", "selective_backprop",
                           "stochastic_depth"};
  specs.push_back(classifier);
  RunSpec standardized;
  standardized.name = "weight_standardization_blurpool_squeeze_excite";
  standardized.model = "cnn";
  standardized.algorithms = {"weight_standardization", "blurpool", "squeeze_excite"};
  specs.push_back(standardized);
  // A ResNet with GroupNorms computing in bf16 (the surgery re-applied before loading; it changes no tensor), their
  // convolutions standardized, blocks dropped by stochastic depth, microbatches under autocast.
  RunSpec group_norm;
  group_norm.name = "resnet_low_precision_groupnorm_weight_standardization_stochastic_depth_microbatches_amp_bf16";
  group_norm.model = "resnet_group";
  group_norm.microbatch_size = 3;
  group_norm.precision = "amp_bf16";
  group_norm.algorithms = {"low_precision_groupnorm", "weight_standardization", "stochastic_depth"};
  specs.push_back(group_norm);
  // Factorize: surgery at Init (the factors initialised by SVD) in the fresh run, then the checkpoint loads by name
  // into the factors (their momentum buffers and EMA's averages of them); inside SE's slot, the strided factor
  // blurred by blurpool (declared order, whatever the recipe order); microbatches under autocast.
  RunSpec factorize;
  factorize.name = "factorize_squeeze_excite_blurpool_ema_microbatches_amp_bf16";
  factorize.model = "cnn";
  factorize.microbatch_size = 3;
  factorize.precision = "amp_bf16";
  factorize.algorithms = {"blurpool", "factorize", "squeeze_excite", "ema"};
  specs.push_back(factorize);
  // CutOut draws its holes from (seed, batch) and keeps no state; on the resized images, with MixUp, microbatches
  // and autocast.
  RunSpec cutout = mixed;
  cutout.name = "cutout_mixup_resizing_microbatches_amp_bf16";
  cutout.precision = "amp_bf16";
  cutout.algorithms = {"cutout", "mixup", "progressive_resizing"};
  specs.push_back(cutout);
  // ColOut draws its rows and columns from (seed, batch) (here per example) and keeps no state; after selective
  // backprop, before progressive resizing and CutOut (declared order), with microbatches and autocast.
  RunSpec colout = cutout;
  colout.name = "colout_selective_backprop_resizing_cutout_microbatches_amp_bf16";
  colout.algorithms = {"colout", "selective_backprop", "progressive_resizing", "cutout"};
  specs.push_back(colout);
  // RandAugment and AugMix run in the DataLoader, every example from a generator keyed by (seed, epoch, batch,
  // example), and keep no state: the resumed loader produces the same augmented batches. Before MixUp and
  // progressive resizing, with microbatches and autocast.
  RunSpec augment = cutout;
  augment.name = "randaugment_augmix_mixup_resizing_microbatches_amp_bf16";
  augment.algorithms = {"randaugment", "augmix", "mixup", "progressive_resizing"};
  specs.push_back(augment);
  // The no-op model: its stand-in replaces the CNN at Init in the fresh run too, then the checkpoint loads its one
  // parameter (and its momentum); the batch algorithms, EMA and microbatches act as with a real model.
  RunSpec no_op = cutout;
  no_op.name = "no_op_model_selective_backprop_resizing_ema_microbatches_amp_bf16";
  no_op.algorithms = {"no_op_model", "selective_backprop", "progressive_resizing", "ema"};
  specs.push_back(no_op);
  RunSpec all;
  all.name = "all_five";
  all.model = "cnn";
  all.algorithms = kAllFive;
  specs.push_back(all);

  // Mixed precision and automatic microbatching (issue 15): with every algorithm, and with the loss scaler
  // (bfloat16 needs none, loss_scaling: dynamic forces it so that its state goes through the checkpoints).
  RunSpec bf16 = sgd;
  bf16.name = "amp_bf16";
  bf16.precision = "amp_bf16";
  specs.push_back(bf16);
  RunSpec scaled = all;
  scaled.name = "all_five_amp_bf16_loss_scaling";
  scaled.precision = "amp_bf16";
  scaled.loss_scaling = "dynamic";
  specs.push_back(scaled);
  RunSpec automatic = all;
  automatic.name = "all_five_auto_microbatch_amp_bf16";
  automatic.precision = "amp_bf16";
  automatic.auto_microbatch = true;
  automatic.oom_above = 3;  // 8 -> 4 -> 2 (selective backprop's batches of 4 -> 2)
  specs.push_back(automatic);
  return specs;
}

INSTANTIATE_TEST_SUITE_P(Checkpoint, CheckpointResume, ::testing::ValuesIn(resume_specs()),
                         [](const ::testing::TestParamInfo<RunSpec>& info) { return info.param.name; });

// ------------------------------------------------------------------------------------------------ 2. files

class CheckpointFiles : public CheckpointTest {};

RunSpec tiny_spec() {
  RunSpec spec;
  spec.name = "tiny";
  return spec;
}

RunSpec all_five_spec() {
  RunSpec spec;
  spec.name = "all_five";
  spec.model = "cnn";
  spec.algorithms = kAllFive;
  return spec;
}

/// Records the checkpoint files of a folder at every BatchEnd (that is, after the previous batch's save).
class FolderListing : public Callback {
 public:
  explicit FolderListing(std::string folder) : folder_(std::move(folder)) {}
  std::string name() const override { return "folder_listing"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::BatchEnd) by_batch[s.timestamp.batch] = names_in(folder_);
  }
  std::map<int64_t, std::vector<std::string>> by_batch;

 private:
  std::string folder_;
};

using Names = std::vector<std::string>;

TEST_F(CheckpointFiles, BatchIntervalNamesLatestAndKeepPruning) {
  const std::string dir = folder("ckpt");
  fs::create_directories(dir);
  // A temporary file left by a killed run (another process id) is removed by the first pruning.
  const std::string stale = join(dir, "ep0-ba1.ckpt.tmp-999999999");
  std::ofstream(stale) << "partial";
  auto listing = std::make_shared<FolderListing>(dir);
  TestRun run =
      make_run(tiny_spec(), CheckpointOptions().folder(dir).interval(Time::parse("4ba")).keep(2), {listing});
  run->fit();

  // Saves after batches 4, 8, 12, 16 (named by the epoch they are in) and at the end, keeping two.
  EXPECT_EQ(listing->by_batch.at(4), Names{});
  EXPECT_EQ(listing->by_batch.at(5), Names{"ep0-ba4.ckpt"});
  EXPECT_EQ(listing->by_batch.at(9), (Names{"ep1-ba8.ckpt", "ep0-ba4.ckpt"}));
  EXPECT_EQ(listing->by_batch.at(13), (Names{"ep1-ba12.ckpt", "ep1-ba8.ckpt"}));
  EXPECT_EQ(listing->by_batch.at(17), (Names{"ep2-ba16.ckpt", "ep1-ba12.ckpt"}));
  for (const auto& [batch, names] : listing->by_batch) EXPECT_LE(names.size(), 2u) << "at batch " << batch;
  EXPECT_EQ(names_in(dir), (Names{"ep3-ba18.ckpt", "ep2-ba16.ckpt"}));
  EXPECT_EQ(read_text(join(dir, "latest")), "ep3-ba18.ckpt\n");
  EXPECT_EQ(run->last_checkpoint(), join(dir, "ep3-ba18.ckpt"));
  EXPECT_EQ(newest_valid_checkpoint(dir), join(dir, "ep3-ba18.ckpt"));
  EXPECT_FALSE(fs::exists(stale));
  // Nothing else is left in the folder (no temporary files).
  std::vector<std::string> all;
  for (const auto& entry : fs::directory_iterator(dir)) all.push_back(entry.path().filename().string());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (Names{"ep2-ba16.ckpt", "ep3-ba18.ckpt", "latest"}));
}

TEST_F(CheckpointFiles, AFreshRunMovesAnEarlierRunsCheckpointsAsideAndWritesItsOwn) {
  // Run A leaves ep0-ba2 (and ep0-ba4); run B starts fresh in that folder from A's ep0-ba2 weights: A's files
  // would outrank B's (autoresume would take A's ep0-ba4) and take the places `keep` leaves, and B's own
  // ep0-ba2 would not be written (the name was "on disk").
  const std::string dir = folder("ckpt");
  {
    TestRun a = make_run(tiny_spec(), CheckpointOptions().folder(dir).interval(Time::parse("2ba")),
                         {std::make_shared<StopAfter>(4)});
    a->fit();
  }
  ASSERT_EQ(names_in(dir), (Names{"ep0-ba4.ckpt", "ep0-ba2.ckpt"}));
  const std::string a_file = read_text(join(dir, "ep0-ba2.ckpt"));
  std::ofstream(join(dir, "ep0-ba4.ckpt.tmp-" + std::to_string(::getpid()))) << "left by a killed write";
  {
    TestRun b = make_run(tiny_spec(),
                         CheckpointOptions()
                             .folder(dir)
                             .interval(Time::parse("2ba"))
                             .load_path(join(dir, "ep0-ba2.ckpt"))
                             .weights_only(true),
                         {std::make_shared<StopAfter>(2)});
    b->fit();
  }
  EXPECT_EQ(names_in(dir), Names{"ep0-ba2.ckpt"});
  EXPECT_NE(read_text(join(dir, "ep0-ba2.ckpt")), a_file);  // B's own state under that name
  EXPECT_EQ(names_in(join(dir, "earlier-1")), (Names{"ep0-ba4.ckpt", "ep0-ba2.ckpt"}));
  EXPECT_EQ(read_text(join(join(dir, "earlier-1"), "ep0-ba2.ckpt")), a_file);
  EXPECT_EQ(read_text(join(join(dir, "earlier-1"), "latest")), "ep0-ba4.ckpt\n");
  EXPECT_FALSE(fs::exists(join(dir, "ep0-ba4.ckpt.tmp-" + std::to_string(::getpid()))));
  // Resumed, B continues from its own checkpoint.
  TestRun resumed = make_run(tiny_spec(), CheckpointOptions().folder(dir).autoresume(true));
  EXPECT_EQ(resumed->loaded_checkpoint(), join(dir, "ep0-ba2.ckpt"));
}

/// Throws at the first batch's start, as a batch the model does not take would.
class FailsAtFirstBatch : public Callback {
 public:
  std::string name() const override { return "fails_at_first_batch"; }
  void run_event(Event event, State&, Logger&) override {
    if (event == Event::BatchStart) throw InputError("this batch does not fit the model");
  }
};

TEST_F(CheckpointFiles, ARunThatFailsAtItsFirstBatchLeavesTheMetricsFileOfTheRunBefore) {
  const std::string metrics = join(folder("run"), "metrics.jsonl");
  const auto run = [&](std::shared_ptr<Callback> extra) {
    Components c = components(tiny_spec());
    c.callbacks.push_back(
        std::make_shared<callbacks::JsonlWriter>(callbacks::JsonlWriterOptions().path(metrics)));
    if (extra) c.callbacks.push_back(std::move(extra));
    return std::make_unique<Trainer>(trainer_options(tiny_spec()), std::move(c));
  };
  run(nullptr)->fit();
  const std::string before = read_text(metrics);
  ASSERT_GT(before.size(), 100u);
  EXPECT_THROW(run(std::make_shared<FailsAtFirstBatch>())->fit(), InputError);
  EXPECT_EQ(read_text(metrics), before);
}

TEST_F(CheckpointFiles, AFolderThatIsAFileIsRefusedBeforeTraining) {
  std::ofstream(folder("a_file")) << "x";
  EXPECT_THAT(
      testing::input_error_of([&] { make_run(tiny_spec(), CheckpointOptions().folder(folder("a_file"))); }),
      HasSubstr("checkpoint.folder: '" + folder("a_file") + "' exists and is not a folder"));
}

TEST_F(CheckpointFiles, AFullResumeWithAnotherBatchSizeIsRefusedEvenWithTheSameBatchesPerEpoch) {
  // 48 examples in batches of 8 or of 9: 6 batches of 48 examples per epoch either way, but not the same
  // batches.
  const std::string dir = folder("ckpt");
  make_run(tiny_spec(), CheckpointOptions().folder(dir).interval(Time::parse("4ba")),
           {std::make_shared<StopAfter>(4)})
      ->fit();
  RunSpec nines = tiny_spec();
  nines.batch_size = 9;
  EXPECT_THAT(testing::input_error_of(
                  [&] { make_run(nines, CheckpointOptions().load_path(join(dir, "ep0-ba4.ckpt"))); }),
              HasSubstr("was taken with batches of 8 examples, this run's are of 9: the batch size changed"));
  EXPECT_NO_THROW(
      make_run(nines, CheckpointOptions().load_path(join(dir, "ep0-ba4.ckpt")).weights_only(true)));
}

TEST_F(CheckpointFiles, ALoadThatFailsAfterItBeganToChangeTheTrainerLeavesItRefusingToGoOn) {
  // The metrics file the checkpoint continues lost its lines: found only when the writer's state is loaded,
  // after the weights and the optimizer. The trainer then holds parts of two runs: it says so instead of
  // training on.
  const std::string dir = folder("ckpt"), metrics = join(folder("run"), "metrics.jsonl");
  const auto run = [&](CheckpointOptions checkpoint) {
    Components c = components(tiny_spec());
    c.callbacks.push_back(
        std::make_shared<callbacks::JsonlWriter>(callbacks::JsonlWriterOptions().path(metrics)));
    return std::make_unique<Trainer>(trainer_options(tiny_spec()), std::move(c), std::move(checkpoint));
  };
  {
    auto first = run(CheckpointOptions().folder(dir).interval(Time::parse("4ba")));
    first->fit();
  }
  std::ofstream(metrics, std::ios::trunc).close();
  auto second = run({});
  EXPECT_THROW(second->load_checkpoint(newest_valid_checkpoint(dir)), Error);
  try {
    second->fit();
    ADD_FAILURE() << "fit() went on";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("fit: a checkpoint load into this trainer failed after it had begun to change it"));
    EXPECT_THAT(e.what(), HasSubstr("Make a new Trainer"));
  }
  // A load refused before it changed anything leaves the trainer as it was.
  auto third = run({});
  EXPECT_THROW(third->load_checkpoint(join(dir, "missing.ckpt")), Error);
  EXPECT_NO_THROW(third->fit());
}

TEST_F(CheckpointFiles, RelativeFolderIsResolvedAgainstTheRunFolderFromCpp) {
  // Issue 20: CheckpointOptions().folder("ck") with a run folder wrote to ./ck, and autoresume then looked there.
  const std::string run_dir = folder("runs/b");
  const CheckpointOptions ck = CheckpointOptions().folder("ck").autoresume(true);
  const auto opts = [&](const char* duration) {
    return TrainerOptions().run_dir(run_dir).max_duration(Time::parse(duration)).threads(1).seed(3);
  };
  {
    Trainer first(opts("1ep"), testing::tiny_components(), ck);
    EXPECT_EQ(first.checkpoint_options().folder(), join(run_dir, "ck"));
    first.fit();
  }
  EXPECT_EQ(read_text(join(join(run_dir, "ck"), "latest")), "ep1-ba6.ckpt\n");
  EXPECT_FALSE(fs::exists("ck")) << "nothing may land in the current directory";
  Trainer again(opts("2ep"), testing::tiny_components(), ck);
  EXPECT_EQ(again.loaded_checkpoint(), join(join(run_dir, "ck"), "ep1-ba6.ckpt"));
}

TEST_F(CheckpointFiles, SaveCheckpointCreatesAMissingFolderOrNamesIt) {
  // Issue 20: saving into a folder that did not exist failed naming the temporary file.
  Trainer trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), testing::tiny_components());
  const std::string path = join(folder("new/deeper"), "saved.ckpt");
  trainer.save_checkpoint(path);
  ASSERT_TRUE(fs::is_regular_file(path));
  EXPECT_NO_THROW(trainer.load_checkpoint(path));  // a complete, valid file
  // A folder that cannot be made (its parent is a file) is named, with the reason.
  std::ofstream(folder("a_file")) << "x";
  const std::string bad = join(join(folder("a_file"), "sub"), "x.ckpt");
  try {
    trainer.save_checkpoint(bad);
    ADD_FAILURE() << "saving under a file succeeded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("save_checkpoint: cannot create the folder '" + join(folder("a_file"), "sub") +
                                    "' for " + bad));
  }
}

TEST_F(CheckpointFiles, KeepOneNeverDeletesTheNewest) {
  const std::string dir = folder("ckpt");
  auto listing = std::make_shared<FolderListing>(dir);
  TestRun run =
      make_run(tiny_spec(), CheckpointOptions().folder(dir).interval(Time::parse("1ba")).keep(1), {listing});
  run->fit();
  for (int64_t b = 2; b <= kTotalBatches; ++b) {
    const int64_t saved = b - 1;  // the checkpoint of the previous batch, named by the epoch it was taken in
    EXPECT_EQ(listing->by_batch.at(b),
              Names{fmt::format("ep{}-ba{}.ckpt", (saved - 1) / kBatchesPerEpoch, saved)})
        << "at batch " << b;
  }
  EXPECT_EQ(names_in(dir), Names{"ep3-ba18.ckpt"});
  EXPECT_EQ(read_text(join(dir, "latest")), "ep3-ba18.ckpt\n");
}

TEST_F(CheckpointFiles, EpochSampleAndDurationIntervals) {
  {
    const std::string dir = folder("ep");
    make_run(tiny_spec(), CheckpointOptions().folder(dir).interval(Time::parse("1ep")).keep(10))
        .trainer->fit();
    EXPECT_EQ(names_in(dir), (Names{"ep3-ba18.ckpt", "ep2-ba12.ckpt", "ep1-ba6.ckpt"}));
  }
  {
    const std::string dir = folder("ep2");
    make_run(tiny_spec(), CheckpointOptions().folder(dir).interval(Time::parse("2ep")).keep(10))
        .trainer->fit();
    EXPECT_EQ(names_in(dir), (Names{"ep3-ba18.ckpt", "ep2-ba12.ckpt"}));
  }
  {
    // Every 20 samples crossed (batches of 8): after samples 24, 40, 64, 80, 104, 120, 144; then the end
    // (after the last epoch ends: the same batch in the next epoch).
    const std::string dir = folder("sp");
    make_run(tiny_spec(), CheckpointOptions().folder(dir).interval(Time::parse("20sp")).keep(10))
        .trainer->fit();
    EXPECT_EQ(names_in(dir), (Names{"ep3-ba18.ckpt", "ep2-ba18.ckpt", "ep2-ba15.ckpt", "ep2-ba13.ckpt",
                                    "ep1-ba10.ckpt", "ep1-ba8.ckpt", "ep0-ba5.ckpt", "ep0-ba3.ckpt"}));
  }
  {
    // Every quarter of the 18 batches: after batches 5 (0.28), 9 (0.5), 14 (0.78), 18 (1.0); then the end.
    const std::string dir = folder("dur");
    make_run(tiny_spec(), CheckpointOptions().folder(dir).interval(Time::parse("0.25dur")).keep(10))
        .trainer->fit();
    EXPECT_EQ(names_in(dir),
              (Names{"ep3-ba18.ckpt", "ep2-ba18.ckpt", "ep2-ba14.ckpt", "ep1-ba9.ckpt", "ep0-ba5.ckpt"}));
  }
}

TEST_F(CheckpointFiles, InspectReportsTimestampVersionsSeedAndRecipe) {
  const std::string dir = folder("ckpt");
  RunSpec spec = tiny_spec();
  spec.seed = 1234;
  TestRun run = make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("4ba")).keep(10),
                         {std::make_shared<StopAfter>(8)});
  run->set_recipe_text("model: tiny\nseed: 1234\n");
  run->fit();
  const CheckpointInfo info = inspect_checkpoint(join(dir, "ep1-ba8.ckpt"));
  EXPECT_EQ(info.path, join(dir, "ep1-ba8.ckpt"));
  EXPECT_EQ(counters(info.timestamp), counters(run->state().timestamp));
  EXPECT_EQ(info.timestamp.total_wct, run->state().timestamp.total_wct);
  EXPECT_EQ(info.timestamp.batch, 8);
  EXPECT_EQ(info.timestamp.epoch, 1);
  EXPECT_EQ(info.timestamp.batch_in_epoch, 2);
  EXPECT_EQ(info.timestamp.sample, 64);
  EXPECT_EQ(info.tessera_version, TESSERA_VERSION_STRING);
  EXPECT_EQ(info.torch_version,
            fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH));
  EXPECT_EQ(info.recipe, "model: tiny\nseed: 1234\n");
  EXPECT_EQ(info.seed, 1234);
  EXPECT_EQ(info.world_size, 1);
  const CheckpointInfo earlier = inspect_checkpoint(join(dir, "ep0-ba4.ckpt"));
  EXPECT_EQ(earlier.timestamp.batch, 4);
  EXPECT_EQ(earlier.timestamp.epoch, 0);
  EXPECT_EQ(earlier.timestamp.sample, 32);
  EXPECT_EQ(checkpoint_files(dir), (Names{join(dir, "ep1-ba8.ckpt"), join(dir, "ep0-ba4.ckpt")}));
  EXPECT_EQ(checkpoint_files(folder("does-not-exist")), Names{});
}

TEST_F(CheckpointFiles, EveryCheckpointOfARunResumesToItsFinalWeights) {
  // Checkpoints every 3 batches include states taken before an epoch's end (ep0-ba6, ep1-ba12, ep2-ba18:
  // EpochEnd and layer freezing still to come) and the final one (nothing left to train).
  const RunSpec spec = all_five_spec();
  const std::string dir = folder("ckpt");
  TestRun full = make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("3ba")).keep(100));
  full->fit();
  const std::string expected = fingerprint(*full.trainer);
  EXPECT_EQ(expected, uninterrupted_fingerprint(spec)) << "writing checkpoints changed the run";
  ASSERT_EQ(names_in(dir), (Names{"ep3-ba18.ckpt", "ep2-ba18.ckpt", "ep2-ba15.ckpt", "ep1-ba12.ckpt",
                                  "ep1-ba9.ckpt", "ep0-ba6.ckpt", "ep0-ba3.ckpt"}));
  for (const auto& path : checkpoint_files(dir)) {
    SCOPED_TRACE(path);
    const int64_t batch = inspect_checkpoint(path).timestamp.batch;
    TestRun resumed = make_run(spec, CheckpointOptions().load_path(path));
    EXPECT_EQ(resumed->loaded_checkpoint(), path);
    resumed->fit();
    EXPECT_EQ(fingerprint(*resumed.trainer), expected);
    EXPECT_EQ(resumed->state().timestamp.batch, kTotalBatches);
    EXPECT_EQ(resumed->state().timestamp.epoch, kEpochs);
    if (path == join(dir, "ep3-ba18.ckpt")) {
      EXPECT_TRUE(resumed.recorder->lines.empty()) << "a complete run has nothing to train";
    } else {
      const auto& trail = full.recorder->lines;
      EXPECT_EQ(resumed.recorder->lines, std::vector<std::string>(trail.begin() + batch, trail.end()));
    }
  }
}

// ------------------------------------------------------------------------------------------------ 3. corrupt

class CheckpointCorruption : public CheckpointTest {};

TEST_F(CheckpointCorruption, InvalidFilesAreNamedAndAutoresumeFallsBackToTheNewestValidOne) {
  const RunSpec spec = tiny_spec();
  const std::string expected = uninterrupted_fingerprint(spec);
  const std::string dir = folder("ckpt");
  make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("2ba")).keep(10),
           {std::make_shared<StopAfter>(10)})
      .trainer->fit();
  ASSERT_EQ(names_in(dir),
            (Names{"ep1-ba10.ckpt", "ep1-ba8.ckpt", "ep0-ba6.ckpt", "ep0-ba4.ckpt", "ep0-ba2.ckpt"}));

  const std::string truncated = join(dir, "ep1-ba10.ckpt");
  const std::string flipped = join(dir, "ep1-ba8.ckpt");
  const std::string bad_magic = join(dir, "ep0-ba6.ckpt");
  truncate_to_half(truncated);
  xor_byte(flipped, static_cast<std::streamoff>(fs::file_size(flipped) / 2));
  overwrite_start(bad_magic, "NOTACKPT");

  std::string msg = message_of<CheckpointError>([&] { inspect_checkpoint(truncated); });
  EXPECT_THAT(msg, HasSubstr(truncated));
  EXPECT_THAT(msg, HasSubstr("truncated"));
  msg = message_of<CheckpointError>([&] { inspect_checkpoint(flipped); });
  EXPECT_THAT(msg, HasSubstr(flipped));
  EXPECT_THAT(msg, HasSubstr("checksum mismatch"));
  msg = message_of<CheckpointError>([&] { inspect_checkpoint(bad_magic); });
  EXPECT_THAT(msg, HasSubstr(bad_magic));
  EXPECT_THAT(msg, HasSubstr("not a Tessera checkpoint"));
  msg = message_of<CheckpointError>([&] { inspect_checkpoint(join(dir, "missing.ckpt")); });
  EXPECT_THAT(msg, HasSubstr(join(dir, "missing.ckpt")));

  std::vector<std::string> rejected;
  EXPECT_EQ(newest_valid_checkpoint(dir, &rejected), join(dir, "ep0-ba4.ckpt"));
  ASSERT_EQ(rejected.size(), 3u);
  EXPECT_THAT(rejected[0], HasSubstr(truncated));
  EXPECT_THAT(rejected[1], HasSubstr(flipped));
  EXPECT_THAT(rejected[2], HasSubstr(bad_magic));

  // A corrupt file named by load_path is refused at construction.
  msg = message_of<CheckpointError>([&] { make_run(spec, CheckpointOptions().load_path(flipped)); });
  EXPECT_THAT(msg, HasSubstr(flipped));

  TestRun resumed = make_run(spec, CheckpointOptions().folder(dir).autoresume(true));
  EXPECT_EQ(resumed->loaded_checkpoint(), join(dir, "ep0-ba4.ckpt"));
  EXPECT_EQ(resumed->state().timestamp.batch, 4);
  resumed->fit();
  EXPECT_EQ(fingerprint(*resumed.trainer), expected);
}

/// A checkpoint file with a valid header and checksum around `meta` (the metadata JSON) and `blob` (tensor bytes):
/// what a bit flip that the checksum misses, or a buggy writer, could leave.
void write_checkpoint_bytes(const std::string& path, const std::string& meta, const std::string& blob = "") {
  auto u64 = [](uint64_t v) {
    std::string out;
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return out;
  };
  const std::string payload = u64(meta.size()) + meta + blob;
  uint32_t crc = 0xffffffffu;  // CRC-32 (zlib's), bit by bit
  for (unsigned char c : payload) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  crc ^= 0xffffffffu;
  std::string file = "TSRCKPT1" + u64(payload.size());
  for (int i = 0; i < 4; ++i) file.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  file += std::string(4, '\0') + payload;
  std::ofstream(path, std::ios::binary) << file;
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_checkpoint/regress_*): a tensor index with a negative or huge shape threw
// LibTorch's c10::Error (or allocated what the shape said) instead of a CheckpointError, and numbers of the wrong
// kind (1e300 where a whole number belongs) were converted with undefined behaviour.
TEST_F(CheckpointCorruption, MalformedTensorIndexAndMetadataAreCheckpointErrorsNamingTheField) {
  fs::create_directories(root_);
  const std::string path = folder("ep0-ba1.ckpt");
  const std::string timestamp =
      R"({"iteration": 0, "epoch": 0, "batch": 1, "sample": 8, "token": 0, "epoch_in_iteration": 0,)"
      R"( "batch_in_epoch": 1, "sample_in_epoch": 8, "token_in_epoch": 0, "total_wct": 0.5, "epoch_wct": 0.5,)"
      R"( "batch_wct": 0.5})";
  auto meta = [&](const std::string& tensors, const std::string& seed = "7", const std::string& world_size = "1",
                  const std::string& ts = "") {
    return R"({"tensors": )" + tensors + R"(, "timestamp": )" + (ts.empty() ? timestamp : ts) +
           R"(, "tessera_version": "0.1.0", "torch_version": "1.13.1", "recipe": "", "seed": )" + seed +
           R"(, "world_size": )" + world_size + "}";
  };
  auto tensor = [](const std::string& shape, const std::string& offset, const std::string& nbytes) {
    return R"({"w": {"dtype": "float32", "shape": )" + shape + R"(, "offset": )" + offset + R"(, "nbytes": )" +
           nbytes + "}}";
  };
  const std::string blob(8, '\0');
  // The well-formed file these are variations of reads.
  write_checkpoint_bytes(path, meta(tensor("[2]", "0", "8")), blob);
  const CheckpointInfo info = inspect_checkpoint(path);
  EXPECT_EQ(info.timestamp.batch, 1);
  EXPECT_EQ(info.seed, 7);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {meta(tensor("[-1]", "0", "0")), "tensor \"w\": its shape entry -1 is not a whole number >= 0"},
      {meta(tensor("[1e+300]", "0", "0")), "tensor \"w\": its shape entry 1e+300 is not a whole number >= 0"},
      {meta(tensor("2", "0", "8")), "tensor \"w\": its shape 2 is not a list of sizes"},
      {meta(tensor("[1099511627776, 1099511627776]", "0", "0")),
       "tensor \"w\" is out of bounds (shape [1099511627776,1099511627776], 0 bytes at offset 0; the tensor data "
       "holds 8 bytes)"},
      {meta(tensor("[2]", "-1", "8")), "tensor \"w\": its offset -1 is not a whole number >= 0"},
      {meta(tensor("[2]", "0", "8.0")), "tensor \"w\": its nbytes 8.0 is not a whole number >= 0"},
      {meta(tensor("[3]", "0", "12")), "tensor \"w\" is out of bounds"},
      {meta("{}", "1e+300"), "the metadata is malformed: seed is 1e+300, expected a whole number"},
      {meta("{}", "7", "1e+20"), "the metadata is malformed: world_size is 1e+20, expected a whole number >= 1"},
      {meta("{}", "7", "0"), "world_size is 0, expected a whole number >= 1"},
      {meta("{}", "7", "1", R"({"iteration": 0, "epoch": 0, "batch": -5.5e+30})"),
       "the metadata is malformed: timestamp.batch is -5.5e+30, expected a whole number"},
  };
  for (const auto& [text, expected] : cases) {
    write_checkpoint_bytes(path, text, blob);
    const std::string msg = message_of<CheckpointError>([&] { inspect_checkpoint(path); });
    EXPECT_THAT(msg, HasSubstr("checkpoint '" + path + "': ")) << text;
    EXPECT_THAT(msg, HasSubstr(expected)) << text;
  }
}

TEST_F(CheckpointCorruption, OnlyInvalidFilesStopTheRunUnlessFreshStartIsAllowed) {
  const RunSpec spec = tiny_spec();
  const std::string expected = uninterrupted_fingerprint(spec);
  const std::string dir = folder("ckpt");
  make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("2ba")),
           {std::make_shared<StopAfter>(4)})
      .trainer->fit();
  ASSERT_EQ(names_in(dir), (Names{"ep0-ba4.ckpt", "ep0-ba2.ckpt"}));
  truncate_to_half(join(dir, "ep0-ba4.ckpt"));
  xor_byte(join(dir, "ep0-ba2.ckpt"), 30);

  const std::string msg =
      message_of<CheckpointError>([&] { make_run(spec, CheckpointOptions().folder(dir).autoresume(true)); });
  EXPECT_THAT(msg, HasSubstr("no valid checkpoint in '" + dir + "'"));
  EXPECT_THAT(msg, HasSubstr("2 file(s)"));
  EXPECT_THAT(msg, HasSubstr(join(dir, "ep0-ba4.ckpt")));
  EXPECT_THAT(msg, HasSubstr("fresh_start_if_invalid"));

  TestRun fresh =
      make_run(spec, CheckpointOptions().folder(dir).autoresume(true).fresh_start_if_invalid(true));
  EXPECT_EQ(fresh->loaded_checkpoint(), "");
  EXPECT_EQ(fresh->state().timestamp.batch, 0);
  EXPECT_EQ(fresh->state().optimizer->step_count(), 0);
  fresh->fit();
  EXPECT_EQ(fingerprint(*fresh.trainer), expected);
  // The fresh run replaced the invalid files with valid ones.
  EXPECT_EQ(newest_valid_checkpoint(dir), join(dir, "ep3-ba18.ckpt"));
}

TEST_F(CheckpointCorruption, EmptyOrMissingFolderStartsFresh) {
  const RunSpec spec = tiny_spec();
  const std::string expected = uninterrupted_fingerprint(spec);
  const std::string empty = folder("empty");
  fs::create_directories(empty);
  for (const std::string& dir : {empty, folder("missing")}) {
    SCOPED_TRACE(dir);
    TestRun run = make_run(spec, CheckpointOptions().folder(dir).autoresume(true));
    EXPECT_EQ(run->loaded_checkpoint(), "");
    EXPECT_EQ(run->state().timestamp.batch, 0);
    run->fit();
    EXPECT_EQ(fingerprint(*run.trainer), expected);
    EXPECT_EQ(names_in(dir), (Names{"ep3-ba18.ckpt", "ep2-ba12.ckpt", "ep1-ba6.ckpt"}));
  }
}

// ------------------------------------------------------------------------------------------------ 4.
// mismatch

class CheckpointMismatch : public CheckpointTest {
 protected:
  /// A checkpoint of `spec` after 3 batches; returns its path.
  std::string checkpoint_of(const RunSpec& spec, const std::string& name) {
    const std::string dir = folder(name);
    TestRun run = make_run(spec, CheckpointOptions().folder(dir), {std::make_shared<StopAfter>(3)});
    run->fit();
    source_fingerprint_ = fingerprint(*run.trainer);
    return join(dir, "ep0-ba3.ckpt");
  }
  std::string source_fingerprint_;
};

TEST_F(CheckpointMismatch, SeedBatchSizeDataSizeAlgorithmsAndOptimizerMustMatch) {
  const std::string path = checkpoint_of(tiny_spec(), "tiny");
  ASSERT_TRUE(fs::exists(path));
  const std::string dir = fs::path(path).parent_path().string();

  RunSpec other_seed = tiny_spec();
  other_seed.seed = 43;
  std::string msg =
      mismatch_message([&] { make_run(other_seed, CheckpointOptions().folder(dir).autoresume(true)); });
  EXPECT_THAT(msg, HasSubstr(path));
  EXPECT_THAT(msg, HasSubstr("was taken with seed 42, this run has seed 43"));

  RunSpec other_batch = tiny_spec();
  other_batch.batch_size = 12;
  msg = mismatch_message([&] { make_run(other_batch, CheckpointOptions().load_path(path)); });
  EXPECT_THAT(msg, HasSubstr("48 samples in 6 batches per epoch, this run has 48 in 4"));
  EXPECT_THAT(msg, HasSubstr("weights_only"));

  RunSpec other_size = tiny_spec();
  other_size.train_size = 40;
  msg = mismatch_message([&] { make_run(other_size, CheckpointOptions().load_path(path)); });
  EXPECT_THAT(msg, HasSubstr("48 samples in 6 batches per epoch, this run has 40 in 5"));

  RunSpec other_algorithms = tiny_spec();
  other_algorithms.algorithms = {"label_smoothing"};
  msg = mismatch_message([&] { make_run(other_algorithms, CheckpointOptions().load_path(path)); });
  EXPECT_THAT(msg, HasSubstr("was taken with algorithms [], this run has [label_smoothing]"));

  RunSpec other_optimizer = tiny_spec();
  other_optimizer.optimizer = "adamw";
  msg = mismatch_message([&] { make_run(other_optimizer, CheckpointOptions().load_path(path)); });
  EXPECT_THAT(msg, HasSubstr("was taken with optimizer sgd, this run uses adamw"));

  RunSpec other_groups = tiny_spec();
  other_groups.optimizer = "sgd_groups";
  msg = mismatch_message([&] { make_run(other_groups, CheckpointOptions().load_path(path)); });
  EXPECT_THAT(msg, HasSubstr("was taken with 1 optimizer parameter groups, this run has 2"));

  RunSpec other_shape = tiny_spec();
  other_shape.model = "tiny_wide";
  msg = mismatch_message([&] { make_run(other_shape, CheckpointOptions().load_path(path).strict(true)); });
  EXPECT_THAT(msg, HasSubstr("shapes differ from the model's"));
  EXPECT_THAT(msg, HasSubstr("net.fc1.weight (checkpoint [8, 16]"));
  EXPECT_THAT(msg, HasSubstr("model [10, 16]"));
}

TEST_F(CheckpointMismatch, RefusedLoadLeavesTheTrainerUnchanged) {
  const std::string path = checkpoint_of(tiny_spec(), "tiny");
  RunSpec other_seed = tiny_spec();
  other_seed.seed = 43;
  TestRun run = make_run(other_seed);
  const Snapshot before = snapshot(*run.trainer);
  const std::string msg = mismatch_message([&] { run->load_checkpoint(path); });
  EXPECT_THAT(msg, HasSubstr("seed"));
  expect_same_state(snapshot(*run.trainer), before, Same::Everything);
  EXPECT_EQ(run->loaded_checkpoint(), "");
}

TEST_F(CheckpointMismatch, StrictRefusesMissingWeightsAndNonStrictLoadsTheCommonOnes) {
  RunSpec smaller = tiny_spec();
  smaller.model = "mlp1";  // fc1, head
  const std::string path = checkpoint_of(smaller, "mlp1");
  RunSpec bigger = tiny_spec();  // fc1, fc2, head
  bigger.model = "mlp2";
  std::string msg =
      mismatch_message([&] { make_run(bigger, CheckpointOptions().load_path(path).weights_only(true)); });
  EXPECT_THAT(msg, HasSubstr("does not fit the model"));
  EXPECT_THAT(msg, HasSubstr("the model has weights the checkpoint lacks: fc2.weight, fc2.bias"));
  EXPECT_THAT(msg, HasSubstr("strict=false"));

  TestRun fresh = make_run(bigger);
  std::map<std::string, at::Tensor> initial;
  for (const auto& item : fresh->state().model->named_parameters(true)) {
    initial[item.key()] = item.value().detach().clone();
  }
  TestRun source = make_run(smaller, CheckpointOptions().load_path(path));
  TestRun partial = make_run(bigger, CheckpointOptions().load_path(path).weights_only(true).strict(false));
  EXPECT_EQ(partial->state().timestamp.batch, 0);
  std::map<std::string, at::Tensor> saved;
  for (const auto& item : source->state().model->named_parameters(true)) saved[item.key()] = item.value();
  for (const auto& item : partial->state().model->named_parameters(true)) {
    const bool common = saved.count(item.key()) > 0;
    const at::Tensor& want = common ? saved.at(item.key()) : initial.at(item.key());
    EXPECT_TRUE(at::equal(item.value(), want))
        << item.key() << (common ? " should be the checkpoint's" : " should keep its initial value");
  }
}

TEST_F(CheckpointMismatch, WeightsOnlyLoadsTheWeightsAndNothingElse) {
  const std::string path = checkpoint_of(tiny_spec(), "tiny");
  // Another seed and batch size would be refused by a full resume; the weights alone load.
  RunSpec other = tiny_spec();
  other.seed = 43;
  other.batch_size = 12;
  TestRun run = make_run(other, CheckpointOptions().load_path(path).weights_only(true));
  EXPECT_EQ(run->loaded_checkpoint(), path);
  EXPECT_EQ(fingerprint(*run.trainer), source_fingerprint_);
  EXPECT_EQ(counters(run->state().timestamp), counters(Timestamp{}));
  EXPECT_EQ(run->state().timestamp.total_wct, 0.0);
  EXPECT_EQ(run->state().optimizer->step_count(), 0);
  EXPECT_TRUE(run->state().optimizer->state().empty());
  EXPECT_EQ(run->skipped_batches(), 0);
  // It then trains its full length from those weights.
  run->fit();
  EXPECT_EQ(run->state().timestamp.batch, kEpochs * 4);
  EXPECT_EQ(run->state().optimizer->step_count(), kEpochs * 4);
}

// ------------------------------------------------------------------------------------------------ 5. NaN

class CheckpointNonfinite : public CheckpointTest {};

TEST_F(CheckpointNonfinite, ErrorNamesTheBatchAndKeepsTheLastGoodCheckpoint) {
  RunSpec spec = tiny_spec();
  spec.nan_at_batch = 3;  // the fourth batch
  const std::string dir = folder("ckpt");
  TestRun run = make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("1ba")));
  const std::string msg = message_of<Error>([&] { run->fit(); });
  EXPECT_THAT(msg, HasSubstr("the training loss is nan at batch 3 (epoch 0, batch 3 of the epoch)"));
  EXPECT_THAT(msg, HasSubstr("last good checkpoint: " + join(dir, "ep0-ba3.ckpt")));
  EXPECT_THAT(msg, HasSubstr("TrainerOptions().nonfinite_loss(\"skip\")"));
  EXPECT_EQ(names_in(dir).front(), "ep0-ba3.ckpt");
  EXPECT_EQ(run->skipped_batches(), 0);
  EXPECT_EQ(run->state().optimizer->step_count(), 3);
}

TEST_F(CheckpointNonfinite, SkipDropsTheUpdateAndCountsIt) {
  RunSpec spec = tiny_spec();
  spec.nan_at_batch = 3;
  spec.nonfinite_loss = "skip";
  auto weights = std::make_shared<WeightsAtBatchEnd>();
  TestRun full = make_run(spec, {}, {weights});
  full->fit();
  EXPECT_EQ(full->skipped_batches(), 1);
  EXPECT_EQ(full->state().metrics.at("trainer/skipped_batches"), 1.0);
  EXPECT_EQ(full->state().timestamp.batch, kTotalBatches);  // the skipped batch still counts as trained time
  EXPECT_EQ(full->state().optimizer->step_count(), kTotalBatches - 1);
  const auto& trail = full.recorder->lines;
  // The line after batch index 3 (i.e. after 4 batches) has the weights and step count of the line before.
  EXPECT_EQ(trail[4], "ba4 " + trail[3].substr(trail[3].find(' ') + 1));
  EXPECT_NE(trail[5].substr(trail[5].find(' ') + 1), trail[4].substr(trail[4].find(' ') + 1));
  for (size_t i = 0; i < weights->by_batch.at(4).size(); ++i) {
    EXPECT_TRUE(at::equal(weights->by_batch.at(4)[i].second, weights->by_batch.at(3)[i].second))
        << weights->by_batch.at(4)[i].first << " changed in the skipped batch";
  }
}

TEST_F(CheckpointNonfinite, CheckpointRightAfterASkippedBatchResumesExactly) {
  // The latest loss metric at that point is NaN; the checkpoint must still load, and the run continue
  // exactly, with the count.
  RunSpec spec = tiny_spec();
  spec.nan_at_batch = 3;
  spec.nonfinite_loss = "skip";
  const std::string expected = uninterrupted_fingerprint(spec);
  const std::string dir = folder("ckpt");
  make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("1ba")),
           {std::make_shared<StopAfter>(4)})
      .trainer->fit();
  EXPECT_EQ(names_in(dir).front(), "ep0-ba4.ckpt");
  TestRun resumed = make_run(spec, CheckpointOptions().folder(dir).autoresume(true));
  EXPECT_EQ(resumed->loaded_checkpoint(), join(dir, "ep0-ba4.ckpt"));
  EXPECT_EQ(resumed->skipped_batches(), 1);
  resumed->fit();
  EXPECT_EQ(resumed->skipped_batches(), 1);
  EXPECT_EQ(fingerprint(*resumed.trainer), expected);
}

TEST_F(CheckpointNonfinite, SkippedBatchLeavesBatchNormStatisticsUnchanged) {
  // The CNN has batch norm: the skipped batch's forward must not leave NaN running statistics behind.
  RunSpec spec;
  spec.name = "cnn";
  spec.model = "cnn";
  spec.nan_at_batch = 3;
  spec.nonfinite_loss = "skip";
  auto weights = std::make_shared<WeightsAtBatchEnd>();
  TestRun run = make_run(spec, {}, {weights});
  run->fit();
  EXPECT_EQ(run->skipped_batches(), 1);
  const auto& before = weights->by_batch.at(3);
  const auto& after = weights->by_batch.at(4);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(at::equal(after[i].second, before[i].second))
        << after[i].first << " changed in the skipped batch";
  }
  for (const auto& item : run->state().model->named_buffers(true)) {
    if (item.value().is_floating_point()) {
      EXPECT_TRUE(at::isfinite(item.value()).all().item<bool>()) << item.key() << " is not finite at the end";
    }
  }
}

// ------------------------------------------------------------------------------------------------ 6. signals

class CheckpointSignal : public CheckpointTest {
 protected:
  void TearDown() override {
    clear_stop_signal();
    std::signal(SIGTERM, SIG_DFL);
    std::signal(SIGINT, SIG_DFL);
    CheckpointTest::TearDown();
  }
};

/// Runs fit() expecting Interrupted by `signal`, its message naming where it stopped and what was saved.
void expect_interrupted(TestRun& run, int signal, const std::string& where, const std::string& saved) {
  try {
    run->fit();
    FAIL() << "expected tessera::Interrupted";
  } catch (const Interrupted& e) {
    EXPECT_EQ(e.signal(), signal);
    EXPECT_THAT(std::string(e.what()), HasSubstr(where));
    EXPECT_THAT(std::string(e.what()), HasSubstr(saved));
  }
}

TEST_F(CheckpointSignal, SigtermStopsAfterTheBatchWithACheckpointThatResumesExactly) {
  const RunSpec spec = all_five_spec();
  const std::string expected = uninterrupted_fingerprint(spec);
  const std::string dir = folder("ckpt");
  install_stop_signal_handlers();
  // Batch 6 ends the first epoch: the checkpoint is taken before EpochEnd (layer freezing still to come).
  TestRun run = make_run(spec, CheckpointOptions().folder(dir), {std::make_shared<StopAfter>(6, SIGTERM)});
  expect_interrupted(run, SIGTERM, "stopped by SIGTERM after batch 6", join(dir, "ep0-ba6.ckpt"));
  EXPECT_EQ(stop_signal(), SIGTERM);
  EXPECT_EQ(run->state().timestamp.batch, 6);
  EXPECT_EQ(run->last_checkpoint(), join(dir, "ep0-ba6.ckpt"));
  EXPECT_EQ(names_in(dir), Names{"ep0-ba6.ckpt"});
  EXPECT_EQ(read_text(join(dir, "latest")), "ep0-ba6.ckpt\n");
  clear_stop_signal();
  EXPECT_EQ(stop_signal(), 0);

  TestRun resumed = make_run(spec, CheckpointOptions().folder(dir).autoresume(true));
  EXPECT_EQ(resumed->loaded_checkpoint(), join(dir, "ep0-ba6.ckpt"));
  resumed->fit();
  EXPECT_EQ(fingerprint(*resumed.trainer), expected);
}

TEST_F(CheckpointSignal, SigintWithoutAFolderSavesNothing) {
  install_stop_signal_handlers();
  TestRun run = make_run(tiny_spec(), {}, {std::make_shared<StopAfter>(2, SIGINT)});
  expect_interrupted(run, SIGINT, "stopped by SIGINT after batch 2", "nothing was saved");
  EXPECT_EQ(run->state().timestamp.batch, 2);
  EXPECT_EQ(run->last_checkpoint(), "");
}

/// Raises `signal` at the end of the first evaluation batch, and counts evaluation batches.
class SignalInEvaluation : public Callback {
 public:
  explicit SignalInEvaluation(int signal) : signal_(signal) {}
  std::string name() const override { return "signal_in_evaluation"; }
  void run_event(Event event, State&, Logger&) override {
    if (event != Event::EvalBatchEnd) return;
    if (eval_batches++ == 0) std::raise(signal_);
  }
  int eval_batches = 0;

 private:
  int signal_;
};

/// The batch and accuracy of every evaluation.
class EvalLog : public Callback {
 public:
  std::string name() const override { return "eval_log"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::EvalEnd)
      lines.push_back(fmt::format("ba{} {}", s.timestamp.batch, s.metrics.at("metrics/eval/accuracy")));
  }
  std::vector<std::string> lines;
};

TEST_F(CheckpointSignal, SigtermDuringTheEpochEndEvaluationStopsAtTheNextEvaluationBatchAndResumesExactly) {
  RunSpec spec = tiny_spec();
  spec.evaluator = true;  // at every epoch end, 4 batches
  auto full_log = std::make_shared<EvalLog>();
  TestRun full = make_run(spec, {}, {full_log});
  full->fit();
  const std::string expected = fingerprint(*full.trainer);
  ASSERT_EQ(full_log->lines.size(), 3u);
  const std::string dir = folder("ckpt");
  const StopSignalScope scope({SIGTERM});
  auto signal = std::make_shared<SignalInEvaluation>(SIGTERM);
  TestRun run = make_run(spec, CheckpointOptions().folder(dir), {signal});
  expect_interrupted(run, SIGTERM, "stopped by SIGTERM after batch 6", join(dir, "ep1-ba6.ckpt"));
  EXPECT_EQ(signal->eval_batches, 1);  // the evaluation stopped at its next batch, not at its end
  EXPECT_EQ(run->state().metrics.count("metrics/eval/accuracy"), 0u);  // nothing partial was logged
  EXPECT_EQ(names_in(dir), Names{"ep1-ba6.ckpt"});
  // The trainer was stopped, not broken mid-batch, and says so.
  try {
    run->evaluate();
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("fit() was stopped by SIGTERM after batch 6"));
  }
  clear_stop_signal();

  // The checkpoint says the epoch's evaluation was cut short: the resumed run does it first, so the
  // evaluations (and what acts on them: stoppers, plateaus) are the uninterrupted run's.
  auto log = std::make_shared<EvalLog>();
  TestRun resumed = make_run(spec, CheckpointOptions().folder(dir).autoresume(true), {log});
  resumed->fit();
  EXPECT_EQ(fingerprint(*resumed.trainer), expected);
  EXPECT_EQ(log->lines, full_log->lines);
}

TEST_F(CheckpointSignal,
       SigtermAtTheLastBatchResumesIntoTheEpochsEndTheFinalEvaluationAndTheFinalCheckpoint) {
  // The checkpoint a stop writes after the last batch comes before the epoch's end (SWA's average goes in
  // there), the final evaluation and the final checkpoint: the resumed run does them, and a run resumed from
  // that final checkpoint has nothing left to do.
  RunSpec spec = tiny_spec();
  spec.evaluator = true;
  spec.algorithms = {"swa_to_the_end"};
  spec.max_duration = "18ba";  // reached at the last batch, before the epoch's end
  auto full_log = std::make_shared<EvalLog>();
  TestRun full = make_run(spec, {}, {full_log});
  full->fit();
  const std::string expected = fingerprint(*full.trainer);
  const std::string dir = folder("ckpt");
  install_stop_signal_handlers();
  TestRun run = make_run(spec, CheckpointOptions().folder(dir), {std::make_shared<StopAfter>(18, SIGTERM)});
  expect_interrupted(run, SIGTERM, "stopped by SIGTERM after batch 18", join(dir, "ep2-ba18.ckpt"));
  EXPECT_FALSE(run->state().fit_complete);
  clear_stop_signal();
  EXPECT_NE(fingerprint(*run.trainer), expected);  // SWA's average is not in yet

  auto log = std::make_shared<EvalLog>();
  TestRun resumed = make_run(spec, CheckpointOptions().folder(dir).autoresume(true), {log});
  EXPECT_EQ(resumed->loaded_checkpoint(), join(dir, "ep2-ba18.ckpt"));
  resumed->fit();
  EXPECT_EQ(fingerprint(*resumed.trainer), expected);
  EXPECT_EQ(log->lines, std::vector<std::string>(full_log->lines.end() - 1, full_log->lines.end()));
  EXPECT_TRUE(resumed->state().fit_complete);
  EXPECT_EQ(names_in(dir), (Names{"ep3-ba18.ckpt", "ep2-ba18.ckpt", "ep2-ba12.ckpt"}));

  TestRun again = make_run(spec, CheckpointOptions().folder(dir).autoresume(true), {log});
  EXPECT_EQ(again->loaded_checkpoint(), join(dir, "ep3-ba18.ckpt"));
  EXPECT_TRUE(again->state().fit_complete);
  again->fit();  // the run is complete: nothing to train, nothing evaluated
  EXPECT_EQ(again->state().timestamp.batch, 18);
  EXPECT_EQ(log->lines.size(), 1u);
  EXPECT_EQ(fingerprint(*again.trainer), expected);
}

/// Saves a checkpoint to `path` at the EvalEnd of the evaluation after batch `batch` (when a best-model saver would).
class SaveAtEvalEnd : public Callback {
 public:
  SaveAtEvalEnd(int64_t batch, std::string path) : batch_(batch), path_(std::move(path)) {}
  std::string name() const override { return "save_at_eval_end"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::EvalEnd && s.timestamp.batch == batch_) trainer->save_checkpoint(path_);
  }
  Trainer* trainer = nullptr;

 private:
  int64_t batch_;
  std::string path_;
};

TEST_F(CheckpointTest, ACheckpointSavedAtEvalEndResumesWithoutRedoingThatEvaluation) {
  RunSpec spec = tiny_spec();
  spec.evaluator = true;  // at every epoch end
  auto full_log = std::make_shared<EvalLog>();
  TestRun full = make_run(spec, {}, {full_log});
  full->fit();
  ASSERT_EQ(full_log->lines.size(), 3u);
  const std::string dir = folder("saved");
  fs::create_directories(dir);
  const std::string path = join(dir, "at-eval-end.ckpt");
  auto saver = std::make_shared<SaveAtEvalEnd>(6, path);
  TestRun run = make_run(spec, {}, {saver});
  saver->trainer = run.trainer.get();
  run->fit();
  ASSERT_TRUE(fs::exists(path));

  auto log = std::make_shared<EvalLog>();
  TestRun resumed = make_run(spec, CheckpointOptions().load_path(path), {log});
  EXPECT_EQ(resumed->state().timestamp.batch, 6);
  resumed->fit();
  EXPECT_EQ(fingerprint(*resumed.trainer), fingerprint(*full.trainer));
  // The evaluation after batch 6 was done when the checkpoint was taken: not again.
  EXPECT_EQ(log->lines, std::vector<std::string>(full_log->lines.begin() + 1, full_log->lines.end()));
}

TEST_F(CheckpointSignal, SigintDuringEvaluateStopsAtTheNextBatchAndLeavesTheTrainerUsable) {
  RunSpec spec = tiny_spec();
  spec.evaluator = true;
  auto signal = std::make_shared<SignalInEvaluation>(SIGINT);
  TestRun run = make_run(spec, {}, {signal});
  {
    const StopSignalScope scope({SIGINT});
    try {
      run->evaluate();
      FAIL() << "expected tessera::Interrupted";
    } catch (const Interrupted& e) {
      EXPECT_EQ(e.signal(), SIGINT);
      EXPECT_THAT(std::string(e.what()), HasSubstr("stopped by SIGINT during evaluation \"eval\" after 1 batches"));
    }
    EXPECT_EQ(signal->eval_batches, 1);
    EXPECT_EQ(stop_signal(), SIGINT);
  }
  EXPECT_EQ(stop_signal(), 0);  // the scope cleared it as it ended
  // The scope put the previous handler back (the fixture's default): raising SIGINT now would end the test
  // binary, so only check what is installed.
  struct sigaction now {};
  ::sigaction(SIGINT, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_DFL);
  const auto metrics = run->evaluate();  // whole again; training is untouched
  EXPECT_EQ(signal->eval_batches, 5);
  EXPECT_EQ(metrics.count("metrics/eval/accuracy"), 1u);
  run->fit();
  EXPECT_EQ(run->state().timestamp.batch, 3 * 6);
}

// ------------------------------------------------------------------------------------------------ 7. seeds

class CheckpointDeterminism : public CheckpointTest {
 protected:
  void TearDown() override {
    at::globalContext().setDeterministicAlgorithms(false, /*warn_only=*/false);
    CheckpointTest::TearDown();
  }
};

TEST_F(CheckpointDeterminism, SameSeedIsBitwiseIdenticalAndAnotherSeedDiffers) {
  RunSpec spec = all_five_spec();
  spec.deterministic = true;
  TestRun a = make_run(spec);
  a->fit();
  TestRun b = make_run(spec);
  b->fit();
  EXPECT_EQ(a.recorder->lines, b.recorder->lines);
  EXPECT_EQ(fingerprint(*a.trainer), fingerprint(*b.trainer));
  expect_same_state(snapshot(*b.trainer), snapshot(*a.trainer), Same::ExceptTimes);

  spec.seed = 43;
  TestRun c = make_run(spec);
  c->fit();
  EXPECT_NE(fingerprint(*c.trainer), fingerprint(*a.trainer));
  EXPECT_EQ(a.recorder->lines.front(), c.recorder->lines.front())
      << "the seed should not change the initial weights";
}

// ------------------------------------------------------------------------------------------------ 7. devices

/// The trainer's deferred read-back (its CUDA loop: loss and metrics stay on the device between log intervals,
/// non-finite losses are tracked there) forced on the CPU while the guard lives.
class DeferredReadBack {
 public:
  DeferredReadBack() { ::setenv("TESSERA_TEST_DEFERRED_READBACK", "1", 1); }
  ~DeferredReadBack() { ::unsetenv("TESSERA_TEST_DEFERRED_READBACK"); }
  DeferredReadBack(const DeferredReadBack&) = delete;
  DeferredReadBack& operator=(const DeferredReadBack&) = delete;
};

/// Every logged value ("ba<batch> <key> <value>", shortest round-trip form), and metrics["loss/train/total"] as
/// callbacks see it at each BatchEnd.
class Values : public LoggerDestination {
 public:
  std::string name() const override { return "values"; }
  void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) override {
    for (const auto& [key, value] : values) logged.push_back(fmt::format("ba{} {} {}", ts.batch, key, value));
  }
  void run_event(Event event, State& s, Logger&) override {
    if (event != Event::BatchEnd) return;
    auto it = s.metrics.find("loss/train/total");
    loss_at_batch_end.push_back(it == s.metrics.end() ? -1.0 : it->second);
  }
  std::vector<std::string> logged;
  std::vector<double> loss_at_batch_end;
};

class CheckpointDevice : public CheckpointTest {};

TEST_F(CheckpointDevice, DeferredReadBackTrainsBitwiseLikeTheImmediateLoop) {
  RunSpec all_five = all_five_spec();
  RunSpec evaluated = tiny_spec();
  evaluated.name = "tiny_evaluated";
  evaluated.evaluator = true;
  evaluated.scheduler = true;
  RunSpec accumulate = tiny_spec();
  accumulate.name = "adamw_microbatches_log4";
  accumulate.optimizer = "adamw";
  accumulate.microbatch_size = 3;
  accumulate.log_interval = 4;
  for (const RunSpec& spec : {all_five, evaluated, accumulate}) {
    SCOPED_TRACE(spec.name);
    auto immediate_values = std::make_shared<Values>(), deferred_values = std::make_shared<Values>();
    TestRun immediate = make_run(spec, {}, {immediate_values});
    immediate->fit();
    DeferredReadBack guard;
    TestRun deferred = make_run(spec, {}, {deferred_values});
    deferred->fit();
    EXPECT_EQ(deferred.recorder->lines, immediate.recorder->lines);  // the weights after every batch
    EXPECT_EQ(deferred_values->logged, immediate_values->logged);    // every logged loss, lr and metric
    EXPECT_EQ(deferred->state().metrics, immediate->state().metrics);
    // Between log intervals (and without evaluations or checkpoints, which read back too) callbacks see the
    // loss of the last logged batch.
    const auto& seen = deferred_values->loss_at_batch_end;
    ASSERT_EQ(seen.size(), immediate_values->loss_at_batch_end.size());
    for (size_t i = 0; i < seen.size(); ++i) {
      const size_t expected = spec.evaluator ? i : i - i % static_cast<size_t>(spec.log_interval);
      EXPECT_EQ(seen[i], immediate_values->loss_at_batch_end[expected]) << "batch " << i;
    }
  }
}

TEST_F(CheckpointDevice, DeferredNonfiniteErrorNamesTheExactBatchAndNeverSavesAfterIt) {
  DeferredReadBack guard;
  RunSpec spec = tiny_spec();
  spec.nan_at_batch = 3;
  {
    // Logged every batch: found at the bad batch itself, with the immediate loop's message (its update was
    // applied, though: the check comes after the step).
    const std::string dir = folder("every_batch");
    TestRun run = make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("1ba")));
    const std::string msg = message_of<Error>([&] { run->fit(); });
    EXPECT_THAT(msg, HasSubstr("the training loss is nan at batch 3 (epoch 0, batch 3 of the epoch); the run stops "
                               "here (last good checkpoint: " + join(dir, "ep0-ba3.ckpt") + ")"));
    EXPECT_EQ(names_in(dir).front(), "ep0-ba3.ckpt");
    EXPECT_EQ(run->state().optimizer->step_count(), 4);
  }
  {
    // Logged at batches 0 and 5, checkpoints every 2 batches: the checkpoint after batch 3 reads back first,
    // finds batch 3 and is not written.
    spec.log_interval = 5;
    const std::string dir = folder("log5");
    TestRun run = make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("2ba")));
    const std::string msg = message_of<Error>([&] { run->fit(); });
    EXPECT_THAT(msg, HasSubstr("the training loss is nan at batch 3 (epoch 0, batch 3 of the epoch), found at the "
                               "next read-back (on cpu the loss is read back only at log intervals, checkpoints, "
                               "evaluations and the end); the run stops here (last good checkpoint: " +
                               join(dir, "ep0-ba2.ckpt") + ")"));
    EXPECT_THAT(msg, HasSubstr("TrainerOptions().nonfinite_loss(\"skip\")"));
    EXPECT_EQ(names_in(dir), Names({"ep0-ba2.ckpt"}));
  }
  {
    // No checkpoints: found at the log of batch 5.
    TestRun run = make_run(spec);
    const std::string msg = message_of<Error>([&] { run->fit(); });
    EXPECT_THAT(msg, HasSubstr("nan at batch 3 (epoch 0, batch 3 of the epoch), found at the next read-back"));
    EXPECT_EQ(run->state().optimizer->step_count(), 6);
    EXPECT_EQ(run->skipped_batches(), 0);
  }
}

TEST_F(CheckpointDevice, DeferredSkipDropsTheSameUpdates) {
  RunSpec spec;
  spec.name = "cnn";
  spec.model = "cnn";  // batch norm: the skipped batch's statistics must be restored too
  spec.nan_at_batch = 3;
  spec.nonfinite_loss = "skip";
  spec.log_interval = 4;
  TestRun immediate = make_run(spec);
  immediate->fit();
  DeferredReadBack guard;
  TestRun deferred = make_run(spec);
  deferred->fit();
  EXPECT_EQ(deferred->skipped_batches(), 1);
  EXPECT_EQ(deferred->state().optimizer->step_count(), kTotalBatches - 1);
  EXPECT_EQ(deferred.recorder->lines, immediate.recorder->lines);
  EXPECT_EQ(deferred->state().metrics, immediate->state().metrics);
}

TEST_F(CheckpointDevice, DeferredRunsCheckpointAndResumeExactlyEitherWay) {
  RunSpec spec = all_five_spec();
  const std::string expected = uninterrupted_fingerprint(spec);
  for (bool deferred_first : {true, false}) {
    SCOPED_TRACE(deferred_first ? "deferred, then immediate" : "immediate, then deferred");
    const std::string dir = folder(deferred_first ? "a" : "b");
    {
      std::optional<DeferredReadBack> guard;
      if (deferred_first) guard.emplace();
      make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("1ba")), {std::make_shared<StopAfter>(5)})
          .trainer->fit();
    }
    std::optional<DeferredReadBack> guard;
    if (!deferred_first) guard.emplace();
    TestRun resumed = make_run(spec, CheckpointOptions().folder(dir).autoresume(true));
    EXPECT_EQ(resumed->loaded_checkpoint(), join(dir, "ep0-ba5.ckpt"));
    resumed->fit();
    EXPECT_EQ(fingerprint(*resumed.trainer), expected);
  }
}

TEST_F(CheckpointDevice, SavedTensorsAreOnTheCpuAndLoadingPutsThemWithTheModel) {
  RunSpec spec = tiny_spec();
  spec.optimizer = "adamw";
  const std::string dir = folder("ckpt");
  TestRun run = make_run(spec, CheckpointOptions().folder(dir).interval(Time::parse("1ep")));
  run->fit();
  const checkpoint::File file = checkpoint::read_file(run->last_checkpoint());
  ASSERT_FALSE(file.tensors.empty());
  for (const auto& [name, t] : file.tensors) {
    EXPECT_TRUE(t.is_cpu()) << name;
    EXPECT_TRUE(t.is_contiguous()) << name;
  }

  TestRun loaded = make_run(spec);
  loaded->load_checkpoint(run->last_checkpoint());
  const c10::Device device = loaded->state().device;
  EXPECT_EQ(device, c10::Device(c10::kCPU));
  for (const auto& p : loaded->state().model->parameters()) EXPECT_EQ(p.device(), device);
  for (const auto& b : loaded->state().model->buffers()) EXPECT_EQ(b.device(), device);
  size_t slots = 0;
  for (const auto& [param, state] : loaded->state().optimizer->state()) {
    ASSERT_EQ(state.size(), 3u);  // AdamW: exp_avg, exp_avg_sq on the parameter's device; the step count on the host
    EXPECT_EQ(state[0].device(), device);
    EXPECT_EQ(state[1].device(), device);
    EXPECT_TRUE(state[2].is_cpu());
    EXPECT_EQ(state[2].scalar_type(), at::kLong);
    slots += state.size();
  }
  EXPECT_GT(slots, 0u);
  EXPECT_EQ(fingerprint(*loaded.trainer), fingerprint(*run.trainer));
}

}  // namespace
}  // namespace tessera

#include "../../src/checkpoint/recipe_changes.h"

namespace tessera {
namespace {

TEST(RecipeChanges, ListsEveryValueThatDiffersAndWhetherItAltersTraining) {
  const std::string before = R"(max_duration: 2ep
seed: 1
optimizer: {sgd: {lr: 0.1}}
algorithms: [{label_smoothing: {smoothing: 0.1}}]
data: {train: {loader: {batch_size: 8}}, eval: {loader: {batch_size: 8}}}
loggers: [jsonl]
)";
  const std::string after = R"(max_duration: 4ep
seed: 1
optimizer: {sgd: {lr: 0.1, momentum: 0.5}}
algorithms: [{label_smoothing: {smoothing: 0.2}}]
data: {train: {loader: {batch_size: 8}}, eval: {loader: {batch_size: 16}}}
)";
  const auto changes = checkpoint::recipe_changes(before, after);
  ASSERT_EQ(changes.size(), 5u) << checkpoint::describe(changes);
  EXPECT_EQ(changes[0].path, "max_duration");
  EXPECT_EQ(changes[0].before, "2ep");
  EXPECT_EQ(changes[0].after, "4ep");
  EXPECT_FALSE(changes[0].alters_training);
  EXPECT_EQ(changes[1].path, "optimizer.sgd.momentum");
  EXPECT_EQ(changes[1].before, "(absent)");
  EXPECT_TRUE(changes[1].alters_training);
  EXPECT_EQ(changes[2].path, "algorithms[0].label_smoothing.smoothing");
  EXPECT_TRUE(changes[2].alters_training);
  EXPECT_EQ(changes[3].path, "data.eval.loader.batch_size");
  EXPECT_FALSE(changes[3].alters_training);
  EXPECT_EQ(changes[4].path, "loggers[0]");
  EXPECT_EQ(changes[4].after, "(absent)");
  EXPECT_FALSE(changes[4].alters_training);
  EXPECT_TRUE(checkpoint::recipe_changes(before, before).empty());
  // Tracing a resumed run changes nothing that trains.
  const auto traced = checkpoint::recipe_changes(before, before + "profiler: {active: 2}\n");
  ASSERT_EQ(traced.size(), 1u);
  EXPECT_EQ(traced[0].path, "profiler.active");
  EXPECT_FALSE(traced[0].alters_training);
}

}  // namespace
}  // namespace tessera
