// The registry: one explicit list per kind of component, mapping recipe names to factories, and
// build_run, which assembles a whole run from a recipe (schema: docs/recipes.md).
#include <fmt/format.h>

#include <tessera/amp.h>
#include <tessera/callbacks/activation_monitor.h>
#include <tessera/callbacks/console_summary.h>
#include <tessera/callbacks/generate.h>
#include <tessera/callbacks/image_visualizer.h>
#include <tessera/callbacks/metric_writers.h>
#include <tessera/callbacks/monitors.h>
#include <tessera/callbacks/progress_bar.h>
#include <tessera/callbacks/stoppers.h>
#include <tessera/callbacks/system_metrics.h>
#include <tessera/class_metrics.h>
#include <tessera/data/dataloader.h>
#include <tessera/data/dataset.h>
#include <tessera/data/streaming.h>
#include <tessera/data/text.h>
#include <tessera/data/transforms.h>
#include <tessera/device.h>
#include <tessera/metrics.h>
#include <tessera/models/bert.h>
#include <tessera/models/cnn.h>
#include <tessera/models/gpt.h>
#include <tessera/models/huggingface.h>
#include <tessera/models/mlp.h>
#include <tessera/models/resnet.h>
#include <tessera/optim/optimizer.h>
#include <tessera/optim/scheduler.h>
#include <tessera/registry.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <utility>

// ---- ALGORITHMS (1/2): include each algorithm's header here, alphabetically:
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
#include <tessera/algorithms/weight_standardization.h>
#include <tessera/algorithms/swa.h>

namespace tessera {
namespace {

/// What factories may need besides their own options: the run's settings and what was built before them.
struct Context {
  TrainerOptions trainer;
  std::shared_ptr<const data::Dataset> train_dataset;  ///< set before the model is built
  const data::Dataset* section_dataset = nullptr;      ///< a data section's dataset, while its transforms are built
  std::shared_ptr<Model> model;                        ///< set before the optimizer is built
  std::vector<std::string>* metric_files = nullptr;    ///< loggers record their files here
};

template <class Product>
struct Entry {
  std::string name;
  /// Reads the options from `options` (the value under the name; absent for a bare name) and builds.
  std::function<Product(const ConfigNode& options, Context& ctx)> make;
};

template <class Product>
struct Kind {
  const char* singular;  ///< "model"
  const char* plural;    ///< "models"
  std::vector<Entry<Product>> entries;

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries) out.push_back(e.name);
    std::sort(out.begin(), out.end());
    return out;
  }
  const Entry<Product>* find(const std::string& name) const {
    for (const auto& e : entries) {
      if (e.name == name) return &e;
    }
    return nullptr;
  }
};

/// "a model", "an optimizer".
std::string with_article(const std::string& noun) {
  const bool vowel = !noun.empty() && std::string("aeiou").find(noun[0]) != std::string::npos;
  return (vowel ? "an " : "a ") + noun;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

/// Reads an Options struct from a node (absent or empty nodes give the defaults). `Options()` rather than `{}`: GCC 12
/// warns (-Wmaybe-uninitialized, wrongly) about the string members of an aggregate-initialised GenerateCallbackOptions.
template <class Options>
Options read(const ConfigNode& node, Options options = Options()) {
  read_options(node, options, node.path());
  return options;
}

/// The option an error message starts with ("model.depth: 9 is not ..." -> {"model.depth", "9 is not ..."}).
std::optional<std::pair<std::string, std::string>> option_named_by(const std::string& message) {
  const size_t colon = message.find(": ");
  if (colon == std::string::npos) return std::nullopt;
  const std::string head = message.substr(0, colon);
  if (head.empty() || head.find(' ') != std::string::npos) return std::nullopt;
  return std::make_pair(head, message.substr(colon + 2));
}

/// The node at `parts` under `node` ("streams[1]", "local"), when it is there.
std::optional<ConfigNode> find_path(ConfigNode node, const std::vector<std::string>& parts) {
  for (const std::string& part : parts) {
    const size_t bracket = part.find('[');
    const std::string key = part.substr(0, bracket);
    if (!node.is_map() || !node.has(key)) return std::nullopt;
    node = node.child(key);
    if (bracket == std::string::npos) continue;
    const std::string digits = part.substr(bracket + 1, part.size() - bracket - 2);
    if (part.back() != ']' || digits.empty() || digits.size() > 9 ||
        digits.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    const std::vector<ConfigNode> elements = node.elements();
    const size_t index = std::stoul(digits);
    if (index >= elements.size()) return std::nullopt;
    node = elements[index];
  }
  return node;
}

/// Fails at the option `message` starts with ("streaming.streams[1].local: ..."), when `node` has it: the
/// longest tail of the named path found under the node (streams[1].local), at its own line or the override that
/// set it. Returns when there is no such option.
void fail_at_named_option(const ConfigNode& node, const std::string& message) {
  const auto named = option_named_by(message);
  if (!named) return;
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t dot = named->first.find('.', begin);
    parts.push_back(named->first.substr(begin, dot - begin));
    if (dot == std::string::npos) break;
    begin = dot + 1;
  }
  for (size_t first = 0; first < parts.size(); ++first) {
    if (const auto at = find_path(node, {parts.begin() + static_cast<std::ptrdiff_t>(first), parts.end()}))
      at->fail(named->second);
  }
}

/// Runs a constructor; InputErrors it throws (cross-field checks, missing files) get the location of the option
/// they name (fail_at_named_option), else the node's.
template <class F>
auto construct(const ConfigNode& node, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const InputError& e) {
    fail_at_named_option(node, e.what());
    node.fail(e.what());
  }
}

/// The generic factory: read Options, construct T(options).
template <class Base, class T, class Options>
Entry<std::shared_ptr<Base>> simple(std::string name) {
  return {std::move(name), [](const ConfigNode& node, Context&) -> std::shared_ptr<Base> {
            const Options options = read<Options>(node);
            return construct(node, [&] { return std::make_shared<T>(options); });
          }};
}

/// Options without fields (for components that take none).
struct NoOptions {
  template <class V>
  void visit(V&) {}
};

// =======================================================================================================
// The lists. Names are the recipe names; keep each list alphabetical.

template <class A, class Options>
Entry<std::shared_ptr<Algorithm>> algorithm(std::string name) {
  return simple<Algorithm, A, Options>(std::move(name));
}

