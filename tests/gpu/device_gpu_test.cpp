// The trainer on CUDA (ctest label `gpu`; every test skips without a CUDA device): the model, batches, metrics
// and optimizer state live on the GPU, checkpoints written there load on the CPU and the other way round, the
// deferred read-back logs the same values a CPU-style loop would, non-finite losses are found by batch, and gyro
// dropout's masks are the CPU's.
// Run on the GPU machine: `ctest -L gpu`.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/gyro_dropout.h>
#include <tessera/callbacks/monitors.h>
#include <tessera/callbacks/system_metrics.h>
#include <tessera/optim/optimizer.h>

#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using testing::NanInputs;

#define REQUIRE_CUDA()                                         \
  do {                                                         \
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";      \
  } while (0)

const c10::Device kCuda(c10::kCUDA, 0);

/// A temporary file path, removed at the end of the scope.
struct TempFile {
  TempFile() : path((fs::temp_directory_path() / ("tessera-device-gpu-" + std::to_string(::getpid()) + "-" +
                                                  std::to_string(counter++) + ".ckpt"))
                        .string()) {}
  ~TempFile() { std::remove(path.c_str()); }
  std::string path;
  static inline int counter = 0;
};

Components components(const std::string& optimizer = "sgd") {
  Components c = testing::tiny_components(48, 8, 3);
  if (optimizer == "adamw") {
    c.optimizer = std::make_shared<optim::AdamW>(c.model->parameters(), optim::AdamWOptions().lr(0.01));
  }
  return c;
}

TrainerOptions options(const std::string& device, const std::string& duration = "2ep") {
  return TrainerOptions().device(device).max_duration(Time::parse(duration)).threads(1).seed(5);
}

void expect_close(const torch::nn::Module& a, const torch::nn::Module& b, double tol) {
  const auto pa = a.named_parameters(true), pb = b.named_parameters(true);
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    const at::Tensor x = pa[i].value().detach().cpu().to(at::kDouble), y = pb[i].value().detach().cpu().to(at::kDouble);
    EXPECT_LE((x - y).abs().max().item<double>(), tol) << pa[i].key();
  }
}

TEST(DeviceGpu, ModelBatchesMetricsAndOptimizerStateLiveOnTheGpu) {
  REQUIRE_CUDA();
  Components c = components("adamw");
  optim::Optimizer* opt = c.optimizer.get();
  Trainer trainer(options("cuda"), std::move(c));
  EXPECT_EQ(trainer.state().device, kCuda);
  for (const auto& p : trainer.state().model->parameters()) EXPECT_EQ(p.device(), kCuda);
  // The optimizer refers to the moved parameters themselves (Module::to replaces their data in place).
  for (const auto& p : trainer.state().model->parameters()) EXPECT_TRUE(opt->contains(p));
  trainer.fit();
  EXPECT_EQ(trainer.state().outputs.device(), kCuda);
  for (const auto& [key, slots] : opt->state()) {
    EXPECT_EQ(slots[0].device(), kCuda);
    EXPECT_TRUE(slots[2].is_cpu()) << "AdamW's step count stays on the host";
  }
  EXPECT_GT(trainer.state().metrics.at("metrics/eval/accuracy"), 0.0);
  EXPECT_TRUE(std::isfinite(trainer.state().metrics.at("loss/train/total")));
}

TEST(DeviceGpu, AutoPicksCudaAndTheResultIsCloseToTheCpuRun) {
  REQUIRE_CUDA();
  Trainer gpu(options("auto"), components());
  EXPECT_EQ(gpu.state().device, kCuda);
  gpu.fit();
  Trainer cpu(options("cpu"), components());
  cpu.fit();
  expect_close(*gpu.state().model, *cpu.state().model, 1e-3);
  EXPECT_NEAR(gpu.state().metrics.at("loss/train/total"), cpu.state().metrics.at("loss/train/total"), 1e-3);
}

