// Tessera's optimizers against PyPI's torch.optim (Muon, NAdam, RAdam, Adamax, Adadelta, Adafactor), step by step
// and bitwise: the test writes parameters and the gradients of every step to a safetensors file,
// tests/core/optim_interop.py runs
// torch.optim's optimizer on them in the streaming peers' venv (PyPI's torch 2.x), and Tessera's optimizer
// must give the same bits after every step. (Those torch::optim has in C++ are compared in optim_test.cpp, in
// the same process.)
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <tessera/optim/optimizer.h>
#include <tessera/safetensors.h>
#include <torch/version.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mds_support.h"
#include "support.h"

namespace tessera {
namespace {

struct Case {
  std::string label;
  std::string torch_class;      ///< torch.optim.<class>
  nlohmann::json torch_kwargs;  ///< its keyword arguments
  /// Tessera's optimizer with the same settings over the named parameters.
  std::function<std::shared_ptr<optim::Optimizer>(const optim::NamedParameters&)> make;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  int steps = 4;
  /// Built against another torch than the venv's: the largest difference allowed, as a fraction of the
  /// largest distance the parameter moved from its start. Muon's is wide: LibTorch 1.13's bfloat16 products
  /// of small matrices stray about 10% from the same products accumulated in float32, torch 2.x's not at all
  /// (measured on 12x6, 5x8 and 7x7 matrices), so its Newton-Schulz results differ by that much; a wrong
  /// transpose or lr would be 40% or more.
  double other_torch_tolerance = 1e-4;
};

/// A case's parameters and gradients, written for the helper.
struct Inputs {
  std::map<std::string, at::Tensor> initial;
  std::vector<std::map<std::string, at::Tensor>> grads;  ///< per step
};

Inputs write_inputs(const Case& c, const std::string& path) {
  Inputs inputs;
  Safetensors in;
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, shape] : c.shapes) {
    inputs.initial[name] = at::randn(shape);
    in.tensors.emplace_back("p/" + name, inputs.initial[name]);
    names.push_back(name);
  }
  inputs.grads.resize(c.steps);
  for (int step = 0; step < c.steps; ++step) {
    for (const auto& [name, shape] : c.shapes) {
      inputs.grads[step][name] = at::randn(shape);
      in.tensors.emplace_back("g/" + std::to_string(step) + "/" + name, inputs.grads[step][name]);
    }
  }
  const nlohmann::json spec = {
      {"class", c.torch_class}, {"kwargs", c.torch_kwargs}, {"names", names}, {"steps", c.steps}};
  in.metadata["spec"] = spec.dump();
  save_safetensors(path, in);
  return inputs;
}

/// Runs the cases in torch (the helper, once for all) and in Tessera; every step's parameters must be bitwise
/// equal (within `other_torch_tolerance` when Tessera is built against another torch than the venv's).
void expect_as_torch(const std::string& python, const std::vector<Case>& cases) {
  test::TempDir dir("optim_interop");
  at::manual_seed(31);
  std::vector<Inputs> inputs;
  std::string args;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string in = fmt::format("{}/in{}.safetensors", dir.path(), i);
    inputs.push_back(write_inputs(cases[i], in));
    args += fmt::format(" {} {}/out{}.safetensors", in, dir.path(), i);
  }
  test::run_python_helper(python, "optim_interop.py", args, dir.path() + "/torch.log");
  const std::string ours_version =
      std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + ".";

  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const Safetensors out = load_safetensors(fmt::format("{}/out{}.safetensors", dir.path(), i));
    const std::map<std::string, at::Tensor> theirs(out.tensors.begin(), out.tensors.end());
    const bool same_torch =
        out.metadata.count("torch") != 0 && out.metadata.at("torch").rfind(ours_version, 0) == 0;
    optim::NamedParameters params;
    for (const auto& [name, shape] : c.shapes)
      params.insert(name, inputs[i].initial.at(name).clone().requires_grad_(true));
    const auto opt = c.make(params);
    for (int step = 0; step < c.steps; ++step) {
      for (const auto& [name, shape] : c.shapes)
        params[name].mutable_grad() = inputs[i].grads[step].at(name).clone();
      opt->step();
      for (const auto& [name, shape] : c.shapes) {
        const at::Tensor& expected = theirs.at("p/" + std::to_string(step) + "/" + name);
        const double difference = (params[name] - expected).abs().max().item<double>();
        if (same_torch) {
          ASSERT_TRUE(at::equal(params[name], expected))
              << c.label << ": step " << step << ", " << name << ": largest difference " << difference;
        } else {
          const double moved = (expected - inputs[i].initial.at(name)).abs().max().item<double>();
          ASSERT_LE(difference, c.other_torch_tolerance * moved)
              << c.label << ": step " << step << ", " << name << " (torch " << out.metadata.at("torch")
              << ")";
        }
      }
    }
  }
}