// clang-format off
const Kind<std::shared_ptr<Algorithm>>& algorithm_kinds() {
  static const Kind<std::shared_ptr<Algorithm>> kind{"algorithm", "algorithms", {
      // ---- ALGORITHMS (2/2): one line per algorithm, alphabetically
      // (the same algorithm twice in a recipe is refused or allowed by the engine, not here)
      algorithm<algorithms::Alibi, algorithms::AlibiOptions>("alibi"),
      algorithm<algorithms::AugMix, algorithms::AugMixOptions>("augmix"),
      algorithm<algorithms::BlurPool, algorithms::BlurPoolOptions>("blurpool"),
      algorithm<algorithms::ChannelsLast, algorithms::ChannelsLastOptions>("channels_last"),
      algorithm<algorithms::ColOut, algorithms::ColOutOptions>("colout"),
      algorithm<algorithms::CutMix, algorithms::CutMixOptions>("cutmix"),
      algorithm<algorithms::CutOut, algorithms::CutOutOptions>("cutout"),
      algorithm<algorithms::EMA, algorithms::EMAOptions>("ema"),
      algorithm<algorithms::Factorize, algorithms::FactorizeOptions>("factorize"),
      algorithm<algorithms::GatedLinearUnits, algorithms::GatedLinearUnitsOptions>("gated_linear_units"),
      algorithm<algorithms::GhostBatchNorm, algorithms::GhostBatchNormOptions>("ghost_batchnorm"),
      algorithm<algorithms::GradientClipping, algorithms::GradientClippingOptions>("gradient_clipping"),
      algorithm<algorithms::GyroDropout, algorithms::GyroDropoutOptions>("gyro_dropout"),
      algorithm<algorithms::LabelSmoothing, algorithms::LabelSmoothingOptions>("label_smoothing"),
      algorithm<algorithms::LayerFreezing, algorithms::LayerFreezingOptions>("layer_freezing"),
      algorithm<algorithms::LowPrecisionGroupNorm, algorithms::LowPrecisionGroupNormOptions>("low_precision_groupnorm"),
      algorithm<algorithms::LowPrecisionLayerNorm, algorithms::LowPrecisionLayerNormOptions>("low_precision_layernorm"),
      algorithm<algorithms::MixUp, algorithms::MixUpOptions>("mixup"),
      algorithm<algorithms::NoOpModel, algorithms::NoOpModelOptions>("no_op_model"),
      algorithm<algorithms::ProgressiveResizing, algorithms::ProgressiveResizingOptions>("progressive_resizing"),
      algorithm<algorithms::RandAugment, algorithms::RandAugmentOptions>("randaugment"),
      algorithm<algorithms::SAM, algorithms::SAMOptions>("sam"),
      algorithm<algorithms::SelectiveBackprop, algorithms::SelectiveBackpropOptions>("selective_backprop"),
      algorithm<algorithms::SeqLengthWarmup, algorithms::SeqLengthWarmupOptions>("seq_length_warmup"),
      algorithm<algorithms::SqueezeExcite, algorithms::SqueezeExciteOptions>("squeeze_excite"),
      algorithm<algorithms::StochasticDepth, algorithms::StochasticDepthOptions>("stochastic_depth"),
      algorithm<algorithms::WeightStandardization, algorithms::WeightStandardizationOptions>("weight_standardization"),
      algorithm<algorithms::SWA, algorithms::SWAOptions>("swa"),
  }};
  return kind;
}
// clang-format on

/// Sets in_channels / in_features / num_classes (vocab_size) / max_seq_length left at 0 from the training data.
struct FillFromData {
  const data::Dataset& dataset;
  template <class T, class Constraint>
  void operator()(const char* name, T& field, const char*, const Constraint&) {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      if (field != 0) return;
      const std::string key = name;
      const std::vector<int64_t> shape = dataset.input_shape();
      if (key == "in_channels" && !shape.empty()) {
        field = static_cast<T>(shape[0]);
      } else if (key == "in_features") {
        field = static_cast<T>(
            std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>()));
      } else if (key == "num_classes" || key == "vocab_size") {
        field = static_cast<T>(dataset.num_classes());
      } else if (key == "max_seq_length" && dataset.tokens_per_example() > 0) {
        field = static_cast<T>(dataset.tokens_per_example());
      }
    }
  }
};

/// The gpt model of a Hugging Face GPT-2 or Llama checkpoint (`pretrained`): its architecture from the checkpoint (an
/// option the recipe gives that disagrees refused at its line), not from the data, which must fit it.
std::shared_ptr<Model> pretrained_gpt(const ConfigNode& node, const Context& ctx, const GPTOptions& given) {
  const auto model = construct(node, [&] {
    return std::make_shared<GPT>(
        pretrained_options(given, [&](const std::string& key) { return node.is_map() && node.has(key); }));
  });
  if (ctx.train_dataset == nullptr) return model;
  const data::Dataset& dataset = *ctx.train_dataset;
  const GPTOptions& options = model->options();
  if (dataset.num_classes() > 0 && dataset.num_classes() != options.vocab_size()) {
    node.child("pretrained").fail(
        fmt::format("the checkpoint's vocabulary has {} tokens, the training data's {}", options.vocab_size(),
                    dataset.num_classes()),
        "text in the checkpoint's tokens: data.<split>.dataset.text.tokenizer set to its tokenizer (the "
        "tokenizer.json, or vocab.json beside merges.txt, of the model's folder)");
  }
  if (dataset.tokens_per_example() > options.max_seq_length()) {
    node.child("pretrained").fail(
        fmt::format("the checkpoint's positions end at {} tokens, the training data's sequences have {}",
                    options.max_seq_length(), dataset.tokens_per_example()),
        fmt::format("sequences of at most {} tokens (the text dataset's seq_length)", options.max_seq_length()));
  }
  return model;
}

template <class M, class Options>
Entry<std::shared_ptr<Model>> model(std::string name) {
  return {std::move(name), [](const ConfigNode& node, Context& ctx) -> std::shared_ptr<Model> {
            Options options = read<Options>(node);
            if constexpr (std::is_same_v<M, GPT>) {
              if (!options.pretrained().empty()) return pretrained_gpt(node, ctx, options);
            }
            if (ctx.train_dataset) {
              FillFromData fill{*ctx.train_dataset};
              options.visit(fill);
            }
            return construct(node, [&] { return std::make_shared<M>(options); });
          }};
}

// clang-format off
const Kind<std::shared_ptr<Model>>& models() {
  static const Kind<std::shared_ptr<Model>> kind{"model", "models", {
      model<BERT, GPTOptions>("bert"),
      model<BERTClassifier, BERTClassifierOptions>("bert_classifier"),
      model<CNN, CNNOptions>("cnn"),
      model<GPT, GPTOptions>("gpt"),
      model<MLP, MLPOptions>("mlp"),
      model<ResNet, ResNetOptions>("resnet"),
  }};
  return kind;
}
// clang-format on