TEST(DeviceGpu, CheckpointWrittenOnCudaLoadsOnTheCpuAndTheOtherWayRound) {
  REQUIRE_CUDA();
  for (const std::string from : {"cuda", "cpu"}) {
    const std::string to = from == "cuda" ? "cpu" : "cuda";
    SCOPED_TRACE(from + " -> " + to);
    TempFile file;
    Trainer first(options(from, "1ep"), components("adamw"));
    first.fit();
    first.save_checkpoint(file.path);
    const std::string saved = weights_fingerprint(*first.state().model);

    Trainer second(options(to, "2ep"), components("adamw"));
    second.load_checkpoint(file.path);
    EXPECT_EQ(weights_fingerprint(*second.state().model), saved) << "the weights arrive bit for bit";
    const c10::Device device = second.state().device;
    for (const auto& p : second.state().model->parameters()) EXPECT_EQ(p.device(), device);
    for (const auto& [key, slots] : second.state().optimizer->state()) {
      EXPECT_EQ(slots[0].device(), device);
      EXPECT_EQ(slots[1].device(), device);
      EXPECT_TRUE(slots[2].is_cpu());
    }
    second.fit();  // continues the run on the other device
    EXPECT_EQ(second.state().timestamp.epoch, 2);
    EXPECT_TRUE(std::isfinite(second.state().metrics.at("loss/train/total")));
  }
}

TEST(DeviceGpu, ResumeOnCudaIsExact) {
  REQUIRE_CUDA();
  // With deterministic kernels the same GPU repeats a run; resuming at a batch boundary must not change it.
  TempFile file;
  auto opts = options("cuda", "2ep").deterministic(true);
  Trainer whole(opts, components());
  whole.fit();
  Trainer part(TrainerOptions(opts).max_duration(Time::parse("1ep")), components());
  part.fit();
  part.save_checkpoint(file.path);
  Trainer resumed(opts, components());
  resumed.load_checkpoint(file.path);
  resumed.fit();
  EXPECT_EQ(weights_fingerprint(*resumed.state().model), weights_fingerprint(*whole.state().model));
  at::globalContext().setDeterministicAlgorithms(false, /*warn_only=*/false);
}

TEST(DeviceGpu, SurgeryAtInitEndsUpOnTheGpu) {
  REQUIRE_CUDA();
  Components c;
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(3).width(4));
  c.train_dataloader = testing::loader(testing::tiny_data(32), 8);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.05));
  c.algorithms.push_back(std::make_shared<algorithms::BlurPool>(algorithms::BlurPoolOptions().min_channels(1)));
  Trainer trainer(options("cuda", "1ep"), std::move(c));
  for (const auto& p : trainer.state().model->parameters()) EXPECT_EQ(p.device(), kCuda);
  for (const auto& b : trainer.state().model->buffers()) EXPECT_EQ(b.device(), kCuda);
  trainer.fit();
  EXPECT_TRUE(std::isfinite(trainer.state().metrics.at("loss/train/total")));
}

TEST(DeviceGpu, GyroDropoutTrainsTheSameMasksOnCudaAsOnTheCpu) {
  REQUIRE_CUDA();
  // The layer: bitwise the CPU's output (the same 0/1 masks, one multiplication).
  algorithms::GyroDropoutLayer layer(
      std::make_shared<algorithms::GyroDropoutMasks>(algorithms::GyroDropoutOptions().sigma(8).tau(3), 0));
  layer->masks()->select(7, 2);
  const at::Tensor x = at::randn({10, 6});
  EXPECT_TRUE(at::equal(layer->forward(x.to(kCuda)).cpu(), layer->forward(x)));
  // A run: the masks do not depend on the device (unlike dropout's draws), so CUDA follows the CPU closely.
  std::vector<std::shared_ptr<Model>> models;
  for (const char* device : {"cpu", "cuda"}) {
    Components c = components();
    at::manual_seed(3);
    c.model = std::make_shared<MLP>(MLPOptions().in_features(16).hidden({12}).num_classes(3).dropout(0.5));
    c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
    c.algorithms.push_back(
        std::make_shared<algorithms::GyroDropout>(algorithms::GyroDropoutOptions().sigma(4).tau(2)));
    models.push_back(c.model);
    Trainer trainer(options(device), std::move(c));
    trainer.fit();
  }
  expect_close(*models[0], *models[1], 1e-4);
}

