// Data-parallel training on the CPU: Gloo over loopback, 1, 2 and 4 ranks started by the launcher of
// `tessera-run --nproc`. The ranks are this test binary itself, running DistributedWorker.Run (skipped unless
// the launcher's environment and TESSERA_TEST_DDP_OUT are set): it trains the recipe of TESSERA_TEST_DDP_RECIPE
// and records, per batch, the weights' fingerprint and the examples this rank got.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/serialize.h>

#include <tessera/data/mds.h>
#include <tessera/distributed/comm.h>
#include <tessera/distributed/environment.h>
#include <tessera/distributed/launcher.h>
#include <tessera/distributed/sync_batch_norm.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
#include <tessera/trainer.h>

#include "../support.h"

namespace fs = std::filesystem;
using tessera::dist::Environment;
using tessera::dist::read_environment;

namespace {

// ---------------------------------------------------------------------------------------------------------
// The environment

std::function<std::optional<std::string>(const std::string&)> vars(std::map<std::string, std::string> values) {
  return [values](const std::string& name) -> std::optional<std::string> {
    auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

std::string input_error(const std::map<std::string, std::string>& values) {
  try {
    read_environment(vars(values));
  } catch (const tessera::InputError& e) {
    return e.what();
  }
  return "";
}

TEST(DistributedEnvironment, NoLauncherIsOneProcess) {
  const Environment env = read_environment(vars({}));
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.rank, 0);
  EXPECT_FALSE(env.distributed());
  EXPECT_EQ(env.launcher, "none");
}

TEST(DistributedEnvironment, Torchrun) {
  const Environment env = read_environment(vars({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                                                 {"LOCAL_WORLD_SIZE", "2"}, {"MASTER_ADDR", "10.0.0.5"},
                                                 {"MASTER_PORT", "29400"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                                 {"TORCHELASTIC_RESTART_COUNT", "2"}}));
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "10.0.0.5");
  EXPECT_EQ(env.master_port, 29400);
  EXPECT_TRUE(env.agent_store);
  EXPECT_EQ(env.restart_count, 2);
  EXPECT_EQ(env.launcher, "torchrun");
}

TEST(DistributedEnvironment, SlurmMasterFromTheStepNodeList) {
  const Environment env = read_environment(vars({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                                                 {"SLURM_NTASKS_PER_NODE", "4"},
                                                 {"SLURM_STEP_NODELIST", "gpu[007-010,12],login1"},
                                                 {"SLURM_JOB_NODELIST", "other[1-9]"}}));
  EXPECT_EQ(env.launcher, "slurm");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.master_addr, "gpu007");  // zero padding kept
  EXPECT_EQ(env.master_port, 29500);
  // MASTER_ADDR and MASTER_PORT win over the node list.
  const Environment given = read_environment(vars({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"},
                                                   {"SLURM_JOB_NODELIST", "n[1-2]"}, {"MASTER_ADDR", "head"},
                                                   {"MASTER_PORT", "1234"}}));
  EXPECT_EQ(given.master_addr, "head");
  EXPECT_EQ(given.master_port, 1234);
}

TEST(DistributedEnvironment, FirstSlurmHost) {
  EXPECT_EQ(tessera::dist::first_slurm_host("node[01-04,07],gpu7"), "node01");
  EXPECT_EQ(tessera::dist::first_slurm_host("a,b"), "a");
  EXPECT_EQ(tessera::dist::first_slurm_host("single"), "single");
  EXPECT_EQ(tessera::dist::first_slurm_host("rack[3-4]-n[1-2]"), "rack3-n[1-2]");
  EXPECT_THROW(tessera::dist::first_slurm_host("node[01-04"), tessera::InputError);
  EXPECT_THROW(tessera::dist::first_slurm_host(""), tessera::InputError);
}

TEST(Launcher, ARankEndedByASignalIsNamedWithWhatTheSignalUsuallyMeans) {
  // Rank 1 aborts (as NCCL's watchdog aborts a rank) after a line of output; rank 0 would wait for a minute and is
  // stopped. The launcher returns the aborted rank and its signal, and its last line says what happened.
  ::testing::internal::CaptureStderr();
  const auto result = tessera::dist::launch_local(
      2, "/bin/sh", {"-c", "if [ \"$RANK\" = 1 ]; then echo about to abort >&2; kill -ABRT $$; fi; exec sleep 60"}, 5.0);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(result.failed_rank, 1);
  EXPECT_EQ(result.signal, SIGABRT);
  EXPECT_EQ(result.exit_code, 128 + SIGABRT);
  EXPECT_NE(err.find("[rank 1] about to abort"), std::string::npos) << err;
  EXPECT_NE(err.find("tessera-run: rank 1 of 2 was ended by signal 6 (SIGABRT), exit code 134: aborted by an error "
                     "it could not report"),
            std::string::npos)
      << err;
  EXPECT_EQ(tessera::dist::describe_rank_failure(0, 4, 137, SIGKILL),
            "rank 0 of 4 was ended by signal 9 (SIGKILL), exit code 137: killed from outside the run, or by the "
            "kernel's out-of-memory killer (dmesg names it); its last output is above, prefixed [rank 0]");
  EXPECT_EQ(tessera::dist::describe_rank_failure(1, 2, 139, SIGSEGV),
            "rank 1 of 2 was ended by signal 11 (SIGSEGV), exit code 139: crashed in native code; its last output is "
            "above, prefixed [rank 1]");
  EXPECT_EQ(tessera::dist::describe_rank_failure(1, 2, 2, 0),
            "rank 1 of 2 failed with exit code 2 (its error is above, prefixed [rank 1])");
}

TEST(DistributedEnvironment, BadValuesAreClearErrors) {
  const std::map<std::string, std::string> base{{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
  auto with = [&](std::map<std::string, std::string> more) {
    more.insert(base.begin(), base.end());
    return more;
  };
  EXPECT_EQ(input_error(with({{"RANK", "2"}, {"WORLD_SIZE", "2"}})),
            "distributed environment: RANK=2 but WORLD_SIZE=2; expected a rank from 0 to 1");
  EXPECT_EQ(input_error(with({{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}})),
            "distributed environment: SLURM_PROCID=4 but SLURM_NTASKS=4; expected a rank from 0 to 3");
  EXPECT_EQ(input_error(with({{"RANK", "0"}})),
            "distributed environment: RANK is set but WORLD_SIZE is not; a launcher (torchrun, tessera-run --nproc) "
            "sets both, or neither for one process");
  EXPECT_EQ(input_error(with({{"RANK", "x"}, {"WORLD_SIZE", "2"}})),
            "distributed environment: RANK=\"x\" is not valid; expected a rank >= 0");
  EXPECT_EQ(input_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}),
            "distributed environment: MASTER_PORT=\"70000\" is not valid; expected a TCP port 1-65535");
  EXPECT_EQ(input_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}),
            "distributed environment: WORLD_SIZE=2 but MASTER_ADDR is not set; expected the address of rank 0 "
            "(torchrun sets it)");
  EXPECT_EQ(input_error(with({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}})),
            "distributed environment: LOCAL_RANK=2 but LOCAL_WORLD_SIZE=2; expected a local rank from 0 to 1");
}

TEST(DistributedBuild, GlooIsInTheBuildWhereGloosHeadersAreInstalled) {
  // The multi-rank tests below skip on a build without Gloo; this keeps that from passing unnoticed where
  // libgloo-dev is installed (scripts/install-deps.sh installs it for both toolchains).
  if (!fs::exists("/usr/include/gloo/config.h")) GTEST_SKIP() << "no gloo headers installed (Debian: libgloo-dev)";
  EXPECT_TRUE(tessera::dist::gloo_available())
      << "gloo's headers are installed but CMake left Gloo out (see the 'Tessera: ... Gloo' lines of the configure "
         "output and <build>/gloo_check.log)";
}

// ---------------------------------------------------------------------------------------------------------
// The worker (one rank)

std::string env_or(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v == nullptr ? fallback : std::string(v);
}

/// Per batch: "<batch> <fingerprint> <rows>", rows = "target:sum-of-input-row-as-hex-float" of this rank's share;
/// per evaluation batch, into `eval_path`: "<batch> <fingerprint>" of the weights evaluated.
class Recorder : public tessera::Callback {
 public:
  Recorder(std::string path, const std::string& eval_path, int64_t kill_at)
      : out_(path, std::ios::app), evals_(eval_path, std::ios::app), kill_at_(kill_at) {}
  std::string name() const override { return "test_recorder"; }
  void run_event(tessera::Event event, tessera::State& s, tessera::Logger&) override {
    if (event == tessera::Event::AfterDataloader) {
      batch_ = s.timestamp.batch;
      rows_.clear();
      const at::Tensor sums = s.batch.input().flatten(1).to(at::kDouble).sum(1);
      // A class per example, or the sum of its tokens' classes (language models: targets [N, S]).
      const at::Tensor targets = s.batch.target().reshape({s.batch.target().size(0), -1}).sum(1);
      for (int64_t i = 0; i < targets.size(0); ++i) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%lld:%a", static_cast<long long>(targets[i].item<int64_t>()),
                      sums[i].item<double>());
        rows_ += (i ? "," : "") + std::string(buf);
      }
    } else if (event == tessera::Event::BatchEnd) {
      out_ << batch_ << " " << tessera::weights_fingerprint(*s.model) << " " << rows_ << "\n" << std::flush;
      if (kill_at_ >= 0 && s.timestamp.batch == kill_at_) ::raise(SIGKILL);
    } else if (event == tessera::Event::EvalBeforeForward) {
      evals_ << s.timestamp.batch << " " << tessera::weights_fingerprint(*s.model) << "\n" << std::flush;
    }
  }

 private:
  std::ofstream out_, evals_;
  int64_t kill_at_;
  int64_t batch_ = 0;
  std::string rows_;
};