using DatasetPtr = std::shared_ptr<const data::Dataset>;
const Kind<DatasetPtr>& datasets() {
  static const Kind<DatasetPtr> kind{
      "dataset",
      "datasets",
      {
          {"fashion_mnist",
           [](const ConfigNode& node, Context&) -> DatasetPtr {
             const auto options = read<data::FashionMnistOptions>(node);
             return construct(node, [&] { return DatasetPtr(data::load_fashion_mnist(options)); });
           }},
          {"synthetic",
           [](const ConfigNode& node, Context&) -> DatasetPtr {
             const auto options = read<data::SyntheticOptions>(node);
             return construct(node, [&] { return DatasetPtr(data::make_synthetic(options)); });
           }},
          {"text",  // byte-level token sequences (language models)
           [](const ConfigNode& node, Context&) -> DatasetPtr {
             const auto options = read<data::TextOptions>(node);
             return construct(node, [&] { return DatasetPtr(data::load_text(options)); });
           }},
          {"text_classification",  // labelled texts, one per line (text classifiers: bert_classifier)
           [](const ConfigNode& node, Context&) -> DatasetPtr {
             const auto options = read<data::TextClassificationOptions>(node);
             return construct(node, [&] { return DatasetPtr(data::load_text_classification(options)); });
           }},
          {"streaming",  // MDS shards (docs/streaming.md)
           [](const ConfigNode& node, Context&) -> DatasetPtr {
             const auto options = read<data::StreamingOptions>(node);
             return construct(node, [&] { return DatasetPtr(std::make_shared<data::StreamingDataset>(options)); });
           }},
      }};
  return kind;
}

/// mask_tokens' options from its recipe node: without a vocab_size, the vocabulary of its data section's dataset
/// (256 for bytes, a tokenizer's size), as a model's vocab_size left at 0 takes the training data's.
data::MaskTokensOptions mask_tokens_options(const ConfigNode& node, const data::Dataset* dataset) {
  data::MaskTokensOptions options = read<data::MaskTokensOptions>(node);
  if (dataset != nullptr && dataset->num_classes() > 0 && !(node.is_map() && node.has("vocab_size"))) {
    options.vocab_size(dataset->num_classes());
  }
  return options;
}

using TransformPtr = std::shared_ptr<const data::BatchTransform>;
const Kind<TransformPtr>& transforms() {
  static const Kind<TransformPtr> kind{
      "transform",
      "transforms",
      {
          simple<const data::BatchTransform, data::HorizontalFlip, data::HorizontalFlipOptions>(
              "horizontal_flip"),
          {"mask_tokens",
           [](const ConfigNode& node, Context& ctx) -> TransformPtr {
             const data::MaskTokensOptions options = mask_tokens_options(node, ctx.section_dataset);
             return construct(node, [&] { return std::make_shared<const data::MaskTokens>(options); });
           }},
          simple<const data::BatchTransform, data::Normalize, data::NormalizeOptions>("normalize"),
          simple<const data::BatchTransform, data::RandomCrop, data::RandomCropOptions>("random_crop"),
      }};
  return kind;
}

template <class O, class Options>
Entry<std::shared_ptr<optim::Optimizer>> optimizer(std::string name) {
  return {std::move(name), [](const ConfigNode& node, Context& ctx) -> std::shared_ptr<optim::Optimizer> {
            const Options options = read<Options>(node);
            if (!ctx.model) node.fail("an optimizer needs a model, and none was built");
            return construct(node, [&] { return std::make_shared<O>(ctx.model->named_parameters(), options); });
          }};
}

const Kind<std::shared_ptr<optim::Optimizer>>& optimizers() {
  static const Kind<std::shared_ptr<optim::Optimizer>> kind{
      "optimizer",
      "optimizers",
      {
          optimizer<optim::Adadelta, optim::AdadeltaOptions>("adadelta"),
          optimizer<optim::Adafactor, optim::AdafactorOptions>("adafactor"),
          optimizer<optim::Adagrad, optim::AdagradOptions>("adagrad"),
          optimizer<optim::Adam, optim::AdamOptions>("adam"),
          optimizer<optim::Adamax, optim::AdamaxOptions>("adamax"),
          optimizer<optim::AdamW, optim::AdamWOptions>("adamw"),
          optimizer<optim::Lamb, optim::LambOptions>("lamb"),
          optimizer<optim::Lars, optim::LarsOptions>("lars"),
          optimizer<optim::Lion, optim::LionOptions>("lion"),
          optimizer<optim::Muon, optim::MuonOptions>("muon"),
          optimizer<optim::NAdam, optim::NAdamOptions>("nadam"),
          optimizer<optim::RAdam, optim::RAdamOptions>("radam"),
          optimizer<optim::RMSprop, optim::RMSpropOptions>("rmsprop"),
          optimizer<optim::SGD, optim::SGDOptions>("sgd"),
      }};
  return kind;
}

template <class Options>
Entry<std::shared_ptr<optim::Scheduler>> scheduler(std::string name,
                                                   std::unique_ptr<optim::Scheduler> (*make)(Options)) {
  return {std::move(name), [make](const ConfigNode& node, Context&) -> std::shared_ptr<optim::Scheduler> {
            const Options options = read<Options>(node);
            return construct(node, [&] { return std::shared_ptr<optim::Scheduler>(make(options)); });
          }};
}

const Kind<std::shared_ptr<optim::Scheduler>>& schedulers();
template <class Product>
std::vector<Product> build_list(const Kind<Product>& kind, const ConfigNode& node, Context& ctx);

/// `sequential: {schedulers: [{name: {options}}, ...], milestones: [100ba, ...]}`: its schedules are entries of this
/// same list.
struct SequentialSchedulerOptions {
  ConfigNode schedulers;
  std::vector<Time> milestones;
  template <class V>
  void visit(V& v) {
    v("schedulers", schedulers, "the schedules, in the order they run", Any{});
    v("milestones", milestones, "when each schedule after the first starts", Any{});
  }
};

Entry<std::shared_ptr<optim::Scheduler>> sequential_scheduler() {
  return {"sequential", [](const ConfigNode& node, Context& ctx) -> std::shared_ptr<optim::Scheduler> {
            const auto options = read<SequentialSchedulerOptions>(node);
            if (!options.schedulers.present()) node.fail("missing schedulers", "schedulers: [{cosine: {}}, ...]");
            std::vector<std::shared_ptr<optim::Scheduler>> children = build_list(schedulers(), options.schedulers, ctx);
            return construct(node, [&] {
              return std::shared_ptr<optim::Scheduler>(
                  optim::make_sequential_scheduler(std::move(children), options.milestones));
            });
          }};
}

const Kind<std::shared_ptr<optim::Scheduler>>& schedulers() {
  static const Kind<std::shared_ptr<optim::Scheduler>> kind{
      "scheduler",
      "schedulers",
      {
          scheduler<optim::ConstantSchedulerOptions>("constant", &optim::make_constant_scheduler),
          scheduler<optim::CosineSchedulerOptions>("cosine", &optim::make_cosine_scheduler),
          scheduler<optim::CosineWarmRestartsSchedulerOptions>("cosine_warm_restarts",
                                                               &optim::make_cosine_warm_restarts_scheduler),
          scheduler<optim::ExponentialSchedulerOptions>("exponential", &optim::make_exponential_scheduler),
          scheduler<optim::InverseSqrtSchedulerOptions>("inverse_sqrt", &optim::make_inverse_sqrt_scheduler),
          scheduler<optim::LinearSchedulerOptions>("linear", &optim::make_linear_scheduler),
          scheduler<optim::MultiStepSchedulerOptions>("multistep", &optim::make_multistep_scheduler),
          scheduler<optim::OneCycleSchedulerOptions>("onecycle", &optim::make_onecycle_scheduler),
          scheduler<optim::PlateauSchedulerOptions>("plateau", &optim::make_plateau_scheduler),
          scheduler<optim::PolynomialSchedulerOptions>("polynomial", &optim::make_polynomial_scheduler),
          sequential_scheduler(),
          scheduler<optim::StepSchedulerOptions>("step", &optim::make_step_scheduler),
      }};
  return kind;
}

