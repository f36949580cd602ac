// tessera-run end to end: a tiny synthetic recipe trained by the built binary, --plan, --dry-run, --evaluate and
// --generate on a checkpoint's weights, and errors.
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <tessera/engine.h>
#include <tessera/models/generate.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
#include <tessera/safetensors.h>
#include <tessera/trainer.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

namespace {

namespace fs = std::filesystem;

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// `text` in single quotes for the shell (appended piece by piece: GCC 12 warns, falsely, on "'" + a temporary).
std::string quoted(const std::string& text) {
  std::string out = "'";
  out += text;
  out += "'";
  return out;
}

/// A fresh folder per test, removed afterwards.
class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "tessera_runner_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// Writes the tiny recipe (an MLP on 256 synthetic examples, 8 batches per epoch, 3 epochs = 24 batches).
  std::string write_recipe(const std::string& extra = "") {
    const std::string text = R"(# a tiny run for the runner test
max_duration: 3ep
seed: 11
threads: 1
run_dir: )" + (dir_ / "run").string() +
                             R"(
model:
  mlp: {hidden: [32]}
data:
  train:
    dataset: {synthetic: {size: 256, input_shape: [1, 4, 4], num_classes: 3, noise: 0.5, seed: 2}}
    loader: {batch_size: 32, workers: 0}
  eval:
    label: test
    dataset: {synthetic: {size: 96, input_shape: [1, 4, 4], num_classes: 3, noise: 0.5, seed: 2}}
    loader: {batch_size: 48, shuffle: false, workers: 0}
    metrics: [accuracy, cross_entropy]
optimizer:
  sgd: {lr: 0.1, momentum: 0.9}
loggers: [{jsonl: {}}, {csv: {}}]
)" + extra;
    const fs::path path = dir_ / "tiny.yaml";
    std::ofstream(path) << text;
    return path.string();
  }

  Result run(const std::string& args) { return run_env("", args); }

  /// The runner under `env` with `env_args` ("-u NAME NAME=value ...") in front of it.
  Result run_env(const std::string& env_args, const std::string& args) {
    const fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    const std::string command = (env_args.empty() ? "" : "env " + env_args) + "'" + TESSERA_RUN_PATH + "' " +
                                args + " >'" + out.string() + "' 2>'" + err.string() + "'";
    const int status = std::system(command.c_str());
    Result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
  }

  fs::path dir_;
};