TEST(DistributedWorker, Run) {
  const std::string out = env_or("TESSERA_TEST_DDP_OUT");
  if (out.empty() || env_or("RANK").empty()) GTEST_SKIP() << "runs only as a rank started by the distributed tests";
  const int rank = std::stoi(env_or("RANK"));
  std::vector<std::string> overrides;
  std::stringstream list(env_or("TESSERA_TEST_DDP_OVERRIDES"));
  for (std::string item; std::getline(list, item, ';');) {
    if (!item.empty()) overrides.push_back(item);
  }
  const auto recipe = tessera::Recipe::load(env_or("TESSERA_TEST_DDP_RECIPE"), overrides);
  tessera::Run run = tessera::build_run(recipe);
  const int64_t kill_at = env_or("TESSERA_TEST_DDP_KILL_RANK") == std::to_string(rank)
                              ? std::stoll(env_or("TESSERA_TEST_DDP_KILL_AT", "-1"))
                              : -1;
  // Faults on one rank only: an out-of-memory error above a microbatch size, a loss whose gradients overflow.
  if (env_or("TESSERA_TEST_DDP_OOM_RANK") == std::to_string(rank)) {
    ::setenv("TESSERA_TEST_OOM_ABOVE", env_or("TESSERA_TEST_DDP_OOM_ABOVE").c_str(), 1);
  }
  if (env_or("TESSERA_TEST_DDP_OVERFLOW_RANK") == std::to_string(rank)) {
    run.components.algorithms.push_back(
        std::make_shared<tessera::testing::OverflowAt>(std::stoll(env_or("TESSERA_TEST_DDP_OVERFLOW_AT"))));
  }
  run.components.callbacks.push_back(
      std::make_shared<Recorder>(out + "/rank" + std::to_string(rank) + ".txt",
                                 out + "/evals" + std::to_string(rank) + ".txt", kill_at));
  try {
    tessera::Trainer trainer(run.trainer, std::move(run.components), run.checkpoint, recipe.text());
    trainer.fit();
    std::vector<at::Tensor> params;  // then the buffers
    for (const auto& p : trainer.state().model->parameters()) params.push_back(p.detach().clone());
    for (const auto& b : trainer.state().model->buffers()) params.push_back(b.detach().clone());
    torch::save(params, out + "/final" + std::to_string(rank) + ".pt");
  } catch (const std::exception& e) {
    std::ofstream(out + "/error" + std::to_string(rank) + ".txt") << e.what();
    throw;
  }
}

// ---------------------------------------------------------------------------------------------------------
// The runs

struct Line {
  std::string fingerprint, rows;
};

/// batch -> line of one rank's record (a batch recorded twice, before a kill and after the resume: the last).
std::map<int64_t, Line> read_record(const fs::path& path) {
  std::map<int64_t, Line> out;
  std::ifstream in(path);
  int64_t batch = 0;
  Line line;
  while (in >> batch >> line.fingerprint >> line.rows) out[batch] = line;
  return out;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The overrides of the two-rank runs with (nearly) every algorithm: `model` on 16 global batches of 16x16 images,
/// with every algorithm that acts within such a run (CutMix, which cannot run with MixUp, left out) and `extra`.
std::string every_algorithm_setup(const std::string& model, const std::string& extra) {
  return "model=" + model + ";max_duration=16ba;"
         "data.train.dataset.synthetic.input_shape=[1, 16, 16];data.eval.dataset.synthetic.input_shape=[1, 16, 16];"
         "algorithms=[{blurpool: {min_channels: 1}}, {label_smoothing: {smoothing: 0.1}}, "
         "{selective_backprop: {start: 0, end: 1, keep: 0.5, interrupt: 2}}, "
         "{progressive_resizing: {initial_scale: 0.5, delay_fraction: 0, finetune_fraction: 0.25}}, "
         "{layer_freezing: {freeze_start: 0.1, freeze_level: 1}}, {gradient_clipping: {clipping_threshold: 0.5}}, "
         "{ema: {half_life: 4ba, ema_start: 0.25dur}}, channels_last, {mixup: {alpha: 1}}, {cutout: {num_holes: 2}}, colout, " +
         extra +
         ", {squeeze_excite: {min_channels: 8, latent_channels: 4}}, "
         "{factorize: {min_channels: 8, latent_channels: 0.25, min_features: 4, latent_features: 2}}, "
         "weight_standardization, "
         "{swa: {swa_start: 2ba, swa_end: 12ba, update_interval: 1ba, schedule_swa_lr: true, anneal_steps: 2}}];";
}

class Distributed : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!tessera::dist::gloo_available()) {
      GTEST_SKIP() << "this build has no Gloo process group (docs/distributed.md, Builds)";
    }
    dir_ = fs::temp_directory_path() /
           ("tessera-ddp-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    recipe_ = (dir_ / "ddp.yaml").string();
    std::ofstream(recipe_) << R"(# tiny data-parallel run: 8 global batches of 32
max_duration: 8ba
seed: 5
threads: 1
run_dir: )" << (dir_ / "run").string()
                           << R"(
model:
  mlp: {hidden: [16]}
data:
  train:
    dataset: {synthetic: {size: 256, input_shape: [1, 4, 4], num_classes: 3, noise: 0.5, seed: 2}}
    loader: {batch_size: 32, workers: 0}
  eval:
    label: test
    dataset: {synthetic: {size: 90, input_shape: [1, 4, 4], num_classes: 3, noise: 0.5, seed: 4}}
    loader: {batch_size: 45, shuffle: false, workers: 0}
    metrics: [accuracy, cross_entropy]
optimizer:
  sgd: {lr: 0.1, momentum: 0.9}