const Kind<std::shared_ptr<Callback>>& callback_kinds() {
  static const Kind<std::shared_ptr<Callback>> kind{
      "callback",
      "callbacks",
      {
          simple<Callback, callbacks::ActivationMonitor, callbacks::ActivationMonitorOptions>("activation_monitor"),
          simple<Callback, callbacks::ConsoleSummary, callbacks::ConsoleSummaryOptions>("console_summary"),
          simple<Callback, callbacks::EarlyStopper, callbacks::EarlyStopperOptions>("early_stopper"),
          simple<Callback, callbacks::Generate, callbacks::GenerateCallbackOptions>("generate"),
          simple<Callback, callbacks::ImageVisualizer, callbacks::ImageVisualizerOptions>("image_visualizer"),
          simple<Callback, callbacks::LrMonitor, callbacks::LrMonitorOptions>("lr_monitor"),
          simple<Callback, callbacks::MemoryMonitor, callbacks::MemoryMonitorOptions>("memory_monitor"),
          simple<Callback, callbacks::OptimizerMonitor, callbacks::OptimizerMonitorOptions>("optimizer_monitor"),
          simple<Callback, callbacks::ProgressBar, callbacks::ProgressBarOptions>("progress_bar"),
          simple<Callback, callbacks::RuntimeEstimator, callbacks::RuntimeEstimatorOptions>("runtime_estimator"),
          simple<Callback, callbacks::SpeedMonitor, callbacks::SpeedMonitorOptions>("speed_monitor"),
          simple<Callback, callbacks::SystemMetricsMonitor, callbacks::SystemMetricsMonitorOptions>(
              "system_metrics_monitor"),
          simple<Callback, callbacks::ThresholdStopper, callbacks::ThresholdStopperOptions>("threshold_stopper"),
      }};
  return kind;
}

/// File loggers: the path is resolved against run_dir and recorded for the runner's report.
template <class W, class Options>
Entry<std::shared_ptr<Callback>> file_logger(std::string name) {
  return {std::move(name), [](const ConfigNode& node, Context& ctx) -> std::shared_ptr<Callback> {
            Options options = read<Options>(node);
            if (options.path().empty())
              node.child("path").fail("the path is empty", "a file name such as metrics.jsonl");
            std::filesystem::path path(options.path());
            if (path.is_relative()) path = std::filesystem::path(ctx.trainer.run_dir()) / path;
            options.path(path.lexically_normal().string());
            if (ctx.metric_files) {
              const auto& files = *ctx.metric_files;
              if (std::find(files.begin(), files.end(), options.path()) != files.end()) {
                (node.child("path").present() ? node.child("path") : node)
                    .fail("another logger writes " + options.path() +
                              " already; two writers would mix their lines",
                          "a path of its own");
              }
              ctx.metric_files->push_back(options.path());
            }
            return construct(node, [&] { return std::make_shared<W>(options); });
          }};
}

const Kind<std::shared_ptr<Callback>>& loggers() {
  static const Kind<std::shared_ptr<Callback>> kind{
      "logger",
      "loggers",
      {
          file_logger<callbacks::CsvWriter, callbacks::CsvWriterOptions>("csv"),
          file_logger<callbacks::JsonlWriter, callbacks::JsonlWriterOptions>("jsonl"),
          file_logger<callbacks::TensorboardWriter, callbacks::TensorboardWriterOptions>("tensorboard"),
      }};
  return kind;
}

Entry<std::shared_ptr<Metric>> metric(std::string name) {
  return {name, [name](const ConfigNode& node, Context&) -> std::shared_ptr<Metric> {
            read<NoOptions>(node);
            return construct(node, [&] { return std::shared_ptr<Metric>(make_metric(name)); });
          }};
}

/// precision, recall, f1 and their weighted averages, with their options (num_classes, per_class).
Entry<std::shared_ptr<Metric>> class_averaged(std::string name) {
  return {name, [name](const ConfigNode& node, Context&) -> std::shared_ptr<Metric> {
            const auto options = read<ClassAveragedOptions>(node);
            return construct(node,
                             [&] { return std::shared_ptr<Metric>(make_class_averaged(name, options)); });
          }};
}

const Kind<std::shared_ptr<Metric>>& metrics() {
  static const Kind<std::shared_ptr<Metric>> kind{"metric",
                                                  "metrics",
                                                  {
                                                      metric("accuracy"),
                                                      metric("cross_entropy"),
                                                      class_averaged("f1"),
                                                      metric("perplexity"),
                                                      class_averaged("precision"),
                                                      class_averaged("recall"),
                                                      metric("top5_accuracy"),
                                                      class_averaged("weighted_f1"),
                                                      class_averaged("weighted_precision"),
                                                      class_averaged("weighted_recall"),
                                                  }};
  return kind;
}

