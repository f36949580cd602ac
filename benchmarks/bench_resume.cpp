// Resume latency: seconds from constructing a Trainer that autoresumes from a checkpoint to the end of its
// first resumed step, for a checkpoint at 0% and at 90% of one large synthetic epoch. The data loader starts
// at any (epoch, batch) position directly, so the two should be about equal; a loader that replayed the
// epoch up to the checkpoint would pay the "replay" time printed beside them (producing those batches
// without training). Also prints the checkpoint save time and file size.
//
//   ./benchmarks/bench_resume [--examples 1500000] [--batch 256] [--rounds 3] [--threads 1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include <tessera/tessera.h>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Setup {
  int64_t examples = 1500000;
  int64_t batch_size = 256;
  int64_t rounds = 3;
  int64_t threads = 1;
};

/// Records when the first training batch of the run ends, and stops training there.
class FirstStep : public tessera::Callback {
 public:
  std::string name() const override { return "first_step"; }
  void run_event(tessera::Event event, tessera::State& state, tessera::Logger&) override {
    if (event != tessera::Event::BatchEnd || at_) return;
    at_ = Clock::now();
    batch_ = state.timestamp.batch;
    state.stop_training();
  }
  std::optional<Clock::time_point> at_;
  int64_t batch_ = -1;
};

/// Shuffled batches of 8x8 images, randomly cropped (padding 2) and flipped, made on the caller's thread.
std::shared_ptr<tessera::data::DataLoader> loader(const Setup& s, const std::shared_ptr<tessera::data::TensorDataset>& ds) {
  return std::make_shared<tessera::data::DataLoader>(
      ds, tessera::data::DataLoaderOptions().batch_size(s.batch_size).workers(0),
      std::vector<std::shared_ptr<const tessera::data::BatchTransform>>{
          std::make_shared<tessera::data::RandomCrop>(tessera::data::RandomCropOptions().padding(2)),
          std::make_shared<tessera::data::HorizontalFlip>(tessera::data::HorizontalFlipOptions())});
}

/// A small MLP on the images, SGD with momentum.
tessera::Components components(const Setup& s, const std::shared_ptr<tessera::data::TensorDataset>& ds) {
  tessera::Components c;
  at::manual_seed(0);
  c.model = std::make_shared<tessera::MLP>(tessera::MLPOptions().in_features(64).hidden({64, 64}).num_classes(10));
  c.train_dataloader = loader(s, ds);
  c.optimizer = std::make_shared<tessera::optim::SGD>(c.model->parameters(),
                                                      tessera::optim::SGDOptions().lr(0.05).momentum(0.9));
  return c;
}

tessera::TrainerOptions trainer_options(const Setup& s, const std::string& max_duration) {
  return tessera::TrainerOptions().max_duration(tessera::Time::parse(max_duration)).threads(s.threads).seed(7)
      .run_dir((fs::temp_directory_path() / "tessera_bench_resume_run").string());
}

/// A checkpoint at batch `batch` of the epoch (0 = before training), written by save_checkpoint to `path`.
/// Returns the save time in seconds.
double make_checkpoint(const Setup& s, const std::shared_ptr<tessera::data::TensorDataset>& ds, int64_t batch,
                       const std::string& path) {
  tessera::Trainer trainer(trainer_options(s, std::to_string(std::max<int64_t>(batch, 1)) + "ba"), components(s, ds));
  if (batch > 0) {
    const auto t0 = Clock::now();
    trainer.fit();
    std::printf("  trained %lld batches to make the checkpoint in %.2f s\n", (long long)batch, seconds_since(t0));
  }
  const auto t0 = Clock::now();
  trainer.save_checkpoint(path);
  return seconds_since(t0);
}