distributed: {timeout: 30, connect_timeout: 30}
)";
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  /// Launches `nproc` ranks of the worker writing into `out` (a folder under the test's).
  tessera::dist::LaunchResult launch(int nproc, const std::string& out, const std::string& overrides = "",
                                     int kill_rank = -1, int kill_at = -1) {
    fs::create_directories(dir_ / out);
    ::setenv("TESSERA_TEST_DDP_OUT", (dir_ / out).c_str(), 1);
    ::setenv("TESSERA_TEST_DDP_RECIPE", recipe_.c_str(), 1);
    ::setenv("TESSERA_TEST_DDP_OVERRIDES", overrides.c_str(), 1);
    ::setenv("TESSERA_TEST_DDP_KILL_RANK", std::to_string(kill_rank).c_str(), 1);
    ::setenv("TESSERA_TEST_DDP_KILL_AT", std::to_string(kill_at).c_str(), 1);
    ::unsetenv("MASTER_PORT");
    auto result = tessera::dist::launch_local(nproc, "/proc/self/exe", {"--gtest_filter=DistributedWorker.Run"}, 5.0);
    ::unsetenv("TESSERA_TEST_DDP_OUT");
    return result;
  }
  /// launch() with a fault on one rank (TESSERA_TEST_DDP_OOM_* or TESSERA_TEST_DDP_OVERFLOW_*), for this launch only.
  tessera::dist::LaunchResult launch_with_fault(const std::map<std::string, std::string>& fault, int nproc,
                                                const std::string& out, const std::string& overrides) {
    for (const auto& [name, value] : fault) ::setenv(name.c_str(), value.c_str(), 1);
    auto result = launch(nproc, out, overrides);
    for (const auto& [name, value] : fault) ::unsetenv(name.c_str());
    return result;
  }
  std::map<int64_t, Line> record(const std::string& out, int rank) {
    return read_record(dir_ / out / ("rank" + std::to_string(rank) + ".txt"));
  }
  /// The global batch b as the concatenation of the ranks' shares.
  std::map<int64_t, std::string> global_rows(const std::string& out, int nproc) {
    std::map<int64_t, std::string> rows;
    for (int r = 0; r < nproc; ++r) {
      for (const auto& [b, line] : record(out, r)) rows[b] += (r ? "," : "") + line.rows;
    }
    return rows;
  }
  /// `overrides` on 2 ranks with a checkpoint every 2 batches and autoresume, into "parts": rank `kill_rank` is
  /// SIGKILLed after batch `kill_at`, then the run is started again and completes. Returns `rank`'s record.
  std::map<int64_t, Line> killed_and_resumed(const std::string& overrides, int kill_rank, int kill_at, int rank) {
    const std::string ck = "checkpoint={folder: " + (dir_ / "ck").string() + ", interval: 2ba, autoresume: true}";
    EXPECT_EQ(launch(2, "parts", overrides + ck, kill_rank, kill_at).exit_code, 128 + SIGKILL);
    EXPECT_EQ(launch(2, "parts", overrides + ck).exit_code, 0)
        << slurp(dir_ / "parts" / "error0.txt") << slurp(dir_ / "parts" / "error1.txt");
    return record("parts", rank);
  }
  /// The final parameters, then buffers, of one rank.
  std::vector<at::Tensor> final_params(const std::string& out, int rank) {
    std::vector<at::Tensor> params;
    torch::load(params, (dir_ / out / ("final" + std::to_string(rank) + ".pt")).string());
    return params;
  }
  /// Rank 0's final parameters of the runs in "one" (1 rank) and "two" (2 ranks) are the same up to the order of
  /// floating-point sums (the gradient is averaged over the ranks).
  void expect_one_rank_matches_two() {
    const auto a = final_params("one", 0), b = final_params("two", 0);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(at::allclose(a[i], b[i], /*rtol=*/1e-4, /*atol=*/1e-5))
          << "parameter " << i << " differs by " << (a[i] - b[i]).abs().max().item<double>();
    }
  }
  /// `setup` on 1 rank, then on 2 ranks in microbatches of 4: the ranks agree at every batch, their shares make up
  /// the one rank's global batches, and they end on its weights.
  void expect_two_ranks_in_microbatches_match_one(const std::string& setup) {
    ASSERT_EQ(launch(1, "one", setup).exit_code, 0) << slurp(dir_ / "one" / "error0.txt");
    ASSERT_EQ(launch(2, "two", setup + "microbatch_size=4;").exit_code, 0) << slurp(dir_ / "two" / "error0.txt");
    const auto two = record("two", 0);
    ASSERT_EQ(two.size(), 8u);
    for (const auto& [b, line] : two) EXPECT_EQ(record("two", 1).at(b).fingerprint, line.fingerprint) << "batch " << b;
    EXPECT_EQ(global_rows("two", 2), global_rows("one", 1));
    expect_one_rank_matches_two();
  }
  void expect_bitwise_identical_ranks(int nproc) {
    const auto result = launch(nproc, "run");
    ASSERT_EQ(result.exit_code, 0) << "rank " << result.failed_rank << " failed";
    const auto first = record("run", 0);
    ASSERT_EQ(first.size(), 8u);
    for (int r = 1; r < nproc; ++r) {
      const auto other = record("run", r);
      ASSERT_EQ(other.size(), first.size()) << "rank " << r;
      for (const auto& [b, line] : first) {
        EXPECT_EQ(other.at(b).fingerprint, line.fingerprint) << "rank " << r << " differs from rank 0 after batch " << b;
        EXPECT_NE(other.at(b).rows, line.rows) << "ranks " << r << " and 0 got the same examples at batch " << b;
      }
    }
    // The weights changed at every step (the fingerprints are of a run that trains).
    EXPECT_NE(first.at(0).fingerprint, first.at(7).fingerprint);
  }

  /// About 12 kB of text (fortunes of a pattern), written into the test's folder.
  fs::path write_corpus() {
    std::string text;
    for (int i = 0; text.size() < 12000; ++i) {
      text += "Fortune " + std::to_string(i * 7919 % 1000) + ": the quick brown fox jumps over " +
              std::to_string(i % 13) + " lazy dogs.\n";
    }
    const fs::path corpus = dir_ / "corpus.txt";
    std::ofstream(corpus) << text;
    return corpus;
  }
  /// The 14 algorithms that train a language model (fortunes_gpt_everything.yaml's) as recipe entries, but those in
  /// `without`.
  static std::string language_model_algorithms(const std::set<std::string>& without) {
    const std::vector<std::pair<std::string, std::string>> entries = {
        {"gated_linear_units", "gated_linear_units"},
        {"low_precision_layernorm", "low_precision_layernorm"},
        {"alibi", "{alibi: {train_sequence_length_scaling: 0.5}}"},
        {"factorize", "{factorize: {min_features: 16, latent_features: 0.25}}"},
        {"stochastic_depth", "{stochastic_depth: {drop_rate: 0.5}}"},
        {"gyro_dropout", "{gyro_dropout: {p: 0.1, sigma: 8, tau: 2}}"},
        {"selective_backprop", "{selective_backprop: {start: 0, end: 1, keep: 0.5, interrupt: 2}}"},
        {"seq_length_warmup", "{seq_length_warmup: {duration: 0.5, min_seq_length: 8, step_size: 8}}"},
        {"label_smoothing", "{label_smoothing: {smoothing: 0.1}}"},
        {"gradient_clipping", "{gradient_clipping: {clipping_type: norm, clipping_threshold: 1.0}}"},
        {"sam", "{sam: {rho: 0.05, interval: 3}}"},
        {"layer_freezing", "{layer_freezing: {freeze_start: 0.1, freeze_level: 0.5}}"},
        {"ema", "{ema: {half_life: 4ba, ema_start: 0.25dur}}"},
        {"swa",
         "{swa: {swa_start: 2ba, swa_end: 12ba, update_interval: 1ba, schedule_swa_lr: true, anneal_steps: 2}}"}};
    std::string out;
    for (const auto& [name, entry] : entries) {
      if (without.count(name) == 0) out += (out.empty() ? "" : ", ") + entry;
    }
    return out;
  }

  void every_language_model_algorithm_on_two_ranks(const std::string& model, const std::string& data,
                                                   const std::string& optimizer = "{adamw: {lr: 0.003}}",
                                                   const std::set<std::string>& without = {}) {
    // A language model (`model`: gpt or bert; `data`: its overrides) with dropout on 2 epochs of 8 global
    // batches of 32 byte sequences of 32, under amp_bf16, with the 14 algorithms that train a language model (but
    // those `without`)
    // (fortunes_gpt_everything.yaml's): GLU's, ALiBi's and factorize's surgery before the gradient hooks are set up
    // (ALiBi's frozen position embedding has no gradient to reduce), the warmup's shorter sequences and ALiBi's
    // re-chunking the same on every rank, selective backprop, dropout and stochastic depth's dropped blocks per rank
    // (their parameters unused there), gyro dropout's masks the same on every rank, SAM, layer freezing, EMA from
    // batch 4 and SWA's average of batches 2 to 12; a rank killed at batch 11 resumes bitwise.
    const fs::path corpus = write_corpus();
    const std::string setup =
        "model={" + model + ": {d_model: 32, n_layers: 2, n_heads: 2, dropout: 0.1, attention_dropout: 0.1}};" + data +
        "max_duration=16ba;precision=amp_bf16;"
        "data.train.dataset={text: {path: " + corpus.string() + ", split: train, seq_length: 32, limit: 256}};"
        "data.eval.dataset={text: {path: " + corpus.string() + ", split: test, seq_length: 32, limit: 30}};"
        "data.eval.loader.batch_size=15;data.eval.metrics=[accuracy, cross_entropy, perplexity];"
        "optimizer=" + optimizer + ";"
        "algorithms=[" + language_model_algorithms(without) + "];";
    ASSERT_EQ(launch(2, "whole", setup).exit_code, 0) << slurp(dir_ / "whole" / "error0.txt");
    const auto whole0 = record("whole", 0), whole1 = record("whole", 1);
    ASSERT_EQ(whole0.size(), 16u);
    // No batch norms: parameters and buffers are the same on both ranks after every step, from different shares.
    for (const auto& [b, line] : whole0) {
      EXPECT_EQ(whole1.at(b).fingerprint, line.fingerprint) << "batch " << b;
      EXPECT_NE(whole1.at(b).rows, line.rows) << "batch " << b;
    }
    EXPECT_NE(whole0.at(0).fingerprint, whole0.at(15).fingerprint);
    EXPECT_EQ(slurp(dir_ / "whole" / "evals1.txt"), slurp(dir_ / "whole" / "evals0.txt"));
    fs::remove_all(dir_ / "run");
    const auto parts = killed_and_resumed(setup, /*kill_rank=*/1, /*kill_at=*/11, /*rank=*/0);
    ASSERT_EQ(parts.size(), 16u);
    for (const auto& [b, line] : whole0) EXPECT_EQ(parts.at(b).fingerprint, line.fingerprint) << "batch " << b;
  }

  fs::path dir_;
  std::string recipe_;
};

TEST_F(Distributed, TwoRanksStayBitwiseIdenticalAfterEveryStep) { expect_bitwise_identical_ranks(2); }

TEST_F(Distributed, FourRanksStayBitwiseIdenticalAfterEveryStep) { expect_bitwise_identical_ranks(4); }

TEST_F(Distributed, TwoRanksMatchOneRankWithTheSameGlobalBatch) {
  ASSERT_EQ(launch(1, "one").exit_code, 0);
  ASSERT_EQ(launch(2, "two").exit_code, 0);
  // Same global order: the two shares of each batch are the one-rank batch, row for row.
  EXPECT_EQ(global_rows("two", 2), global_rows("one", 1));
  expect_one_rank_matches_two();
}