/// "top<K>_accuracy" for any K >= 1 besides the listed top5_accuracy.
bool is_topk_accuracy(const std::string& name) {
  const std::string prefix = "top", suffix = "_accuracy";
  if (name.size() <= prefix.size() + suffix.size()) return false;
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  return digits.size() <= 6 && digits[0] != '0' &&
         std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

// =======================================================================================================
// Selecting a component by name.

/// A `{name: {options}}` node (or a bare `name`), resolved against a kind's list.
template <class Product>
std::pair<std::string, Product> build_named(const Kind<Product>& kind, const ConfigNode& node, Context& ctx) {
  const std::string example = std::string("{name: {options}} with name one of: ") + join(kind.names());
  std::string name;
  ConfigNode options;
  ConfigNode name_node;
  bool at_key = false;
  if (node.is_scalar()) {
    name = node.scalar();
    options = node.child(name);  // absent: default options
    name_node = node;
  } else if (node.is_map()) {
    const auto keys = node.keys();
    if (keys.empty()) node.fail(std::string("no ") + kind.singular + " given", example);
    if (keys.size() > 1) {
      node.fail(std::string("expected exactly one ") + kind.singular + ", got " +
                    std::to_string(keys.size()) + " (" + join(keys) + ")",
                example);
    }
    name = keys[0];
    options = node.child(name);
    name_node = options;
    at_key = true;
  } else {
    node.fail("expected " + with_article(kind.singular) + " as {name: {options}}, got " + node.describe(),
              example);
  }

  const Entry<Product>* entry = kind.find(name);
  if (!entry) {
    if constexpr (std::is_same_v<Product, std::shared_ptr<Metric>>) {
      if (is_topk_accuracy(name)) {
        read<NoOptions>(options);
        return {name, construct(options, [&] { return std::shared_ptr<Metric>(make_metric(name)); })};
      }
    }
    std::string problem = std::string("unknown ") + kind.singular + " \"" + name + "\"";
    const std::string guess = suggest_name(name, kind.names());
    if (!guess.empty()) problem += "; did you mean \"" + guess + "\"?";
    problem += std::string(" (known ") + kind.plural + ": " +
               (kind.entries.empty() ? "none yet" : join(kind.names())) + ")";
    if (at_key) name_node.fail_at_key(problem);
    name_node.fail(problem);
  }
  return {name, entry->make(options, ctx)};
}

/// The entries of a list section; absent or empty gives none.
std::vector<ConfigNode> list_section(const ConfigNode& node, const std::string& what) {
  if (!node.present() || node.is_null()) return {};
  if (!node.is_sequence())
    node.fail("expected a list of " + what + ", got " + node.describe(), "[{name: {options}}, ...]");
  return node.elements();
}

template <class Product>
std::vector<Product> build_list(const Kind<Product>& kind, const ConfigNode& node, Context& ctx) {
  std::vector<Product> out;
  for (const ConfigNode& e : list_section(node, kind.plural)) out.push_back(build_named(kind, e, ctx).second);
  return out;
}

// =======================================================================================================
// Recipe sections (read with read_options so unknown keys are caught with did-you-mean).

struct Sections {
  TrainerOptions trainer;
  ConfigNode model, data, optimizer, schedulers, algorithms, callbacks, loggers, checkpoint, distributed;
  template <class V>
  void visit(V& v) {
    trainer.visit(v);
    v("model", model, "the model: {name: {options}}", Any{});
    v("data", data, "training and evaluation data", Any{});
    v("optimizer", optimizer, "the optimizer: {name: {options}}", Any{});
    v("schedulers", schedulers, "learning-rate schedulers, multiplied", Any{});
    v("algorithms", algorithms, "speed-up algorithms, in order", Any{});
    v("callbacks", callbacks, "callbacks", Any{});
    v("loggers", loggers, "logger destinations", Any{});
    v("checkpoint", checkpoint, "checkpoint settings", Any{});
    v("distributed", distributed, "data-parallel settings (docs/distributed.md)", Any{});
  }
};

struct DataSection {
  ConfigNode train, eval;
  template <class V>
  void visit(V& v) {
    v("train", train, "training data", Any{});
    v("eval", eval, "evaluation data (a map, or a list of maps)", Any{});
  }
};

struct TrainDataSection {
  ConfigNode dataset, loader, transforms, metrics;
  template <class V>
  void visit(V& v) {
    v("dataset", dataset, "the data set: {name: {options}}", Any{});
    v("loader", loader, "DataLoaderOptions", Any{});
    v("transforms", transforms, "batch transforms, in order", Any{});
    v("metrics", metrics, "metric names (default [accuracy])", Any{});
  }
};

struct EvalDataSection {
  std::string label = "eval";
  Time interval;
  int64_t subset_batches = -1;
  ConfigNode dataset, loader, transforms, metrics;
  template <class V>
  void visit(V& v) {
    v("label", label, "name in logs: metrics/<label>/<metric>", Any{});
    v("interval", interval, "time between evaluations (default: eval_interval)", Any{});
    v("subset_batches", subset_batches, "evaluate at most this many batches (-1 = all)", Range::at_least(-1));
    v("dataset", dataset, "the data set: {name: {options}}", Any{});
    v("loader", loader, "DataLoaderOptions", Any{});
    v("transforms", transforms, "batch transforms, in order", Any{});
    v("metrics", metrics, "metric names (default [accuracy])", Any{});
  }
};

void require(const ConfigNode& parent, const ConfigNode& node, const std::string& key,
             const std::string& example) {
  if (node.present() && !node.is_null()) return;
  if (node.present()) node.fail_at_key("\"" + key + "\" is empty", example);
  parent.fail("missing key \"" + key + "\"", example);
}

/// A data loader from dataset + loader + transforms.
std::shared_ptr<data::DataLoader> build_loader(const ConfigNode& dataset, const ConfigNode& loader,
                                               const ConfigNode& transform_list, Context& ctx) {
  DatasetPtr ds = build_named(datasets(), dataset, ctx).second;
  const auto loader_options = read<data::DataLoaderOptions>(loader);
  ctx.section_dataset = ds.get();
  std::vector<TransformPtr> ts = build_list(transforms(), transform_list, ctx);
  ctx.section_dataset = nullptr;
  return construct(loader, [&] { return std::make_shared<data::DataLoader>(ds, loader_options, ts); });
}

/// The metrics a `metrics:` list names; absent: accuracy. An empty list is refused (the Trainer computes at
/// least one: it would compute accuracy where the recipe said none).
std::vector<std::shared_ptr<Metric>> build_metrics(const ConfigNode& node, Context& ctx) {
  if (!node.present()) return {std::make_shared<Accuracy>(1)};
  auto out = build_list(metrics(), node, ctx);
  if (out.empty()) node.fail("no metrics given", "a list of metric names such as [accuracy, cross_entropy]");
  return out;
}

/// The bert model learns from masked tokens only: a data section (`section`, its dataset `dataset`) whose
/// `transforms` have no mask_tokens for the model's vocabulary is refused at its recipe line (BERT::loss refuses
/// unmasked batches too, at step 1).
void require_masked_tokens(const ConfigNode& section, const ConfigNode& transforms, const data::Dataset& dataset,
                           const Model* model) {
  const auto* bert = dynamic_cast<const BERT*>(model);
  if (bert == nullptr) return;
  for (const ConfigNode& t : list_section(transforms, "transforms")) {
    const std::string name = t.is_map() ? t.keys().front() : t.as_string();
    if (name != "mask_tokens") continue;
    const ConfigNode options_node = t.is_map() ? t.child(name) : ConfigNode();
    const int64_t vocab = mask_tokens_options(options_node, &dataset).vocab_size();
    if (vocab != bert->options().vocab_size()) {
      (t.is_map() ? t.child(name) : t)
          .fail(fmt::format("mask_tokens.vocab_size is {} but the bert model's vocabulary has {} tokens",
                            vocab, bert->options().vocab_size()),
                "the model's vocab_size (its mask token is the id vocab_size)");
    }
    return;
  }
  (transforms.present() ? transforms : section)
      .fail("the bert model learns from masked tokens, and this data has no mask_tokens transform (its targets would "
            "be the next tokens, its inputs unmasked)",
            "transforms: [mask_tokens] (docs/language-models.md)");
}

Evaluator build_evaluator(const ConfigNode& node, Context& ctx) {
  EvalDataSection section;
  section.interval = ctx.trainer.eval_interval();
  if (!node.is_map())
    node.fail("expected a map with dataset, loader, transforms, metrics, label, interval, got " +
              node.describe());
  read_options(node, section, node.path());
  require(node, section.dataset, "dataset",
          "dataset: {synthetic: {size: 256}} or dataset: {fashion_mnist: {split: test}}");
  if (section.label.empty()) node.child("label").fail("the label is empty", "a name such as eval or test");
  if (section.label == "train")
    node.child("label").fail("\"train\" is the label of the training metrics",
                             "another label such as eval or test");
  if (section.interval.unit() == TimeUnit::Token) {
    node.child("interval")
        .fail("an evaluation interval in tokens is not supported", "epochs, batches, samples or a duration");
  }
  if (section.subset_batches == 0) {
    node.child("subset_batches")
        .fail("0 evaluates no batch, so the metrics would be made up", "-1 (all) or at least 1");
  }
  Evaluator ev;
  ev.label = section.label;
  ev.interval = section.interval;
  ev.subset_batches = section.subset_batches;
  const auto loader = build_loader(section.dataset, section.loader, section.transforms, ctx);
  ev.dataloader = loader;
  require_masked_tokens(node, section.transforms, loader->dataset(), ctx.model.get());
  ev.metrics = build_metrics(section.metrics, ctx);
  return ev;
}

/// `tokens_per_sample` < 0: not known yet (the training data is built after this first check).
void check_max_duration(const ConfigNode& node, const Time& max, int64_t tokens_per_sample = -1) {
  if (max.unit() == TimeUnit::Duration || (max.unit() == TimeUnit::Token && tokens_per_sample == 0)) {
    node.fail("\"" + max.str() + "\" is not allowed" +
                  (max.unit() == TimeUnit::Token ? " (the training data is not token sequences)" : ""),
              "epochs, batches or samples (e.g. 10ep, 500ba, 60000sp), or tokens for token-sequence data");
  }
  if (max.as_double() <= 0) node.fail(max.str() + " is out of range", "a time > 0 such as 10ep");
}

/// The checkpoint keys that do something only beside another are refused without it (a forgotten folder would
/// run without any checkpoint, and say nothing). The other key given empty or false is a choice, and accepted
/// (checkpoint.folder= on the command line turns a recipe's checkpoints off).
void check_checkpoint_dependencies(const ConfigNode& section) {
  if (!section.is_map()) return;
  struct Dependency {
    const char* key;
    std::vector<const char*> needs;  // any one of them
    const char* does;
  };
  const Dependency dependencies[] = {
      {"interval", {"folder"}, "how often checkpoints are written to the folder"},
      {"keep", {"folder"}, "how many checkpoints the folder keeps"},
      {"fresh_start_if_invalid", {"autoresume"}, "what autoresume does with invalid checkpoints"},
      {"resume_changed_recipe", {"autoresume"}, "whether autoresume may resume a changed recipe"},
      {"weights_only", {"load_path"}, "what is loaded from load_path"},
      {"strict", {"load_path", "autoresume"}, "how a loaded checkpoint must match the model"},
  };
  for (const Dependency& d : dependencies) {
    if (!section.has(d.key)) continue;
    const bool met = std::any_of(d.needs.begin(), d.needs.end(), [&](const char* k) { return section.has(k); });
    if (met) continue;
    std::string needs;
    for (size_t i = 0; i < d.needs.size(); ++i) needs += (i ? " or " : "") + std::string(d.needs[i]);
    section.child(d.key).fail_at_key(
        std::string("it sets ") + d.does + ", and the checkpoint section has no " + needs + ", so it would do nothing",
        "a " + needs + " beside it, or no " + d.key);
  }
}

}  // namespace

