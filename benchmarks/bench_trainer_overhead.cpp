// Engine overhead: the Trainer with no algorithms against a hand-written LibTorch loop doing the same work
// (same model, same data, same batches, same optimizer maths), in one process, alternating, and the median
// ratio printed. Goal: within 2%.
//
//   ./benchmarks/bench_trainer_overhead [--steps 60] [--rounds 5] [--threads 2]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <torch/optim/sgd.h>

#include <tessera/tessera.h>

namespace {

using Clock = std::chrono::steady_clock;

struct Setup {
  int64_t steps = 60;
  int64_t batch_size = 128;
  int64_t rounds = 5;
  int64_t threads = 2;
};

std::shared_ptr<tessera::data::TensorDataset> dataset(const Setup& s) {
  return tessera::data::make_synthetic(tessera::data::SyntheticOptions()
                                           .size(s.steps * s.batch_size)
                                           .input_shape({1, 28, 28})
                                           .num_classes(10)
                                           .seed(1));
}

std::shared_ptr<tessera::CNN> model() {
  at::manual_seed(0);
  return std::make_shared<tessera::CNN>(tessera::CNNOptions().in_channels(1).num_classes(10).width(16));
}

/// The Trainer: one epoch of `steps` batches, no algorithms, no callbacks.
double run_trainer(const Setup& s, const std::shared_ptr<tessera::data::TensorDataset>& ds) {
  tessera::Components c;
  c.model = model();
  c.train_dataloader =
      std::make_shared<tessera::data::DataLoader>(ds, tessera::data::DataLoaderOptions().batch_size(s.batch_size));
  c.optimizer = std::make_shared<tessera::optim::SGD>(c.model->parameters(),
                                                      tessera::optim::SGDOptions().lr(0.05).momentum(0.9));
  tessera::Trainer trainer(tessera::TrainerOptions().max_duration(tessera::Time::parse("1ep")).threads(s.threads),
                           std::move(c));
  const auto t0 = Clock::now();
  trainer.fit();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// A hand-written loop: shuffled batches by index_select, forward, cross-entropy, backward, torch's SGD,
/// and the loss read back every step (as the trainer logs it).
double run_manual(const Setup& s, const std::shared_ptr<tessera::data::TensorDataset>& ds) {
  auto m = model();
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  at::set_num_threads(static_cast<int>(s.threads));
  const auto t0 = Clock::now();
  m->train();
  tessera::Rng rng(42, {tessera::kShuffleStream, 0});
  const auto order = rng.permutation(ds->size());
  double sink = 0;
  for (int64_t b = 0; b < s.steps; ++b) {
    std::vector<int64_t> idx(order.begin() + b * s.batch_size, order.begin() + (b + 1) * s.batch_size);
    tessera::Batch batch = ds->get_batch(idx);
    opt.zero_grad();
    at::Tensor out = m->forward(batch);
    at::Tensor loss = at::cross_entropy_loss(out, batch.target());
    loss.backward();
    opt.step();
    sink += loss.item<double>();
  }
  if (sink < -1) std::puts("");
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Setup s;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) s.steps = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rounds")) s.rounds = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) s.threads = std::atoll(argv[i + 1]);
  }
  auto ds = dataset(s);
  std::printf("trainer overhead: CNN(width 16) on 28x28 synthetic, batch %lld, %lld steps, %lld threads, %lld rounds\n",
              (long long)s.batch_size, (long long)s.steps, (long long)s.threads, (long long)s.rounds);
  run_manual(s, ds);  // warm-up
  run_trainer(s, ds);
  std::vector<double> trainer, manual, ratios;
  for (int64_t r = 0; r < s.rounds; ++r) {
    // Alternate which goes first so slow drifts of the machine affect both alike.
    double a, b;
    if (r % 2 == 0) {
      a = run_trainer(s, ds);
      b = run_manual(s, ds);
    } else {
      b = run_manual(s, ds);
      a = run_trainer(s, ds);
    }
    trainer.push_back(a);
    manual.push_back(b);
    ratios.push_back(a / b);
    std::printf("  round %lld: trainer %.3f s, hand-written %.3f s, ratio %.4f\n", (long long)r, a, b, a / b);
  }
  std::printf("median: trainer %.3f s, hand-written %.3f s, median ratio trainer/hand-written = %.4f\n",
              median(trainer), median(manual), median(ratios));
  return 0;
}