TEST_F(Distributed, MicrobatchesSynchroniseOnlyTheLastAndMatchOneRank) {
  // 2 ranks x 2 microbatches of 8, one-byte buckets (one per parameter, all-reduced during backward): the
  // accumulated gradients of the first microbatch must not be all-reduced on their own.
  const std::string overrides = "microbatch_size=8;distributed.bucket_cap_mb=0.000001";
  ASSERT_EQ(launch(1, "one", overrides).exit_code, 0);
  ASSERT_EQ(launch(2, "two", overrides).exit_code, 0);
  EXPECT_EQ(record("two", 0).at(7).fingerprint, record("two", 1).at(7).fingerprint);
  expect_one_rank_matches_two();
}

TEST_F(Distributed, AutoMicrobatchingOnOneRanksOutOfMemoryRetriesOnEveryRank) {
  // Shares of 16: rank 1 runs out of memory above 8 examples, rank 0 never. Both must retry the first batch with 8
  // and keep it: the run equals, bit for bit, one configured with microbatches of 8 from the start.
  ASSERT_EQ(launch(2, "fixed", "microbatch_size=8").exit_code, 0) << slurp(dir_ / "fixed" / "error0.txt");
  ASSERT_EQ(launch(2, "fits", "microbatch_size=auto").exit_code, 0) << slurp(dir_ / "fits" / "error0.txt");
  const auto result = launch_with_fault({{"TESSERA_TEST_DDP_OOM_RANK", "1"}, {"TESSERA_TEST_DDP_OOM_ABOVE", "8"}}, 2,
                                       "auto", "microbatch_size=auto");
  ASSERT_EQ(result.exit_code, 0) << slurp(dir_ / "auto" / "error0.txt") << slurp(dir_ / "auto" / "error1.txt");
  const auto fixed = record("fixed", 0), fits = record("fits", 0);
  ASSERT_EQ(fixed.size(), 8u);
  for (int r = 0; r < 2; ++r) {
    const auto retried = record("auto", r);
    ASSERT_EQ(retried.size(), 8u) << "rank " << r;
    for (const auto& [b, line] : fixed) {
      EXPECT_EQ(retried.at(b).fingerprint, line.fingerprint) << "rank " << r << " batch " << b;
    }
  }
  // Without the error, auto keeps whole shares of 16, whose sums round differently: the comparison above can fail.
  EXPECT_NE(fits.at(7).fingerprint, fixed.at(7).fingerprint);
  // On one rank only, the error at size 1 stops both ranks with it.
  const auto hopeless = launch_with_fault({{"TESSERA_TEST_DDP_OOM_RANK", "0"}, {"TESSERA_TEST_DDP_OOM_ABOVE", "0"}}, 2,
                                         "hopeless", "microbatch_size=auto");
  EXPECT_NE(hopeless.exit_code, 0);
  EXPECT_NE(slurp(dir_ / "hopeless" / "error0.txt").find("microbatches of 1 example"), std::string::npos)
      << slurp(dir_ / "hopeless" / "error0.txt");
  EXPECT_NE(slurp(dir_ / "hopeless" / "error1.txt").find("another rank ran out of memory"), std::string::npos)
      << slurp(dir_ / "hopeless" / "error1.txt");
}

TEST_F(Distributed, LossScalingAveragesUnscaledGradientsAndAllRanksSkipAnOverflow) {
  // fp32 with a power-of-two scale: scaling and unscaling are exact, so with microbatches the run equals the one
  // without a scaler bit for bit, although the gradients are averaged after backward instead of during it.
  ASSERT_EQ(launch(2, "plain", "microbatch_size=8").exit_code, 0) << slurp(dir_ / "plain" / "error0.txt");
  ASSERT_EQ(launch(2, "scaled", "microbatch_size=8;loss_scaling=dynamic").exit_code, 0)
      << slurp(dir_ / "scaled" / "error0.txt");
  const auto plain = record("plain", 0);
  ASSERT_EQ(plain.size(), 8u);
  for (int r = 0; r < 2; ++r) {
    const auto scaled = record("scaled", r);
    for (const auto& [b, line] : plain) EXPECT_EQ(scaled.at(b).fingerprint, line.fingerprint) << "rank " << r;
  }
  // Rank 1's gradients overflow at batch 3: both ranks skip that step (the weights stay as after batch 2) and stay
  // identical; rank 0 alone would have stepped with the inf/NaN average.
  const auto result = launch_with_fault({{"TESSERA_TEST_DDP_OVERFLOW_RANK", "1"}, {"TESSERA_TEST_DDP_OVERFLOW_AT", "3"}},
                                       2, "overflow", "microbatch_size=8;loss_scaling=dynamic");
  ASSERT_EQ(result.exit_code, 0) << slurp(dir_ / "overflow" / "error0.txt") << slurp(dir_ / "overflow" / "error1.txt");
  const auto rank0 = record("overflow", 0), rank1 = record("overflow", 1);
  ASSERT_EQ(rank0.size(), 8u);
  for (const auto& [b, line] : rank0) EXPECT_EQ(rank1.at(b).fingerprint, line.fingerprint) << "batch " << b;
  EXPECT_EQ(rank0.at(2).fingerprint, plain.at(2).fingerprint);
  EXPECT_EQ(rank0.at(3).fingerprint, rank0.at(2).fingerprint) << "the step of batch 3 was skipped";
  EXPECT_NE(rank0.at(4).fingerprint, rank0.at(3).fingerprint);
}

TEST_F(Distributed, SamPerturbsAlikeOnEveryRankAndMatchesOneRank) {
  // SAM perturbs along the gradient averaged over the ranks, so every rank moves its weights alike and the second
  // pass is the one-rank run's (up to the order of the sums); with microbatches of 8 on shares of 16, and with a
  // power-of-two loss scale over both passes, which equals the run without one bit for bit.
  const std::string overrides = "algorithms=[{sam: {rho: 0.1}}];microbatch_size=8";
  ASSERT_EQ(launch(1, "one", overrides).exit_code, 0) << slurp(dir_ / "one" / "error0.txt");
  ASSERT_EQ(launch(2, "two", overrides).exit_code, 0) << slurp(dir_ / "two" / "error0.txt");
  ASSERT_EQ(launch(2, "scaled", overrides + ";loss_scaling=dynamic").exit_code, 0)
      << slurp(dir_ / "scaled" / "error0.txt");
  const auto two = record("two", 0);
  ASSERT_EQ(two.size(), 8u);
  for (const auto& [b, line] : two) {
    EXPECT_EQ(record("two", 1).at(b).fingerprint, line.fingerprint) << "batch " << b;
    EXPECT_EQ(record("scaled", 0).at(b).fingerprint, line.fingerprint) << "batch " << b;
    EXPECT_EQ(record("scaled", 1).at(b).fingerprint, line.fingerprint) << "batch " << b;
  }
  expect_one_rank_matches_two();
}

TEST_F(Distributed, GyroDropoutSpreadsItsMasksOverTheGlobalBatchAndMatchesOneRank) {
  // 8 masks at once over each global batch of 32: on 2 ranks in microbatches of 4 (fewer examples than masks), each
  // example trains the mask of its place in the global batch, so the run is the one-rank run with whole batches.
  // Spread over each microbatch's own 4 rows instead, masks 0, 2, 4 and 6 alone would train, and the runs part.
  const std::string setup = "model={mlp: {hidden: [16], dropout: 0.5}};algorithms=[{gyro_dropout: {sigma: 8, tau: 8}}];";
  ASSERT_EQ(launch(1, "one", setup).exit_code, 0) << slurp(dir_ / "one" / "error0.txt");
  ASSERT_EQ(launch(2, "two", setup + "microbatch_size=4").exit_code, 0) << slurp(dir_ / "two" / "error0.txt");
  const auto two = record("two", 0);
  ASSERT_EQ(two.size(), 8u);
  for (const auto& [b, line] : two) EXPECT_EQ(record("two", 1).at(b).fingerprint, line.fingerprint) << "batch " << b;
  expect_one_rank_matches_two();
}

TEST_F(Distributed, KilledRankStopsTheOthersAndAutoresumeCompletesBitwise) {
  const std::string ck = "checkpoint={folder: " + (dir_ / "ck").string() + ", interval: 2ba, autoresume: true}";
  ASSERT_EQ(launch(2, "whole").exit_code, 0);
  fs::remove_all(dir_ / "run");
  const auto t0 = std::chrono::steady_clock::now();
  const auto killed = launch(2, "parts", ck, /*kill_rank=*/1, /*kill_at=*/5);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(killed.exit_code, 128 + SIGKILL);
  EXPECT_EQ(killed.failed_rank, 1);
  EXPECT_LT(seconds, 120.0) << "the surviving rank must not wait for the dead one until a long timeout";
  // Rank 0 stopped with an error that names the failed collective (or was stopped by the launcher first).
  const std::string error0 = slurp(dir_ / "parts" / "error0.txt");
  if (!error0.empty()) EXPECT_NE(error0.find("distributed:"), std::string::npos) << error0;
  // Autoresume from the checkpoint at batch 4 completes the run, bitwise as the uninterrupted one.
  ASSERT_EQ(launch(2, "parts", ck).exit_code, 0);
  const auto whole = record("whole", 0), parts = record("parts", 0);
  ASSERT_EQ(parts.size(), 8u);
  for (const auto& [b, line] : whole) EXPECT_EQ(parts.at(b).fingerprint, line.fingerprint) << "batch " << b;
  EXPECT_EQ(record("parts", 1).at(7).fingerprint, whole.at(7).fingerprint);
}