// =======================================================================================================

Run build_run(const Recipe& recipe, const GivenParts& given) {
  const ConfigNode root = recipe.root();
  Sections s;
  read_options(root, s, "the recipe");
  if (given.model) {
    if (s.model.present()) s.model.fail_at_key("the model is given as an object, so the recipe must not name one", "no model: key");
  } else {
    require(root, s.model, "model", "model: {mlp: {hidden: [256]}} (one of: " + join(models().names()) + ")");
  }
  if (!given.train_data) require(root, s.data, "data", "data: {train: {dataset: {...}, loader: {...}}}");
  require(root, s.optimizer, "optimizer",
          "optimizer: {sgd: {lr: 0.1}} (one of: " + join(optimizers().names()) + ")");

  Run run;
  run.trainer = s.trainer;
  run.recipe_root = root;
  // The recipe node of each part built (for the Trainer's errors about it: make_trainer).
  const auto built_from = [&run](const void* part, const ConfigNode& node) { run.sources.emplace_back(part, node); };
  const auto list_built_from = [&](const auto& parts, const ConfigNode& list, const std::string& what) {
    const std::vector<ConfigNode> nodes = list_section(list, what);
    for (size_t i = 0; i < parts.size() && i < nodes.size(); ++i) built_from(parts[i].get(), nodes[i]);
  };
  if (root.has("max_duration")) check_max_duration(root.child("max_duration"), run.trainer.max_duration());
  // A profiler section turns the profiler on, unless it says enabled: false.
  if (root.has("profiler") && !root.child("profiler").is_null() && !root.child("profiler").has("enabled")) {
    run.trainer.profiler().enabled(true);
  }
  // A bad device, or CUDA where there is none, is reported at the recipe's line:column (the Trainer checks
  // again for C++ callers).
  if (root.has("device")) {
    const std::string problem = device_problem(run.trainer.device());
    if (!problem.empty()) root.child("device").fail(problem);
  }
  // Choices were checked on reading; amp_fp16 on the CPU is refused here.
  for (const auto& [key, name] : {std::pair{"precision", run.trainer.precision()},
                                  std::pair{"eval_precision", run.trainer.eval_precision()}}) {
    if (!root.has(key)) continue;
    const std::string problem = precision_problem(parse_precision(name), resolve_device(run.trainer.device()));
    if (!problem.empty()) root.child(key).fail(problem);
  }
  run.checkpoint = read<CheckpointOptions>(s.checkpoint);  // a relative folder: the Trainer resolves it against run_dir
  check_checkpoint_dependencies(s.checkpoint);
  // The Trainer checks it too, but here it can point at the recipe's line.
  if (run.checkpoint.autoresume() && run.checkpoint.folder().empty()) {
    s.checkpoint.child("autoresume").fail("autoresume is on but checkpoint.folder is empty, so there is nothing to "
                                          "resume from",
                                          "a checkpoint.folder, or autoresume: false");
  }

  run.components.distributed = read<dist::DistributedOptions>(s.distributed);

  Context ctx;
  ctx.trainer = run.trainer;
  ctx.metric_files = &run.metric_files;
  Components& c = run.components;

  // data (training; the evaluators are built last)
  DataSection data_section;
  TrainDataSection train;
  if (s.data.present() && !s.data.is_map()) s.data.fail("expected a map with train (and eval), got " + s.data.describe());
  if (s.data.present()) read_options(s.data, data_section, "data");
  if (given.train_data) {
    if (data_section.train.present()) {
      data_section.train.fail_at_key("the training data is given as an object, so the recipe must not describe it",
                                     "no data.train: key");
    }
    c.train_dataloader = given.train_data;
    c.train_metrics = given.train_metrics ? *given.train_metrics : build_metrics(ConfigNode(), ctx);
  } else {
    if (given.train_metrics) {
      throw InputError("train_metrics: given for training data given as an object; the recipe's data.train takes its "
                       "metrics as metrics: [accuracy, ...]");
    }
    require(s.data, data_section.train, "train",
            "train: {dataset: {synthetic: {}}, loader: {batch_size: 128}}");
    if (!data_section.train.is_map()) {
      data_section.train.fail("expected a map with dataset, loader, transforms, metrics, got " +
                              data_section.train.describe());
    }
    read_options(data_section.train, train, "data.train");
    require(data_section.train, train.dataset, "dataset",
            "dataset: {synthetic: {size: 1024}} or dataset: {fashion_mnist: {}}");
    auto train_loader = build_loader(train.dataset, train.loader, train.transforms, ctx);
    ctx.train_dataset = std::shared_ptr<const data::Dataset>(train_loader, &train_loader->dataset());
    c.train_dataloader = train_loader;
    c.train_metrics = build_metrics(train.metrics, ctx);
    built_from(c.train_dataloader.get(), data_section.train);
  }

  // model: seeded so that its initial weights are a function of the recipe's seed
  if (given.model) {
    run.model_name = given.model_name;
    c.model = given.model;
  } else {
    seed_everything(static_cast<uint64_t>(run.trainer.seed()));
    auto [model_name, model] = build_named(models(), s.model, ctx);
    run.model_name = model_name;
    c.model = model;
    built_from(c.model.get(), s.model);
  }
  ctx.model = c.model;
  if (!given.train_data) {
    require_masked_tokens(data_section.train, train.transforms, *ctx.train_dataset, c.model.get());
  }
  if (root.has("max_duration")) {
    check_max_duration(root.child("max_duration"), run.trainer.max_duration(), c.train_dataloader->tokens_per_example());
  }

  c.optimizer = build_named(optimizers(), s.optimizer, ctx).second;
  built_from(c.optimizer.get(), s.optimizer);
  c.schedulers = build_list(schedulers(), s.schedulers, ctx);
  list_built_from(c.schedulers, s.schedulers, "schedulers");
  {
    // The schedules against the run's length, known only now: a horizon that ends before its warmup (both in
    // batches) is refused at its recipe line (or override) before anything runs, in --dry-run too.
    TimeContext time;
    time.max_duration = run.trainer.max_duration();
    time.batches_per_epoch = c.train_dataloader->num_batches();
    time.samples_per_epoch = c.train_dataloader->num_samples();
    time.tokens_per_sample = c.train_dataloader->tokens_per_example();
    const std::vector<ConfigNode> nodes = list_section(s.schedulers, "schedulers");
    for (size_t i = 0; i < c.schedulers.size(); ++i) {
      const ConfigNode options = nodes[i].is_map() ? nodes[i].child(nodes[i].keys().front()) : ConfigNode();
      construct(options.is_map() ? options : nodes[i], [&] { c.schedulers[i]->check(time); });
    }
  }
  c.algorithms = build_list(algorithm_kinds(), s.algorithms, ctx);
  list_built_from(c.algorithms, s.algorithms, "algorithms");
  c.callbacks = build_list(callback_kinds(), s.callbacks, ctx);
  list_built_from(c.callbacks, s.callbacks, "callbacks");
  const std::vector<std::shared_ptr<Callback>> logger_parts = build_list(loggers(), s.loggers, ctx);
  list_built_from(logger_parts, s.loggers, "loggers");
  c.callbacks.insert(c.callbacks.end(), logger_parts.begin(), logger_parts.end());

  // evaluators: one map, or a list of maps with distinct labels
  if (data_section.eval.present() && !data_section.eval.is_null()) {
    std::vector<ConfigNode> evals;
    if (data_section.eval.is_sequence()) {
      evals = data_section.eval.elements();
    } else {
      evals.push_back(data_section.eval);
    }
    std::set<std::string> labels;
    for (const ConfigNode& e : evals) {
      Evaluator ev = build_evaluator(e, ctx);
      if (!labels.insert(ev.label).second) {
        e.child("label").fail("label \"" + ev.label + "\" is used by another evaluator",
                              "a distinct label per evaluator");
      }
      built_from(ev.dataloader.get(), e);
      c.evaluators.push_back(std::move(ev));
    }
  }
  for (const Evaluator& ev : given.evaluators) {
    for (const Evaluator& other : c.evaluators) {
      if (other.label == ev.label) {
        throw InputError("evaluator \"" + ev.label + "\" is given twice (the recipe's data.eval has one of that label)");
      }
    }
    c.evaluators.push_back(ev);
    c.evaluators.back().interval = run.trainer.eval_interval();
  }
  return run;
}