TEST_F(RunnerTest, TrainsAndPrintsFinalLines) {
  const std::string recipe = write_recipe();
  const Result r = run("'" + recipe + "'");
  ASSERT_EQ(r.code, 0) << r.out << r.err;

  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(final test accuracy: (\d+\.\d\d)%)"))) << r.out;
  const double accuracy = std::stod(m[1]);
  EXPECT_GE(accuracy, 60.0) << "3 epochs on well-separated synthetic classes should learn them";
  EXPECT_LE(accuracy, 100.0);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(final test cross_entropy: \d+\.\d{4}\n)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(final train accuracy: \d+\.\d\d%\n)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(wall time: \d+\.\d s\n)"))) << r.out;
  // device: auto (the default) is the CPU on a machine without CUDA
  EXPECT_NE(r.out.find(at::hasCUDA() ? "device: cuda:0\n" : "device: cpu\n"), std::string::npos) << r.out;
  const std::string jsonl = (dir_ / "run" / "metrics.jsonl").string(),
                    csv = (dir_ / "run" / "metrics.csv").string();
  EXPECT_NE(r.out.find("metrics written to: " + jsonl + ", " + csv + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("checkpoints: none\n"), std::string::npos) << r.out;
  // The last line: the fingerprint of the final weights, also logged to metrics.jsonl.
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(\nweights-fingerprint: ([0-9a-f]{16})\n$)"))) << r.out;
  const std::string fingerprint = m[1];

  // The logger files exist and hold the final evaluation.
  ASSERT_TRUE(fs::exists(jsonl));
  ASSERT_TRUE(fs::exists(csv));
  EXPECT_NE(slurp(jsonl).find("metrics/test/accuracy"), std::string::npos);
  EXPECT_NE(slurp(jsonl).find("\"weights_fingerprint\":\"" + fingerprint + "\""), std::string::npos);
  EXPECT_EQ(slurp(csv).rfind("epoch,batch,sample,wct,key,value\n", 0), 0u);
}

TEST_F(RunnerTest, OverridesApply) {
  const std::string recipe = write_recipe();
  // 1 batch of training, evaluation on one metric only: the final lines reflect both overrides.
  const Result r = run("'" + recipe + "' max_duration=1ba data.eval.metrics=[cross_entropy] loggers=[]");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("final test cross_entropy: "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("final test accuracy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("metrics written to: none\n"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "run" / "metrics.jsonl"));
}

TEST_F(RunnerTest, SaysWhereTheProfilersTracesAre) {
  const std::string recipe = write_recipe();
  const Result r = run("'" + recipe + "' max_duration=2ba loggers=[] 'profiler={warmup: 0, active: 1, repeat: 2}'");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string folder = (dir_ / "run" / "traces").string();
  EXPECT_NE(r.out.find("profiler traces: " + folder + " (2 windows: ep0-ba0-rank0.json, ep0-ba1-rank0.json)\n"),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(fs::exists(fs::path(folder) / "ep0-ba1-rank0.json"));
  const Result plain = run("'" + recipe + "' max_duration=1ba loggers=[]");
  EXPECT_EQ(plain.out.find("profiler traces"), std::string::npos) << plain.out;
}

// Issue 13: OpenMP's threads spin while every busy thread of the run has a core of its own, spin and then sleep
// when the loader's threads share the cores, sleep at once when the compute threads alone are more than the
// cores; a choice in the environment is the user's and is kept.
TEST_F(RunnerTest, OpenMpWaitingIsChosenFromTheRunsThreadsAndCoresUnlessTheUserChose) {
  const std::string recipe = write_recipe();
  const std::string unset = "-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u TESSERA_OPENMP_WAITING -u LOCAL_WORLD_SIZE ";
  const int64_t cores = tessera::available_cores();
  const std::string on_cores = " on " + std::to_string(cores) + (cores == 1 ? " core" : " cores");
  const Result own = run_env(unset, "'" + recipe + "' max_duration=1ba");  // 1 intra-op thread, no loader thread
  ASSERT_EQ(own.code, 0) << own.out << own.err;
  EXPECT_TRUE(std::regex_search(own.out, std::regex(R"(\ncpu threads: 1 intra-op \+ 0 loader threads on \d+ cores?: )"
                                                    R"(OpenMP threads spin \(OMP_WAIT_POLICY=ACTIVE\)\n)")))
      << own.out;
  if (cores < 64) {  // 1 + 63 loader threads share the cores
    const Result shared = run_env(unset, "'" + recipe + "' max_duration=1ba data.train.loader.workers=63");
    ASSERT_EQ(shared.code, 0) << shared.out << shared.err;
    EXPECT_NE(shared.out.find("cpu threads: 1 intra-op + 63 loader threads" + on_cores +
                              ": OpenMP threads spin, then sleep (OMP_WAIT_POLICY=PASSIVE, "
                              "GOMP_SPINCOUNT=300000)\n"),
              std::string::npos)
        << shared.out;
  }
  const std::string more = std::to_string(cores + 1);  // more intra-op threads than cores
  const Result over = run_env(unset, "'" + recipe + "' max_duration=1ba threads=" + more);
  ASSERT_EQ(over.code, 0) << over.out << over.err;
  EXPECT_NE(over.out.find("cpu threads: " + more + " intra-op + 0 loader threads" + on_cores +
                          ": OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE)\n"),
            std::string::npos)
      << over.out;
  // threads: 0 is this process's share of the cores it may use: pinned to one CPU, one thread on one core.
  if (std::system("command -v taskset >/dev/null") == 0) {
    const Result pinned = run_env(unset + "taskset -c 0 ", "'" + recipe + "' max_duration=1ba threads=0");
    ASSERT_EQ(pinned.code, 0) << pinned.out << pinned.err;
    EXPECT_NE(pinned.out.find("cpu threads: 1 intra-op + 0 loader threads on 1 core: "), std::string::npos)
        << pinned.out;
  }
  const Result user = run_env(unset + "OMP_WAIT_POLICY=passive ", "'" + recipe + "' max_duration=1ba");
  ASSERT_EQ(user.code, 0) << user.out << user.err;
  EXPECT_NE(user.out.find("\ncpu threads: OpenMP waiting as set in the environment: OMP_WAIT_POLICY=passive, "
                          "GOMP_SPINCOUNT=(unset)\n"),
            std::string::npos)
      << user.out;
}

TEST_F(RunnerTest, PlanPrintsTheTable) {
  const std::string recipe = write_recipe();
  const Result r = run("'" + recipe + "' --plan");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, tessera::compile_plan({}).table());
  EXPECT_NE(r.out.find("plan: "), std::string::npos);
}

TEST_F(RunnerTest, DryRunSummarisesWithoutTraining) {
  const std::string recipe = write_recipe("checkpoint: {folder: ckpt}\n");
  const Result r = run("'" + recipe + "' --dry-run");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // 16*32 + 32 + 32*3 + 3 parameters; 256 examples / 32 = 8 batches; 3 epochs = 24 steps.
  EXPECT_NE(r.out.find("model mlp with 643 parameters"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("256 examples in 8 batches of 32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("max_duration 3ep = 24 steps"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("evaluator \"test\""), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("final "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("checkpoints: " + (dir_ / "run" / "ckpt").string() + " every 1ep, keeping 3"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "run" / "ckpt"));
  EXPECT_NE(r.out.find(at::hasCUDA() ? "; device cuda:0;" : "; device cpu;"), std::string::npos) << r.out;
}

// Issue 18 (what a new user ran into): --dry-run said everything was valid for a schedule that ends before its warmup
// once max_duration was shortened, and the run then failed at step 1 without a location. build_run checks the
// schedules against the run's length, in --dry-run too: exit 2, at the recipe line, in whole batches, with the fix.
TEST_F(RunnerTest, DryRunRefusesAScheduleThatEndsBeforeItsWarmup) {
  const std::string recipe = write_recipe("schedulers:\n  - cosine: {t_max: 1dur, warmup: 1ep}\n");  // line 21
  const Result ok = run("'" + recipe + "' --dry-run");
  ASSERT_EQ(ok.code, 0) << ok.out << ok.err;  // 3ep = 24 batches after a warmup of 8
  const Result r = run("'" + recipe + "' max_duration=5ba --dry-run");
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind("tessera-run: error: " + recipe + ":21:", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("schedulers[0].cosine.t_max: 1dur is 5 batches in this run, not more than the cosine "
                       "scheduler's warmup 1ep (8 batches); expected a t_max after the warmup: lengthen t_max (or "
                       "max_duration, when t_max is in dur), or shorten the warmup"),
            std::string::npos)
      << r.err;
}

TEST_F(RunnerTest, CudaWhereThereIsNoneExitsTwoBeforeTraining) {
  if (at::hasCUDA()) GTEST_SKIP() << "a CUDA device is visible";
  const std::string recipe = write_recipe("device: cuda\n");  // line 20
  Result r = run("'" + recipe + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "tessera-run: error: " + recipe +
                       ":20:9: device: cuda was requested but CUDA is not available here (no CUDA device is "
                       "visible, or this LibTorch was built without CUDA); use device: cpu or auto\n");
  EXPECT_EQ(r.out, "");
  EXPECT_FALSE(fs::exists(dir_ / "run" / "metrics.jsonl")) << "nothing may start before the error";

  const std::string plain = write_recipe();
  r = run("'" + plain + "' device=cuda:0");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("tessera-run: error: <command line> override 1: device: cuda:0 was requested but CUDA is "
                       "not available here"),
            std::string::npos)
      << r.err;

  r = run("'" + plain + "' device=cuda:x");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("device: \"cuda:x\" is not a device (did you mean \"cuda\"?); expected cpu, cuda, cuda:N (N = "
                       "0, 1, ...) or auto"),
            std::string::npos)
      << r.err;

  r = run("'" + plain + "' device=cpu max_duration=1ba loggers=[]");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("device: cpu\n"), std::string::npos) << r.out;
}

TEST_F(RunnerTest, AmpFp16OnTheCpuExitsTwoBeforeTrainingWithTheReason) {
  const std::string recipe = write_recipe("device: cpu\nprecision: amp_fp16\n");  // line 21
  const Result r = run("'" + recipe + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "tessera-run: error: " + recipe +
                       ":21:12: precision: amp_fp16 cannot run on cpu: autocast on the CPU runs bfloat16 only (LibTorch "
                       "1.13 refuses float16 there, and CPUs have no fast float16 matrix products). Use precision "
                       "amp_bf16 on the CPU, or train on CUDA (device: cuda) for amp_fp16\n");
  EXPECT_EQ(r.out, "");
  EXPECT_FALSE(fs::exists(dir_ / "run" / "metrics.jsonl")) << "nothing may start before the error";

  const std::string eval = write_recipe("device: cpu\neval_precision: amp_fp16\n");
  const Result e = run("'" + eval + "'");
  EXPECT_EQ(e.code, 2);
  EXPECT_EQ(e.err.rfind("tessera-run: error: " + eval + ":21:17: eval_precision: amp_fp16 cannot run on cpu: ", 0), 0u)
      << e.err;
  EXPECT_EQ(e.out, "");
}

TEST_F(RunnerTest, BadRecipeExitsTwoWithLocation) {
  const std::string recipe = write_recipe();
  std::string text = slurp(recipe);
  text.replace(text.find("lr: 0.1"), 7, "lr: -0.1");
  std::ofstream(recipe) << text;
  const Result r = run("'" + recipe + "'");
  EXPECT_EQ(r.code, 2);
  // line 18 is "  sgd: {lr: -0.1, momentum: 0.9}"
  EXPECT_EQ(r.err, "tessera-run: error: " + recipe +
                       ":18:13: optimizer.sgd.lr: -0.1 is out of range; expected a number > 0\n");
  EXPECT_EQ(r.out, "");
}

TEST_F(RunnerTest, BadOverrideAndMissingFileExitTwo) {
  const std::string recipe = write_recipe();
  Result r = run("'" + recipe + "' optimizer.sgd.lr0.05");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "tessera-run: error: override \"optimizer.sgd.lr0.05\": expected key.path=value\n");

  r = run("'" + recipe + "' optimizer.sgd.momentom=0.5");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("tessera-run: error: <command line> override 1: optimizer.sgd.momentom: unknown key"),
            std::string::npos)
      << r.err;

  const std::string missing = (dir_ / "missing.yaml").string();
  r = run("'" + missing + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err,
            "tessera-run: error: recipe file \"" + (dir_ / "missing.yaml").string() + "\" not found\n");
}

}  // namespace