/// Seconds from constructing a Trainer that autoresumes from `checkpoint` (alone in a fresh folder) to the
/// end of its first step; checks that the step was the one after the checkpoint.
double time_to_first_step(const Setup& s, const std::shared_ptr<tessera::data::TensorDataset>& ds,
                          const std::string& checkpoint, int64_t checkpoint_batch, const fs::path& folder) {
  fs::remove_all(folder);
  fs::create_directories(folder);
  fs::copy_file(checkpoint, folder / fs::path(checkpoint).filename());
  tessera::Components c = components(s, ds);
  auto first = std::make_shared<FirstStep>();
  c.callbacks.push_back(first);
  const auto t0 = Clock::now();
  tessera::Trainer trainer(trainer_options(s, "1ep"), std::move(c),
                           tessera::CheckpointOptions().folder(folder.string()).interval(tessera::Time::parse("1ep"))
                               .autoresume(true));
  trainer.fit();
  if (!first->at_ || first->batch_ != checkpoint_batch + 1) {
    std::fprintf(stderr, "bench_resume: the first resumed step was batch %lld, expected %lld\n",
                 (long long)first->batch_, (long long)(checkpoint_batch + 1));
    std::exit(1);
  }
  return std::chrono::duration<double>(*first->at_ - t0).count();
}

/// What a replaying loader would pay: producing the first `batches` batches of the epoch, without training.
double replay_seconds(const Setup& s, const std::shared_ptr<tessera::data::TensorDataset>& ds, int64_t batches) {
  const auto replaying = loader(s, ds);
  const auto t0 = Clock::now();
  replaying->start_epoch(7, 0, 0);
  for (int64_t b = 0; b < batches; ++b) {
    if (!replaying->next()) break;
  }
  return seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  Setup s;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--examples")) s.examples = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch")) s.batch_size = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rounds")) s.rounds = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) s.threads = std::atoll(argv[i + 1]);
  }
  const auto t_all = Clock::now();
  at::set_num_threads(static_cast<int>(s.threads));
  const int64_t batches = (s.examples + s.batch_size - 1) / s.batch_size;
  const int64_t at90 = batches * 9 / 10;
  std::printf("resume latency: MLP(64-64-64-10) on %lld synthetic 8x8 examples (random crop, flip), batch %lld = %lld batches per epoch; "
              "checkpoints at batch 0 and %lld (90%%); %lld threads, %lld rounds\n",
              (long long)s.examples, (long long)s.batch_size, (long long)batches, (long long)at90,
              (long long)s.threads, (long long)s.rounds);
  const auto ds = tessera::data::make_synthetic(
      tessera::data::SyntheticOptions().size(s.examples).input_shape({1, 8, 8}).num_classes(10).seed(1));
  std::printf("  data made in %.1f s\n", seconds_since(t_all));

  const fs::path dir = fs::temp_directory_path() / "tessera_bench_resume";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string ck0 = (dir / "ep0-ba0.ckpt").string(), ck90 = (dir / ("ep0-ba" + std::to_string(at90) + ".ckpt")).string();
  const double save0 = make_checkpoint(s, ds, 0, ck0);
  const double save90 = make_checkpoint(s, ds, at90, ck90);
  std::printf("checkpoint save: %.4f s (batch 0), %.4f s (batch %lld); file size %lld bytes\n", save0, save90,
              (long long)at90, (long long)fs::file_size(ck90));
  const double replay = replay_seconds(s, ds, at90);
  std::printf("replay: producing the %lld batches before the 90%% checkpoint takes %.3f s\n", (long long)at90, replay);

  time_to_first_step(s, ds, ck0, 0, dir / "warmup");  // warm-up
  std::vector<double> t0s, t90s, ratios;
  for (int64_t r = 0; r < s.rounds; ++r) {
    // Alternate which goes first so slow drifts of the machine affect both alike.
    double a, b;
    if (r % 2 == 0) {
      a = time_to_first_step(s, ds, ck0, 0, dir / "resume0");
      b = time_to_first_step(s, ds, ck90, at90, dir / "resume90");
    } else {
      b = time_to_first_step(s, ds, ck90, at90, dir / "resume90");
      a = time_to_first_step(s, ds, ck0, 0, dir / "resume0");
    }
    t0s.push_back(a);
    t90s.push_back(b);
    ratios.push_back(b / a);
    std::printf("  round %lld: resume at 0%% %.4f s, at 90%% %.4f s, ratio 90%%/0%% %.3f\n", (long long)r, a, b, b / a);
  }
  std::printf("median: resume at 0%% %.4f s, at 90%% %.4f s, median ratio 90%%/0%% = %.3f (replaying instead: +%.3f s)\n",
              median(t0s), median(t90s), median(ratios), replay);
  fs::remove_all(dir);
  fs::remove_all(fs::temp_directory_path() / "tessera_bench_resume_run");
  std::printf("total bench time %.1f s\n", seconds_since(t_all));
  return 0;
}
