// Mixed precision and data-parallel set-up on CUDA (ctest label `gpu`; every test skips without a CUDA device):
// the GradScaler's CUDA path (ATen's kernels) against its CPU path, amp_fp16 and amp_bf16 training close to fp32,
// an injected overflow skipped on the GPU, exact resume in both precisions, and a rank without a GPU of its own
// refused before the rendezvous. Run on the GPU machine: `ctest -L gpu` (scripts/gpu-check.sh).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <unistd.h>

#include <tessera/tessera.h>

#include "support.h"

namespace tessera {
namespace {

#define REQUIRE_CUDA()                                    \
  do {                                                    \
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

const c10::Device kCuda(c10::kCUDA, 0);

TEST(AmpGpu, GradScalerOnCudaUnscalesAndUpdatesAsOnTheCpu) {
  REQUIRE_CUDA();
  at::manual_seed(3);
  const at::Tensor big = at::randn({1000, 37}) * 65536, small = at::randn({5}) * 65536;
  at::Tensor with_inf = at::randn({4096}) * 1000;
  with_inf[4000] = std::numeric_limits<float>::infinity();
  for (const bool overflow : {false, true}) {
    std::vector<at::Tensor> on_cpu{big.clone(), small.clone()}, on_gpu{big.to(kCuda), small.to(kCuda)};
    if (overflow) {
      on_cpu.push_back(with_inf.clone());
      on_gpu.push_back(with_inf.to(kCuda));
    }
    GradScaler cpu_scaler(GradScalerOptions().growth_interval(1)), gpu_scaler(GradScalerOptions().growth_interval(1),
                                                                            kCuda);
    cpu_scaler.unscale(on_cpu);
    gpu_scaler.unscale(on_gpu);
    EXPECT_EQ(cpu_scaler.found_inf(), overflow);
    EXPECT_EQ(gpu_scaler.found_inf(), overflow);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_TRUE(at::equal(on_cpu[i], on_gpu[i].cpu())) << "unscaled tensor " << i << ", overflow " << overflow;
    }
    cpu_scaler.update();
    gpu_scaler.update();
    EXPECT_EQ(gpu_scaler.scale_value(), cpu_scaler.scale_value());
    EXPECT_EQ(gpu_scaler.scale_value(), overflow ? 32768.0 : 131072.0);
    EXPECT_EQ(gpu_scaler.growth_tracker(), cpu_scaler.growth_tracker());
  }
}

/// The source tree: the environment's TESSERA_SOURCE_DIR (a binary built on another machine), else the build's.
std::string source_dir() {
  const char* env = std::getenv("TESSERA_SOURCE_DIR");
  return env ? env : TESSERA_SOURCE_DIR;
}

/// Test accuracy after one epoch of the baseline recipe's ResNet on Fashion-MNIST, on CUDA, in `precision`.
double baseline_accuracy(const std::string& folder, const std::string& precision) {
  const Recipe recipe = Recipe::load(
      source_dir() + "/examples/recipes/fashion_mnist_baseline.yaml",
      {"max_duration=1ep", "device=cuda", "precision=" + precision, "callbacks=[]", "loggers=[]", "checkpoint={}",
       "schedulers=[{cosine: {warmup: 0.1dur}}]", "data.train.loader.workers=4",
       "data.train.dataset.fashion_mnist.folder=" + folder, "data.eval.dataset.fashion_mnist.folder=" + folder});
  auto trainer = make_trainer(recipe);
  trainer->fit();
  return trainer->state().metrics.at("metrics/test/accuracy");
}

TEST(AmpGpu, Fp16AndBf16TrainTheBaselineResNetWithinAPointOfFp32) {
  REQUIRE_CUDA();
  std::string folder = "/usr/share/datasets/fashion-mnist";
  if (const char* env = std::getenv("TESSERA_FASHION_MNIST")) folder = env;
  if (!std::filesystem::exists(folder + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST is not in " << folder << " (set TESSERA_FASHION_MNIST)";
  }
  const double fp32 = baseline_accuracy(folder, "fp32");
  const double fp16 = baseline_accuracy(folder, "amp_fp16");
  const double bf16 = baseline_accuracy(folder, "amp_bf16");
  EXPECT_GT(fp32, 0.80);
  // One point: GPU runs are not deterministic here (cuDNN picks its algorithms), so two fp32 runs already differ
  // by a few tenths after one epoch.
  EXPECT_NEAR(fp16, fp32, 0.01) << "fp32 " << fp32 << ", amp_fp16 " << fp16;
  EXPECT_NEAR(bf16, fp32, 0.01) << "fp32 " << fp32 << ", amp_bf16 " << bf16;
  std::printf("accuracy after 1 epoch on CUDA: fp32 %.4f, amp_fp16 %.4f, amp_bf16 %.4f\n", fp32, fp16, bf16);
}

TEST(AmpGpu, InjectedOverflowSkipsTheStepAndBacksOffOnCuda) {
  REQUIRE_CUDA();
  Components c = testing::tiny_components(48, 8, 4);
  c.algorithms.push_back(std::make_shared<testing::OverflowAt>(2));
  Trainer t(TrainerOptions().device("cuda").max_duration(Time::parse("6ba")).threads(1).precision("amp_fp16"),
            std::move(c));
  t.fit();
  ASSERT_NE(t.grad_scaler(), nullptr) << "amp_fp16 scales the loss by default";
  EXPECT_EQ(t.skipped_steps(), 1);
  EXPECT_EQ(t.grad_scaler()->scale_value(), 32768.0);
  EXPECT_EQ(t.grad_scaler()->growth_tracker(), 3) << "3 clean steps after the overflow";
  EXPECT_EQ(t.state().timestamp.batch, 6);
}

TEST(AmpGpu, ResumeInAmpFp16AndAmpBf16OnCudaIsBitwise) {
  REQUIRE_CUDA();
  const std::string file =
      (std::filesystem::temp_directory_path() / ("tessera-amp-gpu-" + std::to_string(::getpid()) + ".ckpt")).string();
  for (const std::string precision : {"amp_fp16", "amp_bf16"}) {
    SCOPED_TRACE(precision);
    auto opts = TrainerOptions().device("cuda").max_duration(Time::parse("2ep")).threads(1).seed(5).deterministic(true)
                    .precision(precision);
    Trainer whole(opts, testing::tiny_components());
    whole.fit();
    Trainer part(TrainerOptions(opts).max_duration(Time::parse("1ep")), testing::tiny_components());
    part.fit();
    part.save_checkpoint(file);
    Trainer resumed(opts, testing::tiny_components());
    resumed.load_checkpoint(file);
    resumed.fit();
    EXPECT_EQ(weights_fingerprint(*resumed.state().model), weights_fingerprint(*whole.state().model));
    if (whole.grad_scaler()) {
      ASSERT_NE(resumed.grad_scaler(), nullptr);
      EXPECT_EQ(resumed.grad_scaler()->scale_value(), whole.grad_scaler()->scale_value());
      EXPECT_EQ(resumed.grad_scaler()->growth_tracker(), whole.grad_scaler()->growth_tracker());
    }
  }
  std::filesystem::remove(file);
  at::globalContext().setDeterministicAlgorithms(false, /*warn_only=*/false);
}

/// Sets environment variables for the scope, then removes them.
struct ScopedEnv {
  explicit ScopedEnv(std::vector<std::pair<std::string, std::string>> vars) : vars_(std::move(vars)) {
    for (const auto& [k, v] : vars_) ::setenv(k.c_str(), v.c_str(), 1);
  }
  ~ScopedEnv() {
    for (const auto& [k, v] : vars_) ::unsetenv(k.c_str());
  }
  std::vector<std::pair<std::string, std::string>> vars_;
};

TEST(DistributedGpu, ARankWithoutAGpuOfItsOwnIsRefusedBeforeTheRendezvous) {
  REQUIRE_CUDA();
  // The last rank of a machine with one rank more than it has GPUs (2 ranks on a one-GPU machine).
  const std::string gpus = std::to_string(at::getNumGPUs()), ranks = std::to_string(at::getNumGPUs() + 1);
  const ScopedEnv env({{"RANK", gpus},
                       {"WORLD_SIZE", ranks},
                       {"LOCAL_RANK", gpus},
                       {"LOCAL_WORLD_SIZE", ranks},
                       {"MASTER_ADDR", "127.0.0.1"},
                       {"MASTER_PORT", "1"}});  // never reached: the refusal comes first
  const std::string message = testing::input_error_of([] {
    Trainer(TrainerOptions().device("cuda").max_duration(Time::parse("1ba")), testing::tiny_components());
  });
  EXPECT_NE(message.find("local rank " + gpus + " would train on cuda:" + gpus), std::string::npos) << message;
  EXPECT_NE(message.find("start at most " + gpus + " rank"), std::string::npos) << message;
}

}  // namespace
}  // namespace tessera