namespace {

/// Inside a catch block of `error`: rethrows it at the recipe line of the part it is about, or of the recipe
/// option its message starts with (a CheckpointError stays one); unchanged when neither is in the recipe.
[[noreturn]] void rethrow_at_recipe_line(const ConfigNode& root,
                                         const std::vector<std::pair<const void*, ConfigNode>>& sources,
                                         const InputError& error) {
  try {
    if (error.subject() != nullptr) {
      for (const auto& [part, node] : sources) {
        if (part != error.subject()) continue;
        fail_at_named_option(node, error.detail());
        node.fail(error.detail());
      }
    }
    if (root.present()) fail_at_named_option(root, error.what());
  } catch (const InputError& located) {
    if (dynamic_cast<const CheckpointError*>(&error) != nullptr) throw CheckpointError(located.what());
    throw;
  }
  throw;  // `error` itself
}

}  // namespace

void make_trainer(Run run, const std::string& recipe_text, std::unique_ptr<Trainer>& out) {
  // Kept aside: the Trainer takes the parts (their addresses are only compared).
  const ConfigNode root = run.recipe_root;
  const std::vector<std::pair<const void*, ConfigNode>> sources = std::move(run.sources);
  try {
    out.reset(new Trainer(Trainer::BeforeInit{}, run.trainer, std::move(run.components), run.checkpoint, recipe_text));
    out->start();
  } catch (const InputError& e) {
    rethrow_at_recipe_line(root, sources, e);
  }
}

std::unique_ptr<Trainer> make_trainer(Run run, const std::string& recipe_text) {
  std::unique_ptr<Trainer> trainer;
  make_trainer(std::move(run), recipe_text, trainer);
  return trainer;
}

std::unique_ptr<Trainer> make_trainer(const Recipe& recipe) { return make_trainer(build_run(recipe), recipe.text()); }