TEST_F(RunnerTest, EvaluateRunsTheEvaluatorsOnTheCheckpointsWeightsWithoutTraining) {
  const std::string recipe = write_recipe("checkpoint: {folder: ck, interval: 1ep, autoresume: true}\n");
  const Result trained = run("'" + recipe + "' max_duration=1ep");
  ASSERT_EQ(trained.code, 0) << trained.out << trained.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(trained.out, m, std::regex(R"(final test accuracy: (\d+\.\d\d)%)"))) << trained.out;
  const std::string final_accuracy = m[1];
  const auto checkpoint_time = fs::last_write_time(dir_ / "run" / "ck" / "latest");
  const std::string jsonl = slurp(dir_ / "run" / "metrics.jsonl"), csv = slurp(dir_ / "run" / "metrics.csv");
  const Result evaluated = run("'" + recipe + "' max_duration=1ep --evaluate");
  ASSERT_EQ(evaluated.code, 0) << evaluated.out << evaluated.err;
  EXPECT_NE(evaluated.err.find("tessera-run: weights from "), std::string::npos) << evaluated.err;
  ASSERT_TRUE(std::regex_search(evaluated.out, m, std::regex(R"(metrics/test/accuracy: ([0-9.e-]+)\n)"))) << evaluated.out;
  char percent[32];
  std::snprintf(percent, sizeof percent, "%.2f", 100.0 * std::stod(m[1]));
  EXPECT_EQ(percent, final_accuracy) << "the weights the run ended with";
  EXPECT_NE(evaluated.out.find("metrics/test/cross_entropy: "), std::string::npos) << evaluated.out;
  EXPECT_EQ(evaluated.out.find("final "), std::string::npos) << "no training";
  EXPECT_EQ(fs::last_write_time(dir_ / "run" / "ck" / "latest"), checkpoint_time) << "no checkpoint written";
  EXPECT_EQ(slurp(dir_ / "run" / "metrics.jsonl"), jsonl) << "the training's metric files are left as they were";
  EXPECT_EQ(slurp(dir_ / "run" / "metrics.csv"), csv);

  // --generate on a classifier, --nproc with --evaluate, and no checkpoint to load: exit 2 with the reason.
  const auto expect_refused = [&](const std::string& args, const std::string& reason) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out << r.err;
    EXPECT_NE(r.err.find(reason), std::string::npos) << args << "\n" << r.err;
  };
  expect_refused("'" + recipe + "' max_duration=1ep --generate 'the '",
                 "needs a language model of the recipe's text vocabulary (256 tokens: bytes)");
  expect_refused("'" + recipe + "' --nproc 2 --evaluate", "leave out --nproc");
  expect_refused(quoted(write_recipe()) + " --evaluate",  // the recipe without its checkpoint section
                 "--evaluate, --generate and the exports use trained weights, and the recipe loads none: give "
                 "checkpoint.load_path=FILE");
}