/// Skips unless the streaming peers' venv has safetensors and a torch with `torch_class`.
#define REQUIRE_TORCH_OPTIMIZER(python, torch_class)                                                     \
  REQUIRE_STREAMING_VENV(python);                                                                        \
  if (std::system(                                                                                       \
          (python + " -c 'import safetensors, torch; torch.optim." + torch_class + "' > /dev/null 2>&1") \
              .c_str()) != 0) {                                                                          \
    GTEST_SKIP() << "the streaming peers' venv has no safetensors or no torch.optim." << torch_class     \
                 << ": recreate it with scripts/install-peers.sh streaming";                             \
  }

using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;
const Shapes kMatrices = {{"tall", {12, 6}}, {"wide", {5, 8}}, {"square", {7, 7}}};
const Shapes kMixed = {{"weight", {6, 4}}, {"bias", {6}}, {"kernel", {3, 2, 3, 3}}};

/// A case whose Tessera optimizer is `Opt` with `options`, over parameters of `shapes`.
template <class Opt, class Options>
Case make_case(std::string label, std::string torch_class, nlohmann::json kwargs, Options options, Shapes shapes,
               int steps, double other_torch_tolerance = 1e-4) {
  return {std::move(label),
          std::move(torch_class),
          std::move(kwargs),
          [options](const optim::NamedParameters& p) { return std::make_shared<Opt>(p, options); },
          std::move(shapes),
          steps,
          other_torch_tolerance};
}

TEST(OptimInterop, MuonIsTorchsMuonBitwiseOnTheSameTorch) {
  REQUIRE_TORCH_OPTIMIZER(python, std::string("Muon"));
  using optim::Muon;
  using optim::MuonOptions;
  expect_as_torch(
      python,
      {make_case<Muon>("defaults but the lr", "Muon", {{"lr", 0.02}}, MuonOptions().lr(0.02), kMatrices, 4, 0.25),
       make_case<Muon>("no Nesterov, match_rms_adamw", "Muon",
                       {{"lr", 0.01}, {"weight_decay", 0.05}, {"momentum", 0.9}, {"nesterov", false},
                        {"adjust_lr_fn", "match_rms_adamw"}},
                       MuonOptions().lr(0.01).weight_decay(0.05).momentum(0.9).nesterov(false).adjust_lr(
                           "match_rms_adamw"),
                       kMatrices, 4, 0.25),
       make_case<Muon>("spectral_unclamped, 3 iterations, other coefficients", "Muon",
                       {{"lr", 0.03}, {"weight_decay", 0.0}, {"ns_steps", 3}, {"ns_coefficients", {3.0, -3.2, 1.2}},
                        {"eps", 1e-5}, {"adjust_lr_fn", "spectral_unclamped"}},
                       MuonOptions().lr(0.03).weight_decay(0).ns_steps(3).ns_coefficients({3.0, -3.2, 1.2}).eps(
                           1e-5).adjust_lr("spectral_unclamped"),
                       kMatrices, 4, 0.25)});
}

TEST(OptimInterop, NAdamIsTorchsNAdamBitwiseOnTheSameTorch) {
  REQUIRE_TORCH_OPTIMIZER(python, std::string("NAdam"));
  using optim::NAdam;
  using optim::NAdamOptions;
  expect_as_torch(
      python,
      {make_case<NAdam>("defaults", "NAdam", nlohmann::json::object(), NAdamOptions(), kMixed, 12),
       make_case<NAdam>("L2 decay, other betas and momentum decay", "NAdam",
                        {{"lr", 0.01}, {"betas", {0.8, 0.95}}, {"eps", 1e-6}, {"weight_decay", 0.05},
                         {"momentum_decay", 0.02}},
                        NAdamOptions().lr(0.01).beta1(0.8).beta2(0.95).eps(1e-6).weight_decay(0.05).momentum_decay(
                            0.02),
                        kMixed, 12),
       make_case<NAdam>("decoupled decay (NAdamW)", "NAdam",
                        {{"lr", 0.003}, {"weight_decay", 0.1}, {"decoupled_weight_decay", true}},
                        NAdamOptions().lr(0.003).weight_decay(0.1).decoupled_weight_decay(true), kMixed, 12)});
}

