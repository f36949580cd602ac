// Data-parallel step time on the CPU (Gloo over loopback): 1 rank against 2, and how much of the gradient
// all-reduce the backward pass hides (buckets launched during backward against all launched after it), and what
// the trainer's one other collective per batch costs (the sum of the loss terms, a 0-d double).
//
//   build/release/benchmarks/bench_ddp [steps]      # starts its own ranks; prints one line per configuration
//
// Each rank trains an MLP 784-1024-1024-10 (1.9 M parameters, 7.5 MB of gradients, 1 MB buckets) on random data,
// per-rank batch 64, one intra-op thread per rank (as torchrun sets OMP_NUM_THREADS=1). benchmarks/bench_ddp_torch.py
// runs the same model with PyTorch's Python DDP; benchmarks/bench_ddp.sh runs both.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

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
std::pair<double, double> measure(Net& net, tessera::dist::GradSync* sync, int steps) {
  torch::optim::SGD opt(net.parameters(), torch::optim::SGDOptions(0.01));
  const at::Tensor x = at::randn({kBatch, 784});
  const at::Tensor y = at::randint(10, {kBatch}, at::kLong);
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
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double wait = sync ? sync->exposed_wait_seconds() - wait0 : 0.0;
  return {total / steps, wait / steps};
}

int worker(int steps, const std::string& out) {
  at::set_num_threads(1);
  const auto env = tessera::dist::read_environment();
  at::manual_seed(1);
  Net net;
  std::ofstream file(out, std::ios::app);
  if (!env.distributed()) {
    const auto [step, wait] = measure(net, nullptr, steps);
    file << "tessera 1 rank: " << step * 1e3 << " ms/step, " << kBatch / step << " samples/s\n";
    return 0;
  }
  auto comm = tessera::dist::Comm::create(env, tessera::dist::DistributedOptions(), c10::Device(c10::kCPU));
  tessera::dist::GradSync sync(comm, 1 << 20);
  double overlapped_step = 0.0;
  for (bool overlap : {true, false}) {
    sync.set_overlap(overlap);
    comm->barrier();
    const auto [step, wait] = measure(net, &sync, steps);
    if (overlap) overlapped_step = step;
    if (env.rank == 0) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "tessera %d ranks, all-reduce %s: %.2f ms/step, %.0f samples/s (global), exposed all-reduce "
                    "wait %.2f ms/step, %zu buckets\n",
                    env.world_size, overlap ? "during backward" : "after backward", step * 1e3,
                    kBatch * env.world_size / step, wait * 1e3, sync.num_buckets());
      file << line;
    }
  }
  // The Trainer's one collective per training batch besides the gradients': the sum of the batch's loss terms
  // (Model::loss_terms), a 0-d double, before the first backward.
  comm->barrier();
  const auto c0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) {
    at::Tensor terms = at::scalar_tensor(static_cast<double>(kBatch), at::kDouble);
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
  const int steps = argc > 1 && std::string(argv[1]) != "--worker" ? std::atoi(argv[1]) : 40;
  if (const char* out = std::getenv("BENCH_DDP_OUT")) return worker(std::atoi(std::getenv("BENCH_DDP_STEPS")), out);
  const std::string out = "/tmp/bench_ddp_" + std::to_string(::getpid()) + ".txt";
  ::setenv("BENCH_DDP_OUT", out.c_str(), 1);
  ::setenv("BENCH_DDP_STEPS", std::to_string(steps).c_str(), 1);
  int rc = worker(steps, out);  // one rank, in this process
  rc |= tessera::dist::launch_local(2, "/proc/self/exe", {}).exit_code;
  std::ifstream in(out);
  for (std::string line; std::getline(in, line);) std::printf("%s\n", line.c_str());
  std::remove(out.c_str());
  return rc;
}