TEST_F(RunnerTest, ExportWritesTheCheckpointsWeightsAsSafetensorsWhichLoadBackIntoARun) {
  const std::string recipe = write_recipe("checkpoint: {folder: ck, interval: 1ep, autoresume: true}\n");
  ASSERT_EQ(run("'" + recipe + "' max_duration=1ep").code, 0);
  const std::string file = (dir_ / "out" / "weights.safetensors").string();  // a folder that does not exist yet
  const Result exported = run("'" + recipe + "' max_duration=1ep --export '" + file + "'");
  ASSERT_EQ(exported.code, 0) << exported.out << exported.err;
  EXPECT_NE(exported.err.find("weights to " + file + " (safetensors)"), std::string::npos) << exported.err;

  // The file holds the checkpoint's weights, bit for bit, with the run's position in its metadata.
  const tessera::Safetensors weights = tessera::load_safetensors(file);
  tessera::Run same = tessera::build_run(tessera::Recipe::load(recipe, {"max_duration=1ep"}));
  tessera::Trainer trainer(same.trainer, std::move(same.components), same.checkpoint);
  const auto params = trainer.state().model->named_parameters();
  const auto buffers = trainer.state().model->named_buffers();
  ASSERT_EQ(weights.tensors.size(), params.size() + buffers.size());
  for (const auto& [name, t] : weights.tensors) {
    const at::Tensor* mine = params.find(name) ? params.find(name) : buffers.find(name);
    ASSERT_NE(mine, nullptr) << name;
    EXPECT_TRUE(at::equal(t, *mine)) << name;
  }
  EXPECT_EQ(weights.metadata.at("format"), "pt");
  EXPECT_EQ(weights.metadata.at("epoch"), "1");

  // Loaded into a fresh run (weights only), they evaluate as the trained run's own.
  const std::string load = "checkpoint.load_path='" + file + "'";
  const Result original = run("'" + recipe + "' max_duration=1ep --evaluate");
  const Result loaded = run(quoted(write_recipe()) + " " + load + " checkpoint.weights_only=true --evaluate");
  ASSERT_EQ(loaded.code, 0) << loaded.out << loaded.err;
  EXPECT_EQ(loaded.out, original.out);
  const Result resumed = run(quoted(write_recipe()) + " " + load + " max_duration=1ep");
  EXPECT_EQ(resumed.code, 2) << resumed.out << resumed.err;
  EXPECT_NE(resumed.err.find("is a safetensors file: it holds weights only, not a run to resume; set "
                             "checkpoint.weights_only=true"),
            std::string::npos)
      << resumed.err;
}