TEST_F(Distributed, EachRankResumesItsOwnGeneratorsBitwise) {
  // Dropout draws from each rank's torch generator (seeded with seed + rank), and the averaged gradient depends on
  // both ranks' draws: the checkpoint must keep rank 1's generator too for the resumed run to be the same.
  const std::string setup = "model.mlp.dropout=0.5;";
  ASSERT_EQ(launch(2, "whole", setup).exit_code, 0) << slurp(dir_ / "whole" / "error0.txt");
  fs::remove_all(dir_ / "run");
  const auto parts = killed_and_resumed(setup, /*kill_rank=*/0, /*kill_at=*/5, /*rank=*/0);
  const auto whole = record("whole", 0);
  ASSERT_EQ(parts.size(), 8u);
  for (const auto& [b, line] : whole) EXPECT_EQ(parts.at(b).fingerprint, line.fingerprint) << "batch " << b;
}

TEST_F(Distributed, EveryAlgorithmOnTwoRanksStaysIdenticalAndResumesBitwise) {
  // A CNN on 16x16 images, 2 epochs of 8 global batches, with every algorithm acting within the run (CutMix, which
  // cannot run with MixUp, is left out; MixUp permutes each rank's share with the same draws on every rank, CutOut
  // cuts the same holes and ColOut drops the same rows on every rank; EMA from
  // batch 4: the final parameters compared below are its averages; channels_last: NHWC gradients go through the
  // flat buckets and NHWC weights through the broadcast; squeeze_excite's new layers, drawn from each rank's generator,
  // are rank 0's after the broadcast; ghost_batchnorm normalises each rank's share in ghost batches of 2;
  // factorize splits conv2, conv3 and fc from the same SVD on every rank, broadcast from rank 0 all the same;
  // weight_standardization standardizes every conv, the factors and those inside blurpool's and squeeze-excite's
  // wrappers too; SWA's average of batches 2 to 12 replaces the weights at 12, after the kill at 11, with the ghost
  // batch norms' statistics recomputed over each rank's share and averaged over the ranks).
  const std::string setup = every_algorithm_setup("{cnn: {width: 8}}", "{ghost_batchnorm: {ghost_batch_size: 2}}");
  ASSERT_EQ(launch(2, "whole", setup).exit_code, 0) << slurp(dir_ / "whole" / "error0.txt");
  const auto whole = record("whole", 0);
  ASSERT_EQ(whole.size(), 16u);
  // The final parameters and buffers are identical on both ranks. (The fingerprints in the per-batch records also
  // cover the batch-norm running statistics, which each rank updates from its own share during a step and which
  // rank 0's overwrite before the next one, as in PyTorch's DDP: they differ between ranks after a step. They are
  // rank 0's again on every rank at the end of fit and for each evaluation.)
  const auto params0 = final_params("whole", 0), params1 = final_params("whole", 1);
  ASSERT_EQ(params0.size(), params1.size());
  for (size_t i = 0; i < params0.size(); ++i) EXPECT_TRUE(at::equal(params0[i], params1[i])) << "tensor " << i;
  // Both ranks evaluated the same weights (rank 0's statistics; EMA's averages in the second epoch), batch for batch.
  const std::string evals0 = slurp(dir_ / "whole" / "evals0.txt");
  EXPECT_EQ(evals0.rfind("8 ", 0), 0u) << "the first evaluation, after epoch 1 (batch 8):\n" << evals0;
  EXPECT_NE(evals0.find("\n16 "), std::string::npos) << "the evaluation at the end of fit:\n" << evals0;
  EXPECT_EQ(slurp(dir_ / "whole" / "evals1.txt"), evals0);
  fs::remove_all(dir_ / "run");
  const auto parts = killed_and_resumed(setup, /*kill_rank=*/1, /*kill_at=*/11, /*rank=*/0);
  ASSERT_EQ(parts.size(), 16u);
  for (const auto& [b, line] : whole) EXPECT_EQ(parts.at(b).fingerprint, line.fingerprint) << "batch " << b;
  const auto resumed1 = final_params("parts", 1);
  for (size_t i = 0; i < params0.size(); ++i) EXPECT_TRUE(at::equal(resumed1[i], params0[i])) << "parameter " << i;
}

TEST_F(Distributed, EveryLanguageModelAlgorithmOnTwoRanksStaysIdenticalAndResumesBitwise) {
  // Under Muon: every rank orthogonalises the same reduced gradients (surgery's new matrices included) alike.
  every_language_model_algorithm_on_two_ranks(
      "gpt", "", "{muon: {lr: 0.02, adamw_names: [\"embed.*\", \"pos_embed.*\", \"head.*\"], adamw_lr: 0.003}}");
}

TEST_F(Distributed, EveryLanguageModelAlgorithmOnAGpt2WithTiedEmbeddingsOnTwoRanksStaysIdenticalAndResumesBitwise) {
  // GPT-2's tied embeddings: one weight used by the embedding and the head, its gradient reduced once.
  every_language_model_algorithm_on_two_ranks("gpt", "model.gpt.tie_embeddings=true;model.gpt.activation=gelu_tanh;");
}

TEST_F(Distributed, EveryLanguageModelAlgorithmOnALlamaOnTwoRanksStaysIdenticalAndResumesBitwise) {
  // Llama's architecture with grouped-query attention, with the 11 algorithms that fit it (alibi and
  // gated_linear_units are refused before step 1 on rotary positions and gated networks, low_precision_layernorm on
  // RMSNorms).
  every_language_model_algorithm_on_two_ranks(
      "gpt",
      "model.gpt.norm=rms_norm;model.gpt.positions=rotary;model.gpt.gated=true;model.gpt.activation=silu;"
      "model.gpt.bias=false;model.gpt.n_kv_heads=1;",
      "{adamw: {lr: 0.003}}", {"alibi", "gated_linear_units", "low_precision_layernorm"});
}

TEST_F(Distributed, EveryLanguageModelAlgorithmOnABertOnTwoRanksStaysIdenticalAndResumesBitwise) {
  // The masks are drawn per global row before the rows are shared out, so each rank masks its rows as one rank would.
  const std::string masked = "data.train.transforms=[mask_tokens];data.eval.transforms=[mask_tokens];";
  every_language_model_algorithm_on_two_ranks("bert", masked);
}

TEST_F(Distributed, TwoRanksOfMicrobatchesWeighByMaskedTokensAndMatchOneWholeBatch) {
  // A bert batch's loss is the mean over its masked tokens, which fall unevenly on the ranks and their microbatches
  // (4 rows of 32 tokens: about 19 each, give or take 4). Weighed by their tokens, 2 ranks x 4 microbatches of 4 give
  // the gradient of one rank's whole batch of 32; weighed by their examples they would not.
  const fs::path corpus = write_corpus();
  const std::string setup =
      "model={bert: {d_model: 32, n_layers: 2, n_heads: 2}};"
      "data.train.dataset={text: {path: " + corpus.string() + ", split: train, seq_length: 32, limit: 256}};"
      "data.eval.dataset={text: {path: " + corpus.string() + ", split: test, seq_length: 32, limit: 30}};"
      "data.train.transforms=[mask_tokens];data.eval.transforms=[mask_tokens];data.eval.loader.batch_size=15;";
  ASSERT_EQ(launch(1, "one", setup).exit_code, 0) << slurp(dir_ / "one" / "error0.txt");
  ASSERT_EQ(launch(2, "two", setup + "microbatch_size=4;").exit_code, 0) << slurp(dir_ / "two" / "error0.txt");
  EXPECT_EQ(global_rows("two", 2), global_rows("one", 1));
  expect_one_rank_matches_two();
}

TEST_F(Distributed, TwoRanksOfABertClassifierOnPaddedTextsMatchOneRank) {
  // Labelled texts of 1 to 10 words padded to 48 bytes (their padding masked per forward, per rank's rows): 2 ranks x
  // microbatches of 4 end on one rank's whole-batch weights.
  const fs::path labels = dir_ / "labels.tsv";
  {
    std::ofstream out(labels);
    for (int i = 0; i < 256; ++i) {
      out << (i % 3 == 0 ? "three" : "other") << '\t';
      for (int w = 0; w <= i % 10; ++w) out << (w ? " " : "") << "word" << (i * 7 + w) % 13;
      out << '\n';
    }
  }
  const std::string data = "{text_classification: {path: " + labels.string() + ", seq_length: 48}}";
  const std::string setup = "model={bert_classifier: {d_model: 16, n_layers: 2, n_heads: 2}};data.train.dataset=" +
                            data + ";data.eval.dataset=" + data + ";optimizer={adamw: {lr: 0.003}};";
  expect_two_ranks_in_microbatches_match_one(setup);
}

