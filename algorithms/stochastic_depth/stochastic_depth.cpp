#include "stochastic_depth.h"

#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/linear.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

namespace tessera::algorithms {
namespace {

constexpr uint64_t kStochasticDepthStream = 0x57de97ULL;
constexpr const char* kGateSlot = "residual_gate";

void check_mode(const std::string& mode) {
  if (mode != "block" && mode != "sample") {
    throw InputError(fmt::format("stochastic_depth: mode \"{}\" is not allowed; expected block or sample", mode));
  }
}

void check_rate(double drop_rate) {
  if (!(drop_rate >= 0.0 && drop_rate <= 1.0)) {
    throw InputError(fmt::format("stochastic_depth: drop_rate must be in [0, 1], got {}", drop_rate));
  }
}

/// One draw: 1 (keep) with probability 1 - drop_rate, else 0: ⌊(1 − p) + u⌋ with u uniform in [0, 1).
double keep_draw(double drop_rate, Rng& rng) { return std::floor((1.0 - drop_rate) + rng.uniform()); }

/// Calls `fn(index, current)` on every residual gate slot in visiting order; `fn` returns the replacement or nullopt.
int64_t gate_slots(torch::nn::Module& model,
                   const std::function<std::optional<torch::nn::AnyModule>(torch::nn::AnyModule&)>& fn) {
  return replace_slots(model, nullptr, [&](const std::string& path, torch::nn::AnyModule& current) {
    const auto dot = path.rfind('.');
    const std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
    if (name != kGateSlot) return std::optional<torch::nn::AnyModule>();
    return fn(current);
  });
}

}  // namespace

std::vector<double> stochastic_depth_drop_rates(int64_t num_blocks, double drop_rate,
                                                const std::string& drop_distribution) {
  if (num_blocks < 1) throw InputError(fmt::format("stochastic_depth: num_blocks must be at least 1, got {}", num_blocks));
  check_rate(drop_rate);
  if (drop_distribution != "linear" && drop_distribution != "uniform") {
    throw InputError(fmt::format("stochastic_depth: drop_distribution \"{}\" is not allowed; expected linear or uniform",
                                 drop_distribution));
  }
  std::vector<double> rates(static_cast<size_t>(num_blocks), drop_rate);
  if (drop_distribution == "linear") {
    for (int64_t i = 0; i < num_blocks; ++i) {
      rates[static_cast<size_t>(i)] = static_cast<double>(i + 1) / static_cast<double>(num_blocks) * drop_rate;
    }
  }
  return rates;
}

double stochastic_depth_warmup_rate(double drop_rate, double drop_warmup, double elapsed) {
  if (drop_warmup <= 0.0 || elapsed >= drop_warmup) return drop_rate;
  return std::max(0.0, elapsed) / drop_warmup * drop_rate;
}

at::Tensor stochastic_depth(const at::Tensor& branch, double drop_rate, const std::string& mode, bool training,
                            Rng& rng) {
  check_mode(mode);
  check_rate(drop_rate);
  TORCH_CHECK(branch.defined() && branch.dim() >= 1, "stochastic_depth: expected a branch [N, ...], got ",
              branch.defined() ? c10::str(branch.sizes()) : std::string("an undefined tensor"));
  if (!training) return drop_rate == 0.0 ? branch : branch * (1.0 - drop_rate);
  if (mode == "block") {
    return keep_draw(drop_rate, rng) >= 1.0 ? branch : branch * 0.0;
  }
  const int64_t n = branch.size(0);
  std::vector<float> mask(static_cast<size_t>(n));
  for (auto& m : mask) m = static_cast<float>(keep_draw(drop_rate, rng));
  std::vector<int64_t> shape(static_cast<size_t>(branch.dim()), 1);
  shape[0] = n;
  const at::Tensor m = at::tensor(mask, at::kFloat).view(shape).to(branch.device(), branch.scalar_type());
  return branch * m;
}

StochasticDepthGateImpl::StochasticDepthGateImpl(std::string mode_, double drop_rate_, Rng rng_)
    : mode(std::move(mode_)), drop_rate(drop_rate_), rng(rng_) {
  check_mode(mode);
  check_rate(drop_rate);
}

at::Tensor StochasticDepthGateImpl::forward(const at::Tensor& branch) {
  if (kept_) {
    kept_ = false;
    return branch;
  }
  return stochastic_depth(branch, drop_rate, mode, is_training(), rng);
}

bool StochasticDepthGateImpl::skip_branch() {
  kept_ = false;
  if (!is_training() || mode != "block") return false;
  kept_ = keep_draw(drop_rate, rng) >= 1.0;  // the draw stochastic_depth's block mode makes
  return !kept_;
}

void StochasticDepthGateImpl::pretty_print(std::ostream& stream) const {
  stream << "tessera::StochasticDepthGate(mode=" << mode << ", drop_rate=" << drop_rate << ")";
}

std::vector<StochasticDepthGate> apply_stochastic_depth(torch::nn::Module& model,
                                                        const StochasticDepthOptions& options) {
  StochasticDepthOptions checked = options;
  validate_options(checked, "stochastic_depth");
  const int64_t n = count_stochastic_depth(model);
  if (n == 0) return {};
  const std::vector<double> rates = stochastic_depth_drop_rates(n, options.drop_rate(), options.drop_distribution());
  const double scale = stochastic_depth_warmup_rate(1.0, options.drop_warmup(), 0.0);
  std::vector<StochasticDepthGate> gates;
  gate_slots(model, [&](torch::nn::AnyModule&) {
    const size_t i = gates.size();
    gates.emplace_back(options.stochastic_method(), rates[i] * scale,
                       Rng(0, {kAlgorithmStream, kStochasticDepthStream, static_cast<uint64_t>(i)}));
    return std::optional<torch::nn::AnyModule>(torch::nn::AnyModule(gates.back()));
  });
  return gates;
}

int64_t count_stochastic_depth(torch::nn::Module& model) {
  int64_t n = 0;
  gate_slots(model, [&](torch::nn::AnyModule&) {
    ++n;
    return std::optional<torch::nn::AnyModule>();
  });
  return n;
}

StochasticDepth::StochasticDepth(StochasticDepthOptions options) : options_(std::move(options)) {
  validate_options(options_, "stochastic_depth");
  spec_.name = "stochastic_depth";
  // The gates hold no parameters: no optimizer change. At BeforeDataloader (before selective backprop's scoring
  // forward at AfterDataloader, which draws from them too) it sets the gates' rates and streams (part of
  // the module tree's behaviour, declared as the structure it changes).
  spec_.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure}},
                    {Event::BeforeDataloader, {Resource::ModelStructure}, {Resource::ModelStructure}}};
  spec_.required_on_load = true;
  // Block mode skips a dropped branch: its parameters get no gradient in that step (data-parallel training then
  // contributes zeros for them).
  spec_.leaves_parameters_unused = options_.stochastic_method() == "block";
  // And each rank draws its own drops: a dropped branch's batch norms run on some ranks only.
  spec_.skips_modules = options_.stochastic_method() == "block";
}