TEST_F(RunnerTest, GenerateContinuesPromptsWithTheCheckpointsLanguageModel) {
  // A GPT with surgery at init (gated linear units, ALiBi), re-applied when the checkpoint loads.
  const fs::path text = dir_ / "words.txt";
  {
    std::ofstream out(text);
    for (int i = 0; i < 300; ++i) out << "the quick brown fox " << (i % 7 == 0 ? "jumps\n" : "runs ");
  }
  const fs::path recipe = dir_ / "gpt.yaml";
  std::ofstream(recipe) << "max_duration: 4ba\nseed: 3\nthreads: 1\nrun_dir: " << (dir_ / "gpt").string() << "\n"
                        << "model: {gpt: {d_model: 16, n_layers: 2, n_heads: 2}}\n"
                        << "data:\n  train:\n    dataset: {text: {path: " << text.string() << ", seq_length: 16}}\n"
                        << "    loader: {batch_size: 8}\n"
                        << "optimizer: {adamw: {lr: 0.01}}\nloggers: []\n"
                        << "algorithms: [gated_linear_units, {alibi: {train_sequence_length_scaling: 0.5}}]\n"
                        << "checkpoint: {folder: ck, interval: 2ba, autoresume: true}\n";
  const std::string gpt = quoted(recipe.string());
  ASSERT_EQ(run(gpt).code, 0);
  const Result r = run(gpt + " --generate 'the ' --generate 'fox' --generate-options '{max_new_tokens: 6, temperature: 0}'");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // The same weights in this process: the same greedy continuations.
  tessera::Run same = tessera::build_run(tessera::Recipe::load(recipe.string()));
  tessera::Trainer trainer(same.trainer, std::move(same.components), same.checkpoint);
  ASSERT_FALSE(trainer.loaded_checkpoint().empty());
  std::string expected;
  for (const char* prompt : {"the ", "fox"}) {
    const at::Tensor ids = tessera::generate(*trainer.state().model, tessera::text_to_bytes(prompt).unsqueeze(0),
                                             tessera::GenerateOptions().max_new_tokens(6).temperature(0));
    expected += tessera::bytes_to_text(ids[0]) + "\n";
  }
  EXPECT_EQ(r.out, expected);
  EXPECT_EQ(r.out.size(), 10u + 1 + 9 + 1);
  // One prompt per --generate: an override after it stays an override.
  const Result one =
      run(gpt + " --generate 'the ' threads=1 --generate-options '{max_new_tokens: 6, temperature: 0}'");
  ASSERT_EQ(one.code, 0) << one.out << one.err;
  EXPECT_EQ(one.out, expected.substr(0, expected.find('\n') + 1));
  const Result bad = run(gpt + " --generate 'the ' --generate-options '{top: 3}'");
  EXPECT_EQ(bad.code, 2) << bad.out << bad.err;
  EXPECT_NE(bad.err.find("--generate-options:1:2: top: unknown key \"top\" in --generate-options; did you mean "
                         "\"top_k\"?"),
            std::string::npos)
      << bad.err;
}

