// tessera-shard, the command-line tool, end to end: `inspect` and `order` on a folder of shards; `merge` of parts
// into one data set; `write --text` into token samples; `order --recipe` on a
// two-stream recipe, whose figures are the library's StreamingDataset::shards_touched at the recipe's seed, batch size
// and shuffle; and bad input, exit 2 saying what was wrong and where (a seed a run would refuse, at its
// file:line:col; a recipe whose training data is not streaming; a folder without index.json; a bad command line).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>

#include <tessera/data/streaming.h>
#include <tessera/data/text.h>

#include "core/mds_support.h"

namespace tessera {
namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

/// The tool with `args`, its output captured in files of `dir`.
Result shard_tool(const std::string& dir, const std::string& args) {
  const std::string out = dir + "/stdout.txt", err = dir + "/stderr.txt";
  const std::string command = std::string("'") + TESSERA_SHARD_PATH + "' " + args + " >'" + out + "' 2>'" + err + "'";
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, test::read_file(out), test::read_file(err)};
}

/// The tool's line for one world size.
std::string line_of(const data::ShardsTouched& t, int world) {
  char line[200];
  std::snprintf(line, sizeof line, "  %d rank(s): shards per rank per epoch %.1f (max %lld); per batch share %.2f\n",
                world, t.per_rank_per_epoch, static_cast<long long>(t.max_per_rank_per_epoch), t.per_batch_share);
  return line;
}

/// Two folders of labelled samples in small shards: 200 (about 17 shards) and 120.
struct TwoFolders {
  test::TempDir tmp{"shard_tool"};
  std::string a = tmp.path() + "/a", b = tmp.path() + "/b";
  TwoFolders() {
    test::write_labels(a, 0, 200, 256);
    test::write_labels(b, 1000, 120, 256);
  }
  std::string recipe(const std::string& seed_line, const std::string& dataset = "") const {
    const std::string path = tmp.path() + "/r.yaml";
    test::write_file(path, "max_duration: 1ep\n" + seed_line + "\nmodel: {mlp: {hidden: [8]}}\ndata:\n  train:\n" +
                               (dataset.empty() ? "    dataset:\n      streaming:\n        streams: [{local: " + a +
                                                      "}, {local: " + b + ", repeat: 0.5}]\n"
                                                      "        batching_method: stratified\n"
                                                : "    dataset: " + dataset + "\n") +
                               "    loader: {batch_size: 16, shuffle: true}\noptimizer: {sgd: {lr: 0.1}}\n");
    return path;
  }
};

TEST(ShardTool, InspectsAndOrdersAFolder) {
  TwoFolders f;
  const Result inspect = shard_tool(f.tmp.path(), "inspect '" + f.a + "' --verify");
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("200"), std::string::npos) << inspect.out;
  const Result order = shard_tool(f.tmp.path(), "order '" + f.a + "' --batch-size 16 --ranks 1,2,4");
  ASSERT_EQ(order.code, 0) << order.err;
  const data::mds::Reader reader(f.a);
  const data::StreamingOrder streaming_order(reader.shard_offsets(), data::StreamingOrderOptions());
  for (int world : {1, 2, 4}) {
    const std::string expected = line_of(data::shards_touched(streaming_order, 0, 16, world, 1), world);
    EXPECT_NE(order.out.find(expected), std::string::npos) << expected << " in\n" << order.out;
  }
}

TEST(ShardTool, MergesThePartsOfParallelWritersAndInspectsTheWhole) {
  TwoFolders f;  // a and b: two parts of one data set (the same columns)
  test::write_labels(f.tmp.path() + "/c", 2000, 0, 256);  // a writer that got no samples
  const Result r = shard_tool(f.tmp.path(), "merge '" + f.tmp.path() + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("merged 2 parts ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" shards, 320 samples) into " + f.tmp.path() + "/index.json"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("skipped c: it has no samples"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("samples:     320"), std::string::npos) << r.out;  // then inspects the merged data set
  const data::mds::Reader merged(f.tmp.path());
  EXPECT_EQ(merged.sample(200).tensor("label").item<int64_t>(), 1000);  // b's samples follow a's
  // Nothing to merge: exit 2, saying what was expected.
  const Result none = shard_tool(f.tmp.path(), "merge '" + f.a + "'");
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("holds a data set of its own"), std::string::npos) << none.err;
}