TEST(DeviceGpu, NonfiniteLossIsNamedByBatchOrSkipped) {
  REQUIRE_CUDA();
  {
    Components c = components();
    c.algorithms.push_back(std::make_shared<NanInputs>(3));
    Trainer trainer(options("cuda").log_interval(5), std::move(c));
    try {
      trainer.fit();
      ADD_FAILURE() << "a NaN loss went unnoticed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("nan at batch 3 (epoch 0, batch 3 of the epoch), found at the next "
                                           "read-back (on cuda:0"),
                std::string::npos)
          << e.what();
    }
  }
  {
    Components c = components();
    c.algorithms.push_back(std::make_shared<NanInputs>(3));
    Trainer trainer(options("cuda").nonfinite_loss("skip").log_interval(4), std::move(c));
    trainer.fit();
    EXPECT_EQ(trainer.skipped_batches(), 1);
    EXPECT_EQ(trainer.state().optimizer->step_count(), 11);
    for (const auto& p : trainer.state().model->parameters()) EXPECT_TRUE(at::isfinite(p).all().item<bool>());
  }
}

TEST(DeviceGpu, SystemMetricsMonitorReadsEveryGpuThroughNvml) {
  REQUIRE_CUDA();
  std::string why;
  const auto gpus = callbacks::read_gpus(&why);
  ASSERT_FALSE(gpus.empty()) << why;
  EXPECT_GT(gpus[0].memory_total_bytes, 1e9);
  Components c = components();
  auto log = std::make_shared<testing::RecordingDestination>();
  c.callbacks = {std::make_shared<callbacks::SystemMetricsMonitor>(callbacks::SystemMetricsMonitorOptions().interval(2)),
                 log};
  Trainer(options("cuda", "1ep"), std::move(c)).fit();
  ASSERT_FALSE(log->metrics.empty());
  const auto& v = log->metrics.back();
  EXPECT_GT(v.at("system/gpu0/memory_used_gb"), 0.0);
  EXPECT_GT(v.at("system/gpu0/power_w"), 0.0);
  EXPECT_LE(v.at("system/gpu0/utilization_percent"), 100.0);
  EXPECT_TRUE(log->texts.empty()) << log->texts.front();
}

TEST(DeviceGpu, LambAndLarsComputeTheirTrustRatiosOnTheDeviceAsOnTheCpu) {
  REQUIRE_CUDA();
  for (const std::string kind : {"lamb", "lars"}) {
    std::vector<at::Tensor> params;
    for (const auto& device : {at::Device(at::kCPU), kCuda}) {
      at::manual_seed(4);
      at::Tensor p = at::randn({64, 32}).to(device).requires_grad_(true);
      std::unique_ptr<optim::Optimizer> opt;
      if (kind == "lamb") opt = std::make_unique<optim::Lamb>(std::vector<at::Tensor>{p}, optim::LambOptions().lr(0.01));
      else opt = std::make_unique<optim::Lars>(std::vector<at::Tensor>{p}, optim::LarsOptions().lr(0.5).weight_decay(1e-4));
      for (int step = 0; step < 3; ++step) {
        at::manual_seed(10 + step);
        p.mutable_grad() = at::randn({64, 32}).to(device);
        opt->step();
      }
      params.push_back(p.detach().cpu());
    }
    EXPECT_TRUE(at::allclose(params[0], params[1], 1e-5, 1e-6)) << kind;
  }
}

}  // namespace
}  // namespace tessera