TEST_F(Distributed, TwoRanksOfAGptOnStreamedTokenIdsMatchOneRank) {
  // Token ids in MDS shards (the streaming dataset's seq_length), a different length per sample (padded or cut to
  // 16 + 1), block-shuffled: 2 ranks x microbatches of 4 end on one rank's whole-batch weights.
  const fs::path tokens = dir_ / "tokens";
  {
    tessera::data::mds::Writer w(tokens.string(), tessera::data::mds::WriterOptions().columns({{"ids", "ndarray:uint16"}}).size_limit(600));
    for (int64_t i = 0; i < 256; ++i)
      w.write({{"ids", at::arange(10 + i % 12, at::kInt).mul(3).add(i).remainder(300)}});
    w.finish();
  }
  const std::string data = "{streaming: {local: " + tokens.string() +
                           ", input: ids, seq_length: 16, num_classes: 300, shuffle_block_size: 64}}";
  const std::string setup = "model={gpt: {d_model: 16, n_layers: 2, n_heads: 2}};data.train.dataset=" + data +
                            ";data.eval.dataset=" + data + ";optimizer={adamw: {lr: 0.003}};";
  expect_two_ranks_in_microbatches_match_one(setup);
}

TEST_F(Distributed, NoOpModelStandsInAlikeOnEveryRank) {
  // Each rank replaces its MLP by the one-parameter stand-in at Init; its gradient is averaged over the ranks.
  ASSERT_EQ(launch(2, "run", "algorithms=[no_op_model]").exit_code, 0) << slurp(dir_ / "run" / "error0.txt");
  const auto rank0 = record("run", 0), rank1 = record("run", 1);
  ASSERT_EQ(rank0.size(), 8u);
  for (const auto& [b, line] : rank0) {
    EXPECT_EQ(rank1.at(b).fingerprint, line.fingerprint) << "batch " << b;
    EXPECT_NE(rank1.at(b).rows, line.rows) << "batch " << b;
  }
  EXPECT_NE(rank0.at(0).fingerprint, rank0.at(7).fingerprint);  // the stand-in's weight moved
  const auto params = final_params("run", 0);
  ASSERT_EQ(params.size(), 1u);  // the stand-in's one parameter, no buffer
  EXPECT_TRUE(at::equal(params[0], final_params("run", 1)[0]));
}

// ---------------------------------------------------------------------------------------------------------
// Synchronised batch norm (distributed.sync_batch_norm)

TEST(SyncBatchNorm, OnOneRankEqualsTorchsBatchNormInValuesGradientsAndStatistics) {
  // The synchronised path (double sums, one differentiable all-reduce) on a one-rank Gloo group against torch's
  // batch norm on the same input: outputs, the input's, weight's and bias's gradients, and the running statistics
  // after three steps (momentum 0.1, then the cumulative average of momentum None).
  if (!tessera::dist::gloo_available()) GTEST_SKIP() << "this build has no Gloo process group";
  Environment env;
  env.master_port = tessera::dist::free_port();
  tessera::dist::DistributedOptions options;
  options.connect_timeout(30).timeout(30).backend("gloo");
  const auto comm = tessera::dist::Comm::create(env, options, c10::Device("cpu"));
  for (const bool cumulative : {false, true}) {
    torch::manual_seed(3);
    auto bn_options = torch::nn::BatchNormOptions(5);
    if (cumulative) bn_options.momentum(c10::nullopt);
    torch::nn::BatchNorm2d reference(bn_options);
    torch::nn::BatchNorm2d source(bn_options);  // its tensors go to the synchronised layer
    {
      torch::NoGradGuard no_grad;
      reference->weight.uniform_(0.5, 1.5);
      reference->bias.uniform_(-0.5, 0.5);
      source->weight.copy_(reference->weight);
      source->bias.copy_(reference->bias);
    }
    tessera::dist::SyncBatchNorm synced(bn_options, std::vector<int64_t>{4}, source->weight, source->bias, source->running_mean,
                                        source->running_var, source->num_batches_tracked, comm);
    for (int step = 0; step < 3; ++step) {
      // Far from zero mean, as after a ReLU with a bias: the shifted sums keep the variance exact.
      const at::Tensor x = (at::randn({6, 5, 3, 4}, at::kFloat) * 0.5 + 40.0).requires_grad_(true);
      const at::Tensor x2 = x.detach().clone().requires_grad_(true);
      const at::Tensor upstream = at::randn({6, 5, 3, 4});
      const at::Tensor y = reference->forward(x), y2 = synced->forward(x2);
      EXPECT_TRUE(at::allclose(y2, y, 1e-4, 1e-4)) << (y2 - y).abs().max().item<double>();
      (y * upstream).sum().backward();
      (y2 * upstream).sum().backward();
      EXPECT_TRUE(at::allclose(x2.grad(), x.grad(), 1e-3, 1e-4)) << (x2.grad() - x.grad()).abs().max().item<double>();
    }
    // Sums of 3 x 360 products dy (x - mean) / std with x around 40 and std 0.5: float rounding of the mean alone
    // moves them by about 1e-4 in either implementation.
    EXPECT_TRUE(at::allclose(synced->weight.grad(), reference->weight.grad(), 1e-4, 1e-3))
        << synced->weight.grad() << reference->weight.grad();
    EXPECT_TRUE(at::allclose(synced->bias.grad(), reference->bias.grad(), 1e-4, 1e-4));
    EXPECT_TRUE(at::allclose(synced->running_mean, reference->running_mean, 1e-5, 1e-5));
    EXPECT_TRUE(at::allclose(synced->running_var, reference->running_var, 1e-4, 1e-5))
        << synced->running_var << reference->running_var;
    EXPECT_EQ(synced->num_batches_tracked.item<int64_t>(), 3);
    // Evaluation: torch's batch norm with the running statistics, bitwise.
    synced->eval();
    reference->eval();
    const at::Tensor x = at::randn({2, 5, 3, 4});
    {
      torch::NoGradGuard no_grad;
      reference->running_mean.copy_(synced->running_mean);
      reference->running_var.copy_(synced->running_var);
    }
    EXPECT_TRUE(at::equal(synced->forward(x), reference->forward(x)));
    // Training on one value per channel over all ranks is refused, as torch's batch norm refuses it, before the
    // running statistics take a variance of nothing.
    synced->train();
    const at::Tensor running_var = synced->running_var.clone();
    EXPECT_EQ(tessera::testing::input_error_of([&] { synced->forward(at::randn({1, 5, 1, 1})); }),
              "SyncBatchNorm: expected more than 1 value per channel over all ranks when training, got input size "
              "[1, 5, 1, 1] on this rank (1 in all)");
    EXPECT_TRUE(at::equal(synced->running_var, running_var));
    EXPECT_NO_THROW(synced->forward(at::randn({1, 5, 1, 2})));  // 2 values per channel: one row is enough
  }
}

TEST_F(Distributed, SyncBatchNormTakesTheGlobalBatchsStatisticsAndMatchesOneRank) {
  // A CNN with three batch norms. Plain batch norm on 2 ranks normalises each share with its own statistics and
  // drifts from the one-rank run; with sync_batch_norm the 2 ranks follow it within float rounding, running
  // statistics included, and hold bitwise the same statistics at every step without any broadcast of buffers.
  const std::string cnn = "model={cnn: {width: 4}};data.train.dataset.synthetic.input_shape=[1, 8, 8];"
                          "data.eval.dataset.synthetic.input_shape=[1, 8, 8];";
  const std::string sync = cnn + "distributed.sync_batch_norm=true;distributed.broadcast_buffers=false";
  ASSERT_EQ(launch(1, "one", sync).exit_code, 0) << slurp(dir_ / "one" / "error0.txt");
  ASSERT_EQ(launch(2, "plain", cnn).exit_code, 0) << slurp(dir_ / "plain" / "error0.txt");
  ASSERT_EQ(launch(2, "sync", sync).exit_code, 0) << slurp(dir_ / "sync" / "error0.txt");
  const auto one = final_params("one", 0), plain = final_params("plain", 0), synced = final_params("sync", 0);
  ASSERT_EQ(one.size(), synced.size());
  double plain_gap = 0, sync_gap = 0;
  for (size_t i = 0; i < one.size(); ++i) {
    if (!one[i].is_floating_point()) continue;
    plain_gap = std::max(plain_gap, (plain[i] - one[i]).abs().max().item<double>());
    sync_gap = std::max(sync_gap, (synced[i] - one[i]).abs().max().item<double>());
    EXPECT_TRUE(at::allclose(synced[i], one[i], /*rtol=*/1e-4, /*atol=*/1e-5))
        << "tensor " << i << " differs by " << (synced[i] - one[i]).abs().max().item<double>();
  }
  EXPECT_GT(plain_gap, 100 * sync_gap) << "plain " << plain_gap << ", synchronised " << sync_gap;
  const auto rank0 = record("sync", 0), rank1 = record("sync", 1);
  ASSERT_EQ(rank0.size(), 8u);
  for (const auto& [b, line] : rank0) EXPECT_EQ(rank1.at(b).fingerprint, line.fingerprint) << "batch " << b;
  const auto synced1 = final_params("sync", 1);
  for (size_t i = 0; i < synced.size(); ++i) EXPECT_TRUE(at::equal(synced1[i], synced[i])) << "tensor " << i;
  // Under bf16 autocast the layer takes bf16 convolution outputs (its sums in float and double): the ranks still
  // hold bitwise the same parameters and statistics.
  ASSERT_EQ(launch(2, "bf16", sync + ";precision=amp_bf16").exit_code, 0) << slurp(dir_ / "bf16" / "error0.txt");
  const auto bf16_0 = record("bf16", 0), bf16_1 = record("bf16", 1);
  ASSERT_EQ(bf16_0.size(), 8u);
  for (const auto& [b, line] : bf16_0) EXPECT_EQ(bf16_1.at(b).fingerprint, line.fingerprint) << "batch " << b;
  EXPECT_NE(bf16_0.at(7).fingerprint, rank0.at(7).fingerprint);  // it did run in bf16
}