std::vector<std::string> registered_names(const std::string& kind) {
  const std::map<std::string, std::function<std::vector<std::string>()>> kinds = {
      {"algorithms", [] { return algorithm_kinds().names(); }},
      {"models", [] { return models().names(); }},
      {"datasets", [] { return datasets().names(); }},
      {"transforms", [] { return transforms().names(); }},
      {"optimizers", [] { return optimizers().names(); }},
      {"schedulers", [] { return schedulers().names(); }},
      {"callbacks", [] { return callback_kinds().names(); }},
      {"loggers", [] { return loggers().names(); }},
      {"metrics", [] { return metrics().names(); }},
  };
  auto it = kinds.find(kind);
  if (it == kinds.end()) it = kinds.find(kind + "s");
  if (it == kinds.end()) {
    std::vector<std::string> names;
    for (const auto& [k, f] : kinds) names.push_back(k);
    std::string msg = "unknown kind of component \"" + kind + "\"";
    const std::string guess = suggest_name(kind, names);
    if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
    throw InputError(msg + "; expected one of: " + join(names));
  }
  return it->second();
}

std::shared_ptr<Algorithm> make_algorithm(const ConfigNode& node) {
  Context ctx;
  return build_named(algorithm_kinds(), node, ctx).second;
}

}  // namespace tessera

namespace tessera {
namespace {

std::string join_resources(const std::vector<Resource>& rs) {
  std::string out;
  for (Resource r : rs) out += (out.empty() ? "" : ", ") + std::string(resource_name(r));
  return out.empty() ? "-" : out;
}

std::string order_at(const Plan& plan, Event e) {
  std::string out;
  for (const auto& entry : plan.at(e)) out += (out.empty() ? "" : " → ") + entry.algorithm->name();
  return out;
}

}  // namespace

std::string interactions_markdown() {
  const std::vector<std::string> names = registered_names("algorithms");
  std::map<std::string, std::shared_ptr<Algorithm>> algos;
  for (const auto& n : names) algos[n] = make_algorithm(Recipe::parse("x: " + n, "<interactions>").root().child("x"));
  std::string out =
      "# Algorithm interactions\n\nGenerated from the engine by `tessera-run --interactions` (default options); "
      "a test fails when this file is stale.\n\n## Declared specs\n\n| algorithm | event | reads | writes |\n|---|---|---|---|\n";
  for (const auto& n : names) {
    for (const Access& a : algos[n]->spec().accesses) {
      out += "| " + n + " | " + event_name(a.event) + " | " + join_resources(a.reads) + " | " + join_resources(a.writes) + " |\n";
    }
  }
  out += "\n| algorithm | order rules | conflicts | flags |\n|---|---|---|---|\n";
  for (const auto& n : names) {
    const AlgorithmSpec& s = algos[n]->spec();
    std::string rules, conflicts, flags;
    for (const OrderRule& r : s.order) {
      rules += (rules.empty() ? "" : "; ") + std::string(r.relation == OrderRule::Relation::Before ? "before " : "after ") +
               r.other.describe() + (r.event ? std::string(" at ") + event_name(*r.event) : "") + " (" + r.reason + ")";
    }
    for (const Conflict& c : s.conflicts) {
      conflicts += (conflicts.empty() ? "" : "; ") + std::string(c.hard ? "refuses " : "warns with ") + c.other.describe() + " (" + c.reason + ")";
    }
    if (s.required_on_load) flags += "required on load ";
    if (s.interpolates_loss) flags += "interpolates loss ";
    if (s.leaves_parameters_unused) flags += "leaves parameters unused ";
    if (s.skips_modules) flags += "skips modules ";
    if (s.may_repeat) flags += "may repeat ";
    for (Precision p : s.refused_precisions) flags += std::string("refuses ") + precision_name(p) + " (" + s.precision_reason + ") ";
    if (!s.precision_note.empty()) flags += "precision: " + s.precision_note + " ";
    out += "| " + n + " | " + (rules.empty() ? "-" : rules) + " | " + (conflicts.empty() ? "-" : conflicts) + " | " +
           (flags.empty() ? "-" : flags) + " |\n";
  }
  out += "\n## Pairs\n\nFor each pair: the events both act on and the order there, for both recipe orders; then "
         "what one writes at one event that the other reads or writes at another (no per-event order governs "
         "those: the events' order does; the pairwise composition test trains every pair). \"fixed\" means a "
         "declared rule decides the order whatever the recipe says.\n\n"
         "| pair | shared events | order (recipe a, b) | order (recipe b, a) | across events | verdict |\n"
         "|---|---|---|---|---|---|\n";
  for (size_t i = 0; i < names.size(); ++i) {
    for (size_t j = i + 1; j < names.size(); ++j) {
      Algorithm* a = algos[names[i]].get();
      Algorithm* b = algos[names[j]].get();
      std::string shared, ab, ba, verdict;
      const std::vector<std::string> across = cross_event_dependencies(a->spec(), b->spec());
      try {
        const Plan p1 = compile_plan({a, b});
        const Plan p2 = compile_plan({b, a});
        bool fixed = false;
        std::vector<std::string> reasons;
        for (Event e : all_events()) {
          if (!a->spec().acts_on(e) || !b->spec().acts_on(e)) continue;
          shared += (shared.empty() ? "" : ", ") + std::string(event_name(e));
          ab += (ab.empty() ? "" : "; ") + std::string(event_name(e)) + ": " + order_at(p1, e);
          ba += (ba.empty() ? "" : "; ") + std::string(event_name(e)) + ": " + order_at(p2, e);
          if (order_at(p1, e) == order_at(p2, e)) fixed = true;
          for (const auto& entry : p1.at(e)) {
            for (const auto& r : entry.reasons) {
              if (std::find(reasons.begin(), reasons.end(), r) == reasons.end()) reasons.push_back(r);
            }
          }
        }
        if (shared.empty() && across.empty()) {
          verdict = "independent (no shared event or resource)";
        } else if (shared.empty()) {
          verdict = "across events only (their order is the events' order)";
        } else if (fixed) {
          verdict = "fixed: ";
          for (size_t k = 0; k < reasons.size(); ++k) verdict += (k ? "; " : "") + reasons[k];
        } else {
          verdict = "recipe order (FILO on after_* events)";
        }
        for (const auto& w : p1.warnings()) verdict += "; warning: " + w;
      } catch (const InputError& err) {
        // One table cell: the plan's reasons ("...together:\n  - a\n  - b") on one line.
        std::string what = err.what();
        const std::string header = "the algorithms of this run cannot run together:\n  - ";
        if (what.rfind(header, 0) == 0) what = what.substr(header.size());
        for (size_t at = what.find("\n  - "); at != std::string::npos; at = what.find("\n  - ")) what.replace(at, 5, "; ");
        verdict = "refused before step 1: " + what;
      }
      std::string flows;
      for (const auto& line : across) flows += (flows.empty() ? "" : "; ") + line;
      out += "| " + names[i] + " + " + names[j] + " | " + (shared.empty() ? "-" : shared) + " | " + (ab.empty() ? "-" : ab) +
             " | " + (ba.empty() ? "-" : ba) + " | " + (flows.empty() ? "-" : flows) + " | " + verdict + " |\n";
    }
  }
  return out;
}

}  // namespace tessera