void StochasticDepth::check(const State& state) const {
  if (state.model->external_surgery(*this, nullptr, /*dry_run=*/true)) return;  // a Python model's own surgery
  if (count_stochastic_depth(*state.model) > 0) return;
  throw InputError(
      "the model has no residual_gate slot (no residual block: stochastic depth drops residual branches, which "
      "the resnet and gpt models have and mlp and cnn do not), so it would have no effect; use the resnet or gpt "
      "model or remove it "
      "(a C++ model of one's own registers an Identity slot \"residual_gate\" on each residual branch: "
      "include/tessera/models/resnet.h)");
}

void StochasticDepth::apply(Event event, State& state, Logger& logger) {
  if (event == Event::Init) {
    if (state.model->external_surgery(*this, nullptr, /*dry_run=*/false)) return;
    gates_ = apply_stochastic_depth(*state.model, options_);
    logger.info(fmt::format("stochastic_depth: {} residual gates ({} mode, drop_rate {}, {})", gates_.size(),
                            options_.stochastic_method(), options_.drop_rate(), options_.drop_distribution()));
    return;
  }
  if (gates_.empty()) return;
  const double rate = stochastic_depth_warmup_rate(options_.drop_rate(), options_.drop_warmup(), state.elapsed_fraction());
  const std::vector<double> rates =
      stochastic_depth_drop_rates(static_cast<int64_t>(gates_.size()), rate, options_.drop_distribution());
  for (size_t i = 0; i < gates_.size(); ++i) {
    gates_[i]->drop_rate = rates[i];
    gates_[i]->rng = Rng(state.seed, {kAlgorithmStream, kStochasticDepthStream,
                                      static_cast<uint64_t>(state.timestamp.batch), static_cast<uint64_t>(state.rank),
                                      static_cast<uint64_t>(i)});
  }
}

}  // namespace tessera::algorithms