TEST(OptimInterop, RAdamIsTorchsRAdamBitwiseOnTheSameTorchBeforeAndAfterTheRectificationStarts) {
  REQUIRE_TORCH_OPTIMIZER(python, std::string("RAdam"));
  using optim::RAdam;
  using optim::RAdamOptions;
  // With beta2 0.999 or 0.9 the rectified (Adam-like) step starts at step 6 (rho_k > 5): 12 steps cover both.
  expect_as_torch(
      python,
      {make_case<RAdam>("defaults", "RAdam", nlohmann::json::object(), RAdamOptions(), kMixed, 12),
       make_case<RAdam>("L2 decay, beta2 0.9", "RAdam",
                        {{"lr", 0.01}, {"betas", {0.85, 0.9}}, {"eps", 1e-6}, {"weight_decay", 0.05}},
                        RAdamOptions().lr(0.01).beta1(0.85).beta2(0.9).eps(1e-6).weight_decay(0.05), kMixed, 12),
       make_case<RAdam>("decoupled decay (RAdamW)", "RAdam",
                        {{"lr", 0.003}, {"weight_decay", 0.1}, {"decoupled_weight_decay", true}},
                        RAdamOptions().lr(0.003).weight_decay(0.1).decoupled_weight_decay(true), kMixed, 12)});
}

TEST(OptimInterop, AdamaxIsTorchsAdamaxBitwiseOnTheSameTorch) {
  REQUIRE_TORCH_OPTIMIZER(python, std::string("Adamax"));
  using optim::Adamax;
  using optim::AdamaxOptions;
  expect_as_torch(
      python,
      {make_case<Adamax>("defaults", "Adamax", nlohmann::json::object(), AdamaxOptions(), kMixed, 8),
       make_case<Adamax>("L2 decay, other betas and eps", "Adamax",
                         {{"lr", 0.01}, {"betas", {0.8, 0.95}}, {"eps", 1e-3}, {"weight_decay", 0.05}},
                         AdamaxOptions().lr(0.01).beta1(0.8).beta2(0.95).eps(1e-3).weight_decay(0.05), kMixed, 8)});
}

TEST(OptimInterop, AdadeltaIsTorchsAdadeltaBitwiseOnTheSameTorch) {
  REQUIRE_TORCH_OPTIMIZER(python, std::string("Adadelta"));
  using optim::Adadelta;
  using optim::AdadeltaOptions;
  expect_as_torch(python,
                  {make_case<Adadelta>("defaults", "Adadelta", nlohmann::json::object(), AdadeltaOptions(), kMixed, 8),
                   make_case<Adadelta>("L2 decay, other rho, eps and lr", "Adadelta",
                                       {{"lr", 0.5}, {"rho", 0.7}, {"eps", 1e-4}, {"weight_decay", 0.05}},
                                       AdadeltaOptions().lr(0.5).rho(0.7).eps(1e-4).weight_decay(0.05), kMixed, 8)});
}

TEST(OptimInterop, AdafactorIsTorchsAdafactorBitwiseOnTheSameTorch) {
  REQUIRE_TORCH_OPTIMIZER(python, std::string("Adafactor"));
  using optim::Adafactor;
  using optim::AdafactorOptions;
  // Matrices and the last two dimensions of a kernel factored, a vector not; lr 0.5 lets 1/sqrt(k) take over the
  // relative step from step 5 on, and d 1 clips the first steps' updates.
  expect_as_torch(
      python,
      {make_case<Adafactor>("defaults", "Adafactor", nlohmann::json::object(), AdafactorOptions(), kMixed, 8),
       make_case<Adafactor>("decay, eps1, eps2, beta2_decay, lr 0.5", "Adafactor",
                            {{"lr", 0.5}, {"beta2_decay", -0.5}, {"eps", {1e-4, 1e-2}}, {"d", 1.5},
                             {"weight_decay", 0.05}},
                            AdafactorOptions().lr(0.5).beta2_decay(-0.5).eps1(1e-4).eps2(1e-2).d(1.5).weight_decay(
                                0.05),
                            kMixed, 8),
       make_case<Adafactor>("matrices only", "Adafactor", {{"lr", 0.02}}, AdafactorOptions().lr(0.02), kMatrices, 8)});
}

}  // namespace
}  // namespace tessera