TEST_F(RunnerTest, ExportHuggingfaceWritesTheCheckpointsGptAsAGpt2FolderThatARecipeStartsFrom) {
  const fs::path text = dir_ / "words.txt";
  {
    std::ofstream out(text);
    for (int i = 0; i < 300; ++i) out << "the quick brown fox " << (i % 7 == 0 ? "jumps\n" : "runs ");
  }
  const auto write = [&](const std::string& name, const std::string& model, const std::string& algorithms) {
    const fs::path recipe = dir_ / (name + ".yaml");
    std::ofstream(recipe) << "max_duration: 4ba\nseed: 3\nthreads: 1\nrun_dir: " << (dir_ / name).string() << "\n"
                          << "model: " << model << "\n"
                          << "data:\n  train:\n    dataset: {text: {path: " << text.string() << ", seq_length: 16}}\n"
                          << "    loader: {batch_size: 8}\n"
                          << "  eval:\n    dataset: {text: {path: " << text.string()
                          << ", split: test, seq_length: 16}}\n    metrics: [cross_entropy]\n"
                          << "optimizer: {adamw: {lr: 0.01}}\nloggers: []\nalgorithms: [" << algorithms << "]\n"
                          << "checkpoint: {folder: ck, interval: 2ba, autoresume: true}\n";
    return recipe.string();
  };
  const std::string gpt2 = write(
      "gpt2", "{gpt: {d_model: 16, n_layers: 2, n_heads: 2, tie_embeddings: true, activation: gelu_tanh}}",
      "label_smoothing");
  ASSERT_EQ(run(quoted(gpt2)).code, 0);
  const fs::path folder = dir_ / "exported";
  const Result exported = run(quoted(gpt2) + " --export-huggingface " + quoted(folder.string()));
  ASSERT_EQ(exported.code, 0) << exported.out << exported.err;
  EXPECT_NE(exported.err.find("wrote a Hugging Face checkpoint to"), std::string::npos) << exported.err;
  // A run from the folder starts on the checkpoint's weights.
  tessera::Run trained = tessera::build_run(tessera::Recipe::load(gpt2));
  tessera::Trainer trainer(trained.trainer, std::move(trained.components), trained.checkpoint);
  const std::string from = write("from", "{gpt: {pretrained: " + folder.string() + "}}", "");
  tessera::Run started = tessera::build_run(tessera::Recipe::load(from));
  const auto loaded = started.components.model->named_parameters();
  for (const auto& item : trainer.state().model->named_parameters()) {
    EXPECT_TRUE(at::equal(loaded[item.key()], item.value())) << item.key();
  }
  // Without a checkpoint, the folder's weights are the trained ones: --evaluate evaluates them as the trained run's
  // checkpoint evaluates.
  const std::string evaluated = write("evaluated", "{gpt: {pretrained: " + folder.string() + "}}", "");
  const Result from_folder = run(quoted(evaluated) + " --evaluate");
  ASSERT_EQ(from_folder.code, 0) << from_folder.out << from_folder.err;
  EXPECT_NE(from_folder.err.find("(the pretrained Hugging Face GPT-2 checkpoint)"), std::string::npos)
      << from_folder.err;
  const Result from_checkpoint = run(quoted(gpt2) + " --evaluate");
  ASSERT_EQ(from_checkpoint.code, 0) << from_checkpoint.out << from_checkpoint.err;
  EXPECT_NE(from_folder.out.find("metrics/eval/cross_entropy: "), std::string::npos) << from_folder.out;
  EXPECT_EQ(from_folder.out, from_checkpoint.out);
  // What GPT-2 cannot hold is refused, exit 2, writing nothing.
  const std::string glu = write("glu", "{gpt: {d_model: 16, n_layers: 2, n_heads: 2}}", "gated_linear_units");
  ASSERT_EQ(run(quoted(glu)).code, 0);
  const Result refused = run(quoted(glu) + " --export-huggingface " + quoted((dir_ / "glu_out").string()));
  EXPECT_EQ(refused.code, 2) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("has no place in a GPT-2 checkpoint"), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(dir_ / "glu_out"));
}