TEST(ShardTool, WritesTextAsTokenSamplesThatStreamAsTheTextDatasetsExamples) {
  test::TempDir tmp("shard_tool_text");
  const std::string file = tmp.path() + "/words.txt", out = tmp.path() + "/mds";
  test::write_file(file, std::string(2000, 'a') + "the quick brown fox\n" + std::string(500, 'z'));
  const Result r = shard_tool(tmp.path(), "write --text '" + file + "' --seq-length 32 --out '" + out + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto text = data::load_text(data::TextOptions().path(file).seq_length(32));
  EXPECT_NE(r.out.find("wrote " + std::to_string(text->size()) + " samples"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tokens: bytes"), std::string::npos) << r.out;
  const data::StreamingDataset streamed(data::StreamingOptions().local(out).input("tokens").seq_length(32));
  ASSERT_EQ(streamed.size(), text->size());
  std::vector<int64_t> all(static_cast<size_t>(text->size()));
  std::iota(all.begin(), all.end(), 0);
  const Batch a = streamed.get_batch(all), b = text->get_batch(all);
  EXPECT_TRUE(at::equal(a.input(), b.input()));
  EXPECT_TRUE(at::equal(a.target(), b.target()));
  EXPECT_EQ(streamed.num_classes(), 256);
  // Nothing to convert, or a text too short for one example: exit 2, saying what.
  const Result none = shard_tool(tmp.path(), "write --out '" + tmp.path() + "/none'");
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("give the data to convert: --fashion-mnist or --text PATH"), std::string::npos) << none.err;
  const Result short_text =
      shard_tool(tmp.path(), "write --text '" + file + "' --seq-length 4000 --out '" + tmp.path() + "/short'");
  EXPECT_EQ(short_text.code, 2);
  EXPECT_NE(short_text.err.find("too few for one example"), std::string::npos) << short_text.err;
}

TEST(ShardTool, OrderOfARecipeIsTheLibrarysCountAtTheRecipesSeedBatchAndShuffle) {
  TwoFolders f;
  const std::string recipe = f.recipe("seed: 7");
  const Result r = shard_tool(f.tmp.path(), "order --recipe '" + recipe + "' --ranks 1,2,4");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("batches of 16, seed 7"), std::string::npos) << r.out;
  const data::StreamingDataset dataset(
      data::StreamingOptions()
          .streams({data::StreamOptions().local(f.a), data::StreamOptions().local(f.b).repeat(0.5)})
          .batching_method("stratified")
          .num_classes(1));
  for (int world : {1, 2, 4}) {
    const std::string expected = line_of(dataset.shards_touched(7, 16, world, 1, /*shuffle=*/true), world);
    EXPECT_NE(r.out.find(expected), std::string::npos) << expected << " in\n" << r.out;
  }
  // --batch-size overrides the recipe's.
  const Result eight = shard_tool(f.tmp.path(), "order --recipe '" + recipe + "' --batch-size 8 --ranks 2");
  ASSERT_EQ(eight.code, 0) << eight.err;
  EXPECT_NE(eight.out.find(line_of(dataset.shards_touched(7, 8, 2, 1, true), 2)), std::string::npos) << eight.out;
}

TEST(ShardTool, BadInputIsExit2SayingWhatAndWhere) {
  TwoFolders f;
  // A seed a run refuses, at the line and column of its value.
  for (const std::string seed : {"4294967296", "-1", "1.5"}) {
    const Result r = shard_tool(f.tmp.path(), "order --recipe '" + f.recipe("seed: " + seed) + "'");
    EXPECT_EQ(r.code, 2) << seed;
    EXPECT_NE(r.err.find(f.tmp.path() + "/r.yaml:2:7"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("seed"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  const Result synthetic = shard_tool(
      f.tmp.path(),
      "order --recipe '" + f.recipe("seed: 1", "{synthetic: {size: 8, input_shape: [1, 2, 2], num_classes: 2}}") + "'");
  EXPECT_EQ(synthetic.code, 2);
  EXPECT_NE(synthetic.err.find("data.train.dataset is not a streaming dataset"), std::string::npos) << synthetic.err;
  const Result missing = shard_tool(f.tmp.path(), "order '" + f.tmp.path() + "/nothing'");
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find("index.json"), std::string::npos) << missing.err;
  // A recipe's stream that is not there: at the recipe's streaming section.
  const Result gone = shard_tool(
      f.tmp.path(), "order --recipe '" + f.recipe("seed: 1", "{streaming: {local: " + f.tmp.path() + "/nothing}}") + "'");
  EXPECT_EQ(gone.code, 2);
  EXPECT_NE(gone.err.find(f.tmp.path() + "/r.yaml:6:26: data.train.dataset.streaming: "), std::string::npos) << gone.err;
  EXPECT_NE(gone.err.find("/nothing"), std::string::npos) << gone.err;
  const Result both = shard_tool(f.tmp.path(), "order '" + f.a + "' --recipe '" + f.recipe("seed: 1") + "'");
  EXPECT_EQ(both.code, 2) << both.err;
  EXPECT_EQ(shard_tool(f.tmp.path(), "order --recipe").code, 2);
  EXPECT_EQ(shard_tool(f.tmp.path(), "reorder").code, 2);
}

}  // namespace
}  // namespace tessera
