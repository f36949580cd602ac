// TensorBoard reads what the `tensorboard` logger writes: a run of tessera-run with both the JSON Lines and the
// TensorBoard loggers (and image_visualizer), its event file loaded by TensorBoard's own EventAccumulator and hparams protos (PyPI
// tensorboard 2.21.0 in the streaming peers' venv: scripts/install-peers.sh streaming, or $TESSERA_STREAMING_VENV;
// tests/core/tensorboard_interop.py). Skips, saying why, when the venv or its tensorboard is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "mds_support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(TensorboardInterop, TensorBoardReadsEveryScalarTextAndSettingOfARun) {
  REQUIRE_STREAMING_VENV(python);
  if (std::system((python + " -c 'import tensorboard' > /dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << "the streaming peers' venv has no tensorboard: recreate it with scripts/install-peers.sh streaming";
  }
  test::TempDir dir("tensorboard");
  const std::string run_dir = dir.path() + "/run";
  const std::string recipe = dir.path() + "/tiny.yaml";
  test::write_file(recipe, R"(max_duration: 2ep
seed: 3
threads: 1
run_dir: )" + run_dir + R"(
model: {resnet: {depth: 8, width: 8}}
data:
  train:
    dataset: {synthetic: {size: 64, input_shape: [1, 12, 12], num_classes: 3, noise: 0.5, seed: 2}}
    loader: {batch_size: 16, workers: 0}
  eval:
    label: test
    dataset: {synthetic: {size: 32, input_shape: [1, 12, 12], num_classes: 3, noise: 0.5, seed: 2}}
    loader: {batch_size: 32, shuffle: false, workers: 0}
    metrics: [accuracy, cross_entropy]
optimizer: {sgd: {lr: 0.05, momentum: 0.9, nesterov: true}}
algorithms: [{blurpool: {min_channels: 4}}, {label_smoothing: {smoothing: 0.1}}]
callbacks: [{image_visualizer: {interval: 3, num_images: 4}}]
loggers: [{jsonl: {}}, {tensorboard: {}}]
)");
  const std::string log = dir.path() + "/run.log";
  const std::string command = std::string("'") + TESSERA_RUN_PATH + "' '" + recipe + "' > '" + log + "' 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << test::read_file(log);
  const std::string events = run_dir + "/events.out.tfevents.tessera";
  ASSERT_TRUE(fs::exists(events)) << test::read_file(log);
  EXPECT_NE(test::read_file(log).find(events), std::string::npos) << "listed with the metric files";

  const std::string out = dir.path() + "/dump.json";
  test::run_python_helper(python, "tensorboard_interop.py", "dump " + events + " " + out, dir.path() + "/dump.log");
  const json tb = json::parse(test::read_file(out));
  EXPECT_EQ(tb.at("file_version"), "brain.Event:2");
  EXPECT_TRUE(tb.at("reserialize_mismatches").empty()) << "records whose bytes differ from protobuf's: "
                                                       << tb.at("reserialize_mismatches").dump();

  // Every value of metrics.jsonl is a scalar at its batch, as float32, in the same order; nothing else is.
  std::map<std::string, std::vector<std::pair<int64_t, double>>> want_scalars;
  std::map<std::string, std::vector<std::string>> want_texts;
  std::map<std::string, std::string> settings;
  std::string fingerprint;
  int64_t last_batch = 0;
  std::istringstream lines(test::read_file(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const json j = json::parse(line);
    if (j.contains("hparams")) {
      if (j.at("hparams").contains("weights_fingerprint")) {
        fingerprint = j.at("hparams").at("weights_fingerprint");
      } else {
        for (const auto& [k, v] : j.at("hparams").items()) settings[k] = v;
      }
    } else if (j.contains("text")) {
      want_texts["log/" + j.at("level").get<std::string>()].push_back(j.at("text"));
    } else {
      last_batch = j.at("batch");
      for (const auto& [k, v] : j.items()) {
        if (k == "epoch" || k == "batch" || k == "sample" || k == "wct") continue;
        want_scalars[k].emplace_back(last_batch, static_cast<float>(v.get<double>()));
      }
    }
  }
  ASSERT_FALSE(want_scalars.empty());
  ASSERT_TRUE(want_scalars.count("metrics/test/accuracy"));
  ASSERT_EQ(tb.at("scalars").size(), want_scalars.size()) << tb.at("scalars").dump();
  for (const auto& [tag, want] : want_scalars) {
    SCOPED_TRACE(tag);
    const json& got = tb.at("scalars").at(tag);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i][0].get<int64_t>(), want[i].first);
      EXPECT_EQ(got[i][1].get<double>(), want[i].second);  // float32 -> double, both ways exact
    }
  }

  // Notes and warnings are text, in order, at the batch of the event they came at (blurpool's note at Init: 0).
  ASSERT_TRUE(want_texts.count("log/info"));
  for (const auto& [tag, want] : want_texts) {
    SCOPED_TRACE(tag);
    const json& got = tb.at("texts").at(tag);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i][1].get<std::string>(), want[i]);
  }
  EXPECT_EQ(tb.at("texts").at("log/info")[0][0], 0);
  EXPECT_NE(tb.at("texts").at("log/info")[0][1].get<std::string>().find("blurpool: replaced"), std::string::npos);

  // The recipe's settings make one hparams session: numbers as numbers, the rest as text; they and the final
  // fingerprint are also in the "hyperparameters" text (two tables: at Init, at the end).
  ASSERT_FALSE(settings.empty());
  EXPECT_EQ(settings.at("optimizer.sgd.lr"), "0.05");
  EXPECT_EQ(settings.at("algorithms[1].label_smoothing.smoothing"), "0.1");
  EXPECT_EQ(tb.at("hparams_sessions"), 1);
  const json& hparams = tb.at("hparams");
  EXPECT_EQ(hparams.size(), settings.size());
  EXPECT_EQ(hparams.at("optimizer.sgd.lr").at("number_value").get<double>(), 0.05);
  EXPECT_EQ(hparams.at("optimizer.sgd.nesterov").at("bool_value"), true);
  EXPECT_EQ(hparams.at("max_duration").at("string_value"), "2ep");
  EXPECT_EQ(hparams.at("model.resnet.depth").at("number_value").get<double>(), 8.0);
  EXPECT_FALSE(hparams.contains("weights_fingerprint"));
  EXPECT_NEAR(tb.at("start_time").get<double>(), tb.at("first_wall_time").get<double>(), 1e-3);
  const json& tables = tb.at("texts").at("hyperparameters");
  ASSERT_EQ(tables.size(), 2u);
  EXPECT_NE(tables[0][1].get<std::string>().find("| optimizer.sgd.lr | 0.05 |"), std::string::npos);
  ASSERT_FALSE(fingerprint.empty());
  EXPECT_EQ(tables[1][1].get<std::string>(),
            "| name | value |\n|---|---|\n| weights_fingerprint | " + fingerprint + " |\n");
  EXPECT_EQ(tables[1][0].get<int64_t>(), last_batch);

  // image_visualizer's grids, decoded by PIL: every third training batch (8 in all: 0, 3, 6) and the first batch of
  // each evaluation (after 4 and 8 batches); 4 gray images of 12x12 in 2 rows of 2, 2-pixel borders.
  const json& images = tb.at("images");
  ASSERT_EQ(images.size(), 2u) << images.dump();
  const auto steps = [&](const std::string& tag) {
    std::vector<int64_t> out;
    for (const auto& image : images.at(tag)) {
      out.push_back(image.at("step"));
      EXPECT_EQ(image.at("size"), json::array({30, 30}));
      EXPECT_EQ(image.at("mode"), "L");
      EXPECT_EQ(image.at("extrema"), json::array({0, 255}));  // each image scaled by its own range
    }
    return out;
  };
  EXPECT_EQ(steps("images/train"), (std::vector<int64_t>{0, 3, 6}));
  EXPECT_EQ(steps("images/test"), (std::vector<int64_t>{4, 8}));
}

}  // namespace
}  // namespace tessera