TEST_F(RunnerTest, AutoresumeRefusesARecipeThatChangedWhatTrainsAndAllowsTheRest) {
  const std::string recipe = write_recipe("checkpoint: {folder: ck, interval: 1ep, autoresume: true}\n");
  const Result first = run("'" + recipe + "' max_duration=1ep");
  ASSERT_EQ(first.code, 0) << first.out << first.err;

  // A changed learning rate: refused before training, naming the change and the ways out; nothing is written.
  const auto before = fs::last_write_time(dir_ / "run" / "ck" / "latest");
  const Result changed = run("'" + recipe + "' max_duration=1ep optimizer.sgd.lr=0.3");
  EXPECT_EQ(changed.code, 2) << changed.out << changed.err;
  EXPECT_NE(changed.err.find("differs in what trains: optimizer.sgd.lr: 0.1 -> 0.3"), std::string::npos) << changed.err;
  EXPECT_NE(changed.err.find("resume_changed_recipe"), std::string::npos) << changed.err;
  EXPECT_EQ(fs::last_write_time(dir_ / "run" / "ck" / "latest"), before);

  // An extended max_duration does not change what trains: it resumes, says so, and trains the second epoch.
  const Result extended = run("'" + recipe + "' max_duration=2ep");
  ASSERT_EQ(extended.code, 0) << extended.out << extended.err;
  EXPECT_NE(extended.err.find("with changes that do not alter the training: max_duration: 1ep -> 2ep"),
            std::string::npos)
      << extended.err;
  EXPECT_TRUE(fs::exists(dir_ / "run" / "ck" / "ep2-ba16.ckpt"));

  // Asked for explicitly, a changed recipe resumes with a warning.
  const Result forced = run("'" + recipe + "' max_duration=3ep optimizer.sgd.lr=0.3 checkpoint.resume_changed_recipe=true");
  ASSERT_EQ(forced.code, 0) << forced.out << forced.err;
  EXPECT_NE(forced.err.find("although the recipe changed what trains"), std::string::npos) << forced.err;
}
