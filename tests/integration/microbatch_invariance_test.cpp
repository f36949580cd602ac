// Gradient accumulation with every algorithm, on one rank: a run whose batches are trained in microbatches ends on
// the weights of the same run trained in whole batches, within float rounding, for every registered algorithm on
// images and on a BERT's masked tokens (ignored targets: each microbatch's loss weighs by its share of the batch's
// masked tokens, Model::loss_terms). An algorithm that acted per microbatch where it should act per batch (clipping
// each microbatch's gradient, scoring or drawing per microbatch) would drift from the whole-batch run. The weighting
// across ranks is tested in distributed_test.cpp; each algorithm's own microbatch tests in its folder.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "integration/small_text.h"
#include "support.h"

namespace tessera {
namespace {

/// The model each algorithm trains here: "image" (a ResNet-8 with GroupNorms, whose forward treats each example on
/// its own, so that microbatches are the whole batch's rows) or "bert" (masked tokens). Without dropout but for gyro
/// dropout, which replaces it: a dropout layer draws per forward, so microbatches draw other masks than the whole
/// batch (as PyTorch's do).
using KindAndAlgorithm = std::tuple<std::string, std::string>;
std::string test_name(const ::testing::TestParamInfo<KindAndAlgorithm>& info) {
  return std::get<0>(info.param) + "_" + std::get<1>(info.param);
}

/// Options that make each algorithm act within 6 batches where the defaults would not.
std::string entry(const std::string& name) {
  if (name == "none" || name == "none_bf16") return "";
  static const std::map<std::string, std::string> eager = [] {
    auto out = testing::short_run_entries();
    out["blurpool"] = "{blurpool: {min_channels: 4}}";
    out["squeeze_excite"] = "{squeeze_excite: {min_channels: 8, latent_channels: 4}}";
    out["factorize"] = "{factorize: {min_channels: 8, latent_channels: 4, min_features: 16, latent_features: 4}}";
    out["progressive_resizing"] = "{progressive_resizing: {initial_scale: 0.5, finetune_fraction: 0.3}}";
    out["seq_length_warmup"] = "{seq_length_warmup: {min_seq_length: 4, step_size: 4, duration: 0.5}}";
    out["alibi"] = "{alibi: {train_sequence_length_scaling: 0.5}}";
    // Sample mode: each example's draw comes in turn from the batch's stream, so microbatches draw what the whole
    // batch does (block mode draws once per forward, as Composer's).
    out["stochastic_depth"] = "{stochastic_depth: {stochastic_method: sample, drop_rate: 0.5}}";
    out["sam"] = "{sam: {rho: 0.1}}";
    out["mixup"] = "{mixup: {alpha: 1}}";
    out["cutmix"] = "{cutmix: {alpha: 1}}";
    // Ghost batches of 2, microbatches of 2: the same chunks as the whole batch's (its README).
    out["ghost_batchnorm"] = "{ghost_batchnorm: {ghost_batch_size: 2}}";
    // 8 masks at once, more than a microbatch's examples: each trains the masks of its rows' places in the batch.
    out["gyro_dropout"] = "{gyro_dropout: {p: 0.5, sigma: 8, tau: 8}}";
    return out;
  }();
  return testing::entry_of(name, eager);
}

/// The image algorithms that augment intensities in [0, 1] (8-bit levels): they train on Fashion-MNIST, the others on
/// synthetic images.
bool needs_levels(const std::string& name) { return name == "augmix" || name == "randaugment"; }

/// Recipe text: 6 batches of 8 with `algorithm`, in microbatches of `microbatch_size` (0: whole batches). The image
/// model has GroupNorms, but BatchNorms for ghost batchnorm (which replaces them all); the low-precision norms and
/// "none_bf16" run under bf16 autocast.
std::string recipe(const std::string& kind, const std::string& name, int64_t microbatch_size) {
  const bool image = kind == "image";
  const double dropout = name == "gyro_dropout" ? 0.5 : 0.0;  // before the classifier; in each block of the bert
  const std::string model =
      image ? fmt::format("{{resnet: {{depth: 8, width: 8, dropout: {}{}}}}}", dropout,
                          name == "ghost_batchnorm" ? "" : ", norm: group, groups: 4")
            : fmt::format("{{bert: {{d_model: 16, n_layers: 2, n_heads: 2, dropout: {}, attention_dropout: 0.0}}}}",
                          dropout);
  std::string data = "{synthetic: {size: 48, input_shape: [3, 12, 12], num_classes: 4}}";
  if (!image) data = fmt::format("{{text: {{path: {}, seq_length: 16}}}}", testing::small_text_file());
  if (needs_levels(name)) data = "{fashion_mnist: {split: train, limit: 48}}";
  const bool bf16 = name.rfind("low_precision_", 0) == 0 || name == "none_bf16";
  return fmt::format(R"(
max_duration: 6ba
seed: 1
threads: 1
run_dir: ""
precision: {}
microbatch_size: {}
model: {}
data:
  train:
    dataset: {}
    loader: {{batch_size: 8}}
    transforms: [{}]
optimizer: {{sgd: {{lr: 0.01, momentum: 0.9}}}}
algorithms: [{}]
callbacks: []
loggers: []
)",
                     bf16 ? "amp_bf16" : "fp32", microbatch_size, model, data, image ? "" : "mask_tokens", entry(name));
}

/// The algorithms left out: those each kind of model refuses before step 1 (language_model_composition_test.cpp
/// tests the reasons on text; on images, the sequence methods need a language model).
bool left_out(const std::string& kind, const std::string& name) {
  static const std::set<std::string> image_only{"augmix",          "blurpool",
                                                "channels_last",   "colout",
                                                "cutmix",          "cutout",
                                                "ghost_batchnorm", "low_precision_groupnorm",
                                                "mixup",           "progressive_resizing",
                                                "randaugment",     "squeeze_excite",
                                                "weight_standardization"};
  static const std::set<std::string> text_only{"alibi", "gated_linear_units", "low_precision_layernorm",
                                               "seq_length_warmup"};
  return kind == "image" ? text_only.count(name) > 0 : image_only.count(name) > 0;
}

/// A run's parameters and buffers (the buffers last) at the start, after surgery, and at the end, and how many times
/// the algorithm acted.
struct Trained {
  std::vector<at::Tensor> start, end;
  size_t parameters = 0;
  int64_t acted = 0;
};

std::vector<at::Tensor> tensors(const Model& model) {
  std::vector<at::Tensor> out;
  for (const auto& p : model.parameters()) out.push_back(p.detach().contiguous().clone());
  for (const auto& b : model.buffers()) out.push_back(b.detach().contiguous().clone());
  return out;
}

Trained train(const std::string& kind, const std::string& name, int64_t microbatch_size) {
  auto trainer = make_trainer(Recipe::parse(recipe(kind, name, microbatch_size), "<string>"));
  Trained out;
  out.start = tensors(*trainer->state().model);
  out.parameters = trainer->state().model->parameters().size();
  trainer->fit();
  EXPECT_EQ(trainer->state().timestamp.batch, 6);
  out.end = tensors(*trainer->state().model);
  out.acted = testing::times_acted(*trainer, name);
  return out;
}

/// How far the run in microbatches ended from the run in whole batches, over how far the whole-batch run moved:
/// |end_parts - end_whole| / |end_whole - start| over every parameter and buffer (parameters only for ghost
/// batchnorm: batch norm's running statistics take one update per forward, so microbatches update them more often,
/// as PyTorch's BatchNorm does).
double drift(const std::string& kind, const std::string& name, int64_t microbatch_size) {
  const Trained whole = train(kind, name, 0), parts = train(kind, name, microbatch_size);
  if (name.rfind("none", 0) != 0) {
    EXPECT_GT(whole.acted, 0) << name << " never acted";
    EXPECT_GT(parts.acted, 0) << name << " never acted in microbatches";
  }
  EXPECT_EQ(whole.end.size(), parts.end.size());
  EXPECT_EQ(whole.start.size(), whole.end.size());
  const size_t compared = name == "ghost_batchnorm" ? whole.parameters : whole.end.size();
  double apart = 0, moved = 0;
  for (size_t i = 0; i < compared && i < parts.end.size(); ++i) {
    if (!whole.end[i].is_floating_point()) {
      EXPECT_TRUE(at::equal(whole.end[i], parts.end[i])) << name << " tensor " << i;
      continue;
    }
    apart += (whole.end[i] - parts.end[i]).to(at::kDouble).pow(2).sum().item<double>();
    moved += (whole.end[i] - whole.start[i]).to(at::kDouble).pow(2).sum().item<double>();
  }
  EXPECT_GT(moved, 0) << name << ": nothing trained";
  return std::sqrt(apart / moved);
}

class InMicrobatches : public ::testing::TestWithParam<KindAndAlgorithm> {};

TEST_P(InMicrobatches, EndOnTheWeightsOfWholeBatches) {
  const auto& [kind, name] = GetParam();
  if (needs_levels(name) && !std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST is not installed (apt install dataset-fashion-mnist)";
  // Images in microbatches of 2 (ghost batches of 2; selective backprop's 4 rows in two); masked tokens in 3 + 3 +
  // 2, whose shares of the masked tokens differ from their shares of the rows.
  const int64_t microbatch_size = kind == "image" ? 2 : 3;
  const double measured = drift(kind, name, microbatch_size);
  RecordProperty("drift", c10::str(measured));
  if (name.rfind("low_precision_", 0) != 0) {
    // Float sums in another order drift by about 1e-6 of the movement, and by about 1e-3 where rounding moves a
    // ReLU or max-pool input across its kink; an algorithm acting per microbatch where it should act per batch (or
    // a loss weighed by rows instead of its terms) drifts by a good part of the movement.
    EXPECT_LT(measured, 1e-2) << name;
  } else {
    // Under bf16 autocast a product of 2 rows may block and round differently from one of 8, so a run in
    // microbatches drifts by a few percent of the movement with or without the algorithm: it may drift no more
    // than the same run without it, give or take.
    const double plain = drift(kind, "none_bf16", microbatch_size);
    RecordProperty("drift_without_it", c10::str(plain));
    EXPECT_LT(measured, 3 * plain + 1e-3) << name << " (without it: " << plain << ")";
  }
}

std::vector<KindAndAlgorithm> trained() {
  std::vector<KindAndAlgorithm> out;
  for (const std::string kind : {"image", "bert"}) {
    out.emplace_back(kind, "none");  // plain gradient accumulation
    for (const auto& name : registered_names("algorithms"))
      if (!left_out(kind, name)) out.emplace_back(kind, name);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(EveryAlgorithm, InMicrobatches, ::testing::ValuesIn(trained()), test_name);

}  // namespace
}  // namespace tessera
