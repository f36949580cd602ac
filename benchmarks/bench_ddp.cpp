// Data-parallel step time (Gloo over loopback on the CPU by default): 1 rank against N, and how much of the
// gradient all-reduce the backward pass hides (buckets launched during backward against all launched after it),
// and what the trainer's one other collective per batch costs (the sum of the loss terms, a 0-d double).
//
//   build/release/benchmarks/bench_ddp [steps] [--device cpu|cuda] [--backend gloo|nccl] [--nproc N]
//
// Starts its own ranks; prints one line per configuration. With --device cuda each rank trains on GPU
// LOCAL_RANK modulo the visible GPUs (on a one-GPU machine every rank shares it: NCCL refuses that, Gloo takes it).
//
// Each rank trains an MLP 784-1024-1024-10 (1.9 M parameters, 7.5 MB of gradients, 1 MB buckets) on random data,
// per-rank batch 64, one intra-op thread per rank (as torchrun sets OMP_NUM_THREADS=1). benchmarks/bench_ddp_torch.py
// runs the same model with PyTorch's Python DDP; benchmarks/bench_ddp.sh runs both.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <tessera/distributed/comm.h>
#include <tessera/distributed/grad_sync.h>
#include <tessera/distributed/launcher.h>

namespace {

constexpr int64_t kBatch = 64;

struct Net : torch::nn::Module {
  Net()
      : a(register_module("a", torch::nn::Linear(784, 1024))),
        b(register_module("b", torch::nn::Linear(1024, 1024))),
        c(register_module("c", torch::nn::Linear(1024, 10))) {}
  at::Tensor forward(const at::Tensor& x) { return c(at::relu(b(at::relu(a(x))))); }
  torch::nn::Linear a, b, c;
};

/// Mean step time (s) and exposed all-reduce wait per step (s) over `steps` steps after 5 warm-up steps.
std::pair<double, double> measure(Net& net, tessera::dist::GradSync* sync, int steps, const c10::Device& device) {
  torch::optim::SGD opt(net.parameters(), torch::optim::SGDOptions(0.01));
  const at::Tensor x = at::randn({kBatch, 784}).to(device);
  const at::Tensor y = at::randint(10, {kBatch}, at::kLong).to(device);
  std::vector<at::Tensor> trainable = net.parameters();
  double wait0 = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps + 5; ++i) {
    if (i == 5) {
      t0 = std::chrono::steady_clock::now();
      wait0 = sync ? sync->exposed_wait_seconds() : 0.0;
    }
    opt.zero_grad();
    at::Tensor loss = at::cross_entropy_loss(net.forward(x), y);
    if (sync) {
      sync->prepare(trainable);
      sync->arm(true);
    }
    loss.backward();
    if (sync) sync->finish();
    opt.step();
    if (i == steps + 4) (void)net.c->bias.sum().item<float>();  // waits for the device's queued work
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double wait = sync ? sync->exposed_wait_seconds() - wait0 : 0.0;
  return {total / steps, wait / steps};
}

struct Setup {
  int steps = 40;
  std::string device = "cpu";
  std::string backend = "gloo";
  int nproc = 2;
};

int worker(const Setup& s, const std::string& out) {
  at::set_num_threads(1);
  const auto env = tessera::dist::read_environment();
  const c10::Device device = s.device == "cuda"
                                 ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(
                                                               env.local_rank % std::max<int64_t>(1, at::getNumGPUs())))
                                 : c10::Device(c10::kCPU);
  at::manual_seed(1);
  Net net;
  net.to(device);
  const int steps = s.steps;
  std::ofstream file(out, std::ios::app);
  if (!env.distributed()) {
    const auto [step, wait] = measure(net, nullptr, steps, device);
    file << "tessera 1 rank on " << s.device << ": " << step * 1e3 << " ms/step, " << kBatch / step << " samples/s\n";
    return 0;
  }
  auto comm = tessera::dist::Comm::create(env, tessera::dist::DistributedOptions().backend(s.backend), device);
  tessera::dist::GradSync sync(comm, 1 << 20);
  double overlapped_step = 0.0;
  for (bool overlap : {true, false}) {
    sync.set_overlap(overlap);
    comm->barrier();
    const auto [step, wait] = measure(net, &sync, steps, device);
    if (overlap) overlapped_step = step;
    if (env.rank == 0) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "tessera %d ranks (%s, %s), all-reduce %s: %.2f ms/step, %.0f samples/s (global), exposed "
                    "all-reduce wait %.2f ms/step, %zu buckets\n",
                    env.world_size, s.device.c_str(), comm->backend().c_str(), overlap ? "during backward" : "after backward", step * 1e3,
                    kBatch * env.world_size / step, wait * 1e3, sync.num_buckets());
      file << line;
    }
  }
  // The Trainer's one collective per training batch besides the gradients': the sum of the batch's loss terms
  // (Model::loss_terms), a 0-d double, before the first backward.
  comm->barrier();
  const auto c0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) {
    at::Tensor terms = at::scalar_tensor(static_cast<double>(kBatch), at::kDouble).to(device);
    comm->all_reduce_sum(terms, "loss terms");
  }
  const double count = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count() / steps;
  if (env.rank == 0) {
    char line[256];
    std::snprintf(line, sizeof line,
                  "tessera %d ranks, the loss terms' all-reduce (one 0-d double per batch): %.3f ms, %.1f%% of the "
                  "step with the all-reduce during backward\n",
                  env.world_size, count * 1e3, 100.0 * count / overlapped_step);
    file << line;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Setup s;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const bool has_value = i + 1 < args.size();
    if (args[i] == "--device" && has_value) {
      s.device = args[++i];
    } else if (args[i] == "--backend" && has_value) {
      s.backend = args[++i];
    } else if (args[i] == "--nproc" && has_value) {
      s.nproc = std::atoi(args[++i].c_str());
    } else if (i == 0 && std::atoi(args[i].c_str()) > 0) {
      s.steps = std::atoi(args[i].c_str());
    } else {
      std::fprintf(stderr,
                   "bench_ddp: unknown argument \"%s\"; usage: bench_ddp [steps] [--device cpu|cuda] "
                   "[--backend gloo|nccl] [--nproc N]\n",
                   args[i].c_str());
      return 2;
    }
  }
  if (s.device == "cuda" && !at::hasCUDA()) {
    std::fprintf(stderr, "bench_ddp: --device cuda, but no CUDA device is visible\n");
    return 2;
  }
  if (const char* out = std::getenv("BENCH_DDP_OUT")) return worker(s, out);
  const std::string out = "/tmp/bench_ddp_" + std::to_string(::getpid()) + ".txt";
  ::setenv("BENCH_DDP_OUT", out.c_str(), 1);
  int rc = worker(s, out);  // one rank, in this process
  rc |= tessera::dist::launch_local(s.nproc, "/proc/self/exe", args).exit_code;
  std::ifstream in(out);
  for (std::string line; std::getline(in, line);) std::printf("%s\n", line.c_str());
  std::remove(out.c_str());
  return rc;
}