TEST_F(Distributed, SyncBatchNormWithTheOtherAlgorithmsStaysIdenticalAndResumesBitwise) {
  // A ResNet-8 with the algorithms of EveryAlgorithmOnTwoRanksStaysIdenticalAndResumesBitwise but ghost_batchnorm
  // (refused with sync_batch_norm), stochastic depth in sample mode and gyro dropout before the classifier (new
  // masks at batch 8; each example trains the mask of its place in the global batch): selective backprop's scoring
  // forward and SWA's statistics pass take the global statistics too; a rank killed at batch 11 resumes bitwise.
  const std::string setup =
      every_algorithm_setup("{resnet: {depth: 8, width: 8, dropout: 0.25}}",
                            "{stochastic_depth: {stochastic_method: sample, drop_rate: 0.5}}, "
                            "{gyro_dropout: {sigma: 8, tau: 4}}") +
      "distributed.sync_batch_norm=true;";
  ASSERT_EQ(launch(2, "whole", setup).exit_code, 0) << slurp(dir_ / "whole" / "error0.txt");
  const auto whole0 = record("whole", 0), whole1 = record("whole", 1);
  ASSERT_EQ(whole0.size(), 16u);
  // Parameters and statistics: the same on both ranks after every step.
  for (const auto& [b, line] : whole0) EXPECT_EQ(whole1.at(b).fingerprint, line.fingerprint) << "batch " << b;
  const auto parts = killed_and_resumed(setup, /*kill_rank=*/1, /*kill_at=*/11, /*rank=*/1);
  ASSERT_EQ(parts.size(), 16u);
  for (const auto& [b, line] : whole0) EXPECT_EQ(parts.at(b).fingerprint, line.fingerprint) << "batch " << b;
}

TEST_F(Distributed, GroupNormsInLowPrecisionWithTheOtherAlgorithmsStayIdenticalAndResumeBitwise) {
  // A ResNet-8 with GroupNorms computing in bf16 (low_precision_groupnorm under amp_bf16) in place of ghost_batchnorm,
  // with the other algorithms of EveryAlgorithmOnTwoRanksStaysIdenticalAndResumesBitwise and stochastic depth in
  // sample mode: no running statistics, so parameters and every tensor are the same on both ranks after every step;
  // a rank killed at batch 11 resumes bitwise.
  const std::string setup =
      every_algorithm_setup(
          "{resnet: {depth: 8, width: 8, norm: group, groups: 4}}",
          "low_precision_groupnorm, {stochastic_depth: {stochastic_method: sample, drop_rate: 0.5}}") +
      "precision=amp_bf16;";
  ASSERT_EQ(launch(2, "whole", setup).exit_code, 0) << slurp(dir_ / "whole" / "error0.txt");
  const auto whole0 = record("whole", 0), whole1 = record("whole", 1);
  ASSERT_EQ(whole0.size(), 16u);
  for (const auto& [b, line] : whole0) EXPECT_EQ(whole1.at(b).fingerprint, line.fingerprint) << "batch " << b;
  const auto parts = killed_and_resumed(setup, /*kill_rank=*/1, /*kill_at=*/11, /*rank=*/1);
  ASSERT_EQ(parts.size(), 16u);
  for (const auto& [b, line] : whole0) EXPECT_EQ(parts.at(b).fingerprint, line.fingerprint) << "batch " << b;
}

TEST_F(Distributed, SyncBatchNormWithSamAndCutMixStaysIdenticalAndResumesBitwise) {
  // The algorithms the test above leaves out: SAM's second forward and backward at the perturbed weights take the
  // global statistics again on every rank; CutMix (which cannot run with MixUp) pastes the same boxes on each share.
  const std::string setup = "model={cnn: {width: 4}};data.train.dataset.synthetic.input_shape=[1, 8, 8];"
                            "data.eval.dataset.synthetic.input_shape=[1, 8, 8];distributed.sync_batch_norm=true;"
                            "algorithms=[{sam: {rho: 0.1}}, {cutmix: {alpha: 1}}];";
  ASSERT_EQ(launch(2, "whole", setup).exit_code, 0) << slurp(dir_ / "whole" / "error0.txt");
  const auto whole0 = record("whole", 0), whole1 = record("whole", 1);
  ASSERT_EQ(whole0.size(), 8u);
  for (const auto& [b, line] : whole0) EXPECT_EQ(whole1.at(b).fingerprint, line.fingerprint) << "batch " << b;
  fs::remove_all(dir_ / "run");
  const auto parts = killed_and_resumed(setup, /*kill_rank=*/0, /*kill_at=*/5, /*rank=*/1);
  ASSERT_EQ(parts.size(), 8u);
  for (const auto& [b, line] : whole0) EXPECT_EQ(parts.at(b).fingerprint, line.fingerprint) << "batch " << b;
}

TEST_F(Distributed, SyncBatchNormIsRefusedWhereRanksWouldRunDifferentForwards) {
  const std::string cnn = "model={cnn: {width: 4}};data.train.dataset.synthetic.input_shape=[1, 8, 8];"
                          "data.eval.dataset.synthetic.input_shape=[1, 8, 8];distributed.sync_batch_norm=true;";
  const std::map<std::string, std::string> refused{
      {"microbatch_size=8", "distributed.sync_batch_norm: not with microbatch_size"},
      {"algorithms=[{stochastic_depth: {stochastic_method: block}}];model={resnet: {depth: 8, width: 4}}",
       "distributed.sync_batch_norm: not with stochastic_depth as configured, whose training forward skips whole "
       "modules, different ones on each rank (its spec declares skips_modules)"},
      {"algorithms=[{ghost_batchnorm: {ghost_batch_size: 4}}]",
       "distributed.sync_batch_norm: module 'bn1' ("},
  };
  int i = 0;
  for (const auto& [overrides, expected] : refused) {
    const std::string out = "refused" + std::to_string(i++);
    const auto result = launch(2, out, cnn + overrides);
    EXPECT_NE(result.exit_code, 0) << overrides;
    const std::string error = slurp(dir_ / out / "error0.txt");
    EXPECT_NE(error.find(expected), std::string::npos) << error;
    EXPECT_EQ(slurp(dir_ / out / "rank0.txt"), "") << "a refused run trained: " << overrides;
  }
}

TEST_F(Distributed, StochasticDepthDrawsPerRankKeepsRanksIdenticalAndResumesBitwise) {
  // A ResNet-8 (3 residual gates) with stochastic depth in sample mode: each rank draws its own masks from (seed,
  // batch, rank); the averaged gradients keep the weights identical on both ranks; a rank killed mid-run resumes
  // bitwise (no algorithm state: the gates are rebuilt by surgery before loading, the draws come from the batch).
  const std::string setup =
      "model={resnet: {depth: 8, width: 4}};"
      "data.train.dataset.synthetic.input_shape=[1, 8, 8];data.eval.dataset.synthetic.input_shape=[1, 8, 8];"
      "algorithms=[{stochastic_depth: {stochastic_method: sample, drop_rate: 0.5}}, weight_standardization];";
  ASSERT_EQ(launch(2, "whole", setup).exit_code, 0) << slurp(dir_ / "whole" / "error0.txt");
  const auto whole = record("whole", 0);
  ASSERT_EQ(whole.size(), 8u);
  const auto params0 = final_params("whole", 0), params1 = final_params("whole", 1);
  ASSERT_EQ(params0.size(), params1.size());
  for (size_t i = 0; i < params0.size(); ++i) EXPECT_TRUE(at::equal(params0[i], params1[i])) << "tensor " << i;
  fs::remove_all(dir_ / "run");
  const auto parts = killed_and_resumed(setup, /*kill_rank=*/0, /*kill_at=*/5, /*rank=*/0);
  ASSERT_EQ(parts.size(), 8u);
  for (const auto& [b, line] : whole) EXPECT_EQ(parts.at(b).fingerprint, line.fingerprint) << "batch " << b;
}

TEST_F(Distributed, DataPipelineAugmentationsAreTheSameImagesOnOneOrTwoRanksAndResumeBitwise) {
  // RandAugment and AugMix run in each rank's DataLoader on the global batch, every example from a generator keyed by
  // (seed, epoch, batch, example): the two ranks' shares are the one-rank batch, row for row, the ranks end
  // identical, and a rank killed mid-run resumes on the same images and weights. Fashion-MNIST: images in [0, 1].
  const std::string setup =
      "model={cnn: {width: 4}};"
      "data.train.dataset={fashion_mnist: {split: train, limit: 256}};"
      "data.eval.dataset={fashion_mnist: {split: test, limit: 90}};"
      "algorithms=[{randaugment: {depth: 2}}, {augmix: {width: 2}}];";
  ASSERT_EQ(launch(1, "one", setup).exit_code, 0) << slurp(dir_ / "one" / "error0.txt");
  ASSERT_EQ(launch(2, "whole", setup).exit_code, 0) << slurp(dir_ / "whole" / "error0.txt");
  const auto rows = global_rows("whole", 2);
  ASSERT_EQ(rows.size(), 8u);
  EXPECT_EQ(rows, global_rows("one", 1));
  // The ranks end identical (per batch, the fingerprints also cover each rank's own batch-norm statistics).
  const auto params0 = final_params("whole", 0), params1 = final_params("whole", 1);
  ASSERT_EQ(params0.size(), params1.size());
  for (size_t i = 0; i < params0.size(); ++i) EXPECT_TRUE(at::equal(params0[i], params1[i])) << "tensor " << i;
  const auto whole = record("whole", 0);
  const auto parts = killed_and_resumed(setup, /*kill_rank=*/1, /*kill_at=*/5, /*rank=*/0);
  ASSERT_EQ(parts.size(), 8u);
  for (const auto& [b, line] : whole) {
    EXPECT_EQ(parts.at(b).fingerprint, line.fingerprint) << "batch " << b;
    EXPECT_EQ(parts.at(b).rows, line.rows) << "batch " << b;
  }
}

TEST_F(Distributed, ResumeOnAnotherNumberOfRanksContinuesTheGlobalOrder) {
  const std::string ck = "checkpoint={folder: " + (dir_ / "ck").string() + ", interval: 2ba, autoresume: true}";
  ASSERT_EQ(launch(1, "reference").exit_code, 0);
  const auto reference = global_rows("reference", 1);
  for (const auto& [first, second] : {std::pair{2, 1}, std::pair{1, 2}}) {
    SCOPED_TRACE(std::to_string(first) + " ranks, then " + std::to_string(second));
    fs::remove_all(dir_ / "ck");
    fs::remove_all(dir_ / "a");
    fs::remove_all(dir_ / "b");
    EXPECT_NE(launch(first, "a", ck, /*kill_rank=*/0, /*kill_at=*/3).exit_code, 0);
    ASSERT_EQ(launch(second, "b", ck).exit_code, 0);
    auto rows = global_rows("a", first);
    const auto after = global_rows("b", second);
    EXPECT_EQ(after.begin()->first, 2) << "resumed from the checkpoint after batch 2";
    for (const auto& [b, r] : after) rows[b] = r;
    EXPECT_EQ(rows, reference);
  }
}

// ---------------------------------------------------------------------------------------------------------
// tessera-run: the launcher and bad environments

struct Result {
  int code = -1;
  std::string out, err;
};

class DistributedRunner : public Distributed {
 protected:
  Result run(const std::string& env, const std::string& args) {
    const fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    const std::string command = "env " + env + " '" + std::string(TESSERA_RUN_PATH) + "' " + args + " >'" +
                                out.string() + "' 2>'" + err.string() + "'";
    const int status = std::system(command.c_str());
    Result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
  }
};

TEST_F(DistributedRunner, NprocTrainsWithPrefixedOutputAndRankZeroFiles) {
  const Result r = run("-u MASTER_PORT -u RANK -u WORLD_SIZE", "--nproc 2 " + recipe_ + " 'loggers=[{jsonl: {}}]'");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // Both ranks end with the same weights.
  const auto first = r.out.find("[rank 0] weights-fingerprint: ");
  const auto second = r.out.find("[rank 1] weights-fingerprint: ");
  ASSERT_NE(first, std::string::npos) << r.out;
  ASSERT_NE(second, std::string::npos) << r.out;
  EXPECT_EQ(r.out.substr(first + 30, 16), r.out.substr(second + 30, 16));
  // One metrics file (rank 0's), with the evaluation over all 90 examples.
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir_ / "run")) files += e.path().extension() == ".jsonl";
  EXPECT_EQ(files, 1);
}

TEST_F(DistributedRunner, MacroAveragesOverTwoRanksEqualOneProcessOnTheSameWeightsAndNeedTheirClassCount) {
  const std::string env = "-u MASTER_PORT -u RANK -u WORLD_SIZE";
  // Without their class count the ranks' counts could be of different lengths: refused before step 1.
  const Result refused = run(env, "--nproc 2 " + recipe_ + " 'data.eval.metrics=[accuracy, f1]'");
  EXPECT_EQ(refused.code, 2) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("evaluator \"test\" metric \"f1\" cannot be added up over 2 ranks: give its class "
                             "count, {f1: {num_classes: 10}}"),
            std::string::npos)
      << refused.err;
  // Trained on two ranks, each evaluating its half of the 90 examples: the counts added up give what one process
  // finds evaluating the same final weights (the checkpoint) on all of them, exactly; each class's recall too.
  const std::string metrics = " 'data.eval.metrics=[{precision: {num_classes: 3}}, "
                              "{recall: {num_classes: 3, per_class: true}}, {f1: {num_classes: 3}}]' ",
                    folder = (dir_ / "checkpoints").string();
  const Result trained =
      run(env, "--nproc 2 " + recipe_ + metrics + "'loggers=[{jsonl: {}}]' 'checkpoint={folder: " + folder + "}'");
  ASSERT_EQ(trained.code, 0) << trained.out << trained.err;
  const Result evaluated =
      run(env, recipe_ + metrics + "'checkpoint={folder: " + folder + ", autoresume: true}' --evaluate");
  ASSERT_EQ(evaluated.code, 0) << evaluated.out << evaluated.err;
  const std::string jsonl = slurp(dir_ / "run" / "metrics.jsonl");
  for (const std::string name : {"precision", "recall", "f1", "recall/class_0", "recall/class_1", "recall/class_2"}) {
    const std::string key = "\"metrics/test/" + name + "\":";
    const size_t at = jsonl.rfind(key);  // the final evaluation
    ASSERT_NE(at, std::string::npos) << jsonl;
    const double two_ranks = std::stod(jsonl.substr(at + key.size()));
    std::smatch m;
    ASSERT_TRUE(std::regex_search(evaluated.out, m, std::regex("metrics/test/" + name + ": ([0-9.e-]+)\n")))
        << evaluated.out;
    EXPECT_EQ(two_ranks, std::stod(m[1])) << name;
    EXPECT_GT(two_ranks, 0.0) << name;
  }
}

TEST_F(DistributedRunner, BadRecipeUnderNprocIsExit2WithTheFailingRanksErrorPrefixed) {
  const Result r = run("-u MASTER_PORT -u RANK -u WORLD_SIZE", "--nproc 2 " + recipe_ + " 'model={mlp: {hidden: [-1]}}'");
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  // Both ranks fail on the recipe; the first to exit is the cause, and the launcher stops the other, which may not
  // have printed its own error by then. The cause's error is there, prefixed with its rank, and named at the end.
  for (const char* rank : {"0", "1"}) {
    if (r.err.find(std::string("rank ") + rank + " of 2 failed with exit code 2") == std::string::npos) continue;
    EXPECT_NE(r.err.find(std::string("[rank ") + rank + "] tessera-run: error: <command line> override 1: "
                         "model.mlp.hidden[0]: -1 is out of range"),
              std::string::npos)
        << r.err;
    return;
  }
  ADD_FAILURE() << "no rank named as failed with exit code 2:\n" << r.err;
}

TEST_F(DistributedRunner, RankNotBelowWorldSizeIsExit2) {
  const Result r = run("RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511", recipe_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("RANK=2 but WORLD_SIZE=2; expected a rank from 0 to 1"), std::string::npos) << r.err;
}

TEST_F(DistributedRunner, UnreachableMasterIsExit2) {
  const int port = tessera::dist::free_port();  // nothing listens there
  const Result r = run("RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port),
                       recipe_ + " distributed.connect_timeout=2");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("could not reach the master at 127.0.0.1:" + std::to_string(port)), std::string::npos) << r.err;
}

TEST_F(DistributedRunner, PortInUseIsExit2) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  const Result r = run("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port),
                       recipe_ + " distributed.connect_timeout=2");
  ::close(fd);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("rank 0 could not listen on 127.0.0.1:" + std::to_string(port)), std::string::npos) << r.err;
}

}  // namespace
