// tessera-shard: writes and inspects MDS datasets (MosaicML Streaming's shard format; docs/streaming.md).
//
//   tessera-shard write --fashion-mnist [--folder DIR] [--split train|test] [--limit N] [--image-encoding ndarray|png]
//                       --out DIR [--size-limit BYTES] [--compression zstd[:LEVEL]] [--hashes xxh3_64,...] [--exist-ok]
//   tessera-shard write --text PATH [--tokenizer T.json [--document-separator SEP]] [--seq-length 128]
//                       [--test-fraction 0.1] [--split train|test] [--limit N]
//                       --out DIR [...the same output options]   (token samples for streaming `seq_length`)
//   tessera-shard inspect DIR [--verify]
//   tessera-shard merge DIR              (joins the data sets parallel writers wrote into DIR's subfolders)
//   tessera-shard order DIR [--batch-size B] [--ranks 1,2,4,8] [--partitions L] [--shuffle-block-size K] [--epochs E]
//   tessera-shard order --recipe R.yaml [--batch-size B] [--ranks 1,2,4,8] [--epochs E]   (its streaming train data)
//
// Exit codes: 0 success, 2 bad input (a missing or malformed dataset, bad options), 1 anything else.
#include <tessera/data/dataloader.h>
#include <tessera/recipe.h>
#include <tessera/trainer.h>
#include <tessera/data/mds.h>
#include <tessera/data/streaming.h>
#include <tessera/data/text.h>
#include <tessera/data/tokenizer.h>
#include <tessera/error.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace mds = tessera::data::mds;

namespace {

/// One line per world size of what `touched(world)` counts.
std::string per_world(const std::vector<int>& worlds,
                      const std::function<tessera::data::ShardsTouched(int world)>& touched) {
  std::string out;
  for (int world : worlds) {
    const auto t = touched(world);
    char line[200];
    std::snprintf(line, sizeof line,
                  "  %d rank(s): shards per rank per epoch %.1f (max %lld); per batch share %.2f\n", world,
                  t.per_rank_per_epoch, static_cast<long long>(t.max_per_rank_per_epoch), t.per_batch_share);
    out += line;
  }
  return out;
}

std::string shards_per_rank(const std::string& dir, const tessera::data::StreamingOrderOptions& options,
                            int64_t batch_size, const std::vector<int>& worlds, int64_t epochs) {
  const mds::Reader reader(dir);
  const tessera::data::StreamingOrder order(reader.shard_offsets(), options);
  std::ostringstream out;
  out << dir << ": " << reader.size() << " samples in " << reader.num_shards() << " shards, batches of "
      << batch_size << ", partitions " << options.partitions() << ", shuffle_block_size "
      << options.shuffle_block_size() << "\n";
  out << per_world(worlds, [&](int world) {
    return tessera::data::shards_touched(order, 0, batch_size, world, epochs);
  });
  return out.str();
}

/// The same for a recipe's streaming training data (mixed streams, shares, batching method and all), at its seed,
/// its loader's shuffle and, unless `batch_size` > 0, its batch size. Reads only the recipe's data.train section (no
/// model, no evaluation data) and the streams' index.json files; no shard.
std::string recipe_shards_per_rank(const std::string& path, int64_t batch_size, const std::vector<int>& worlds,
                                   int64_t epochs) {
  const tessera::Recipe recipe = tessera::Recipe::load(path);
  const tessera::ConfigNode train = recipe.root().child("data").child("train");
  const tessera::ConfigNode node = train.child("dataset").child("streaming");
  if (!node.present()) {
    throw tessera::InputError(path + ": data.train.dataset is not a streaming dataset; `order --recipe` reports the "
                              "shards read of one (data.train.dataset: {streaming: ...})");
  }
  // The seed alone of the trainer's options, checked as a run checks it (its range, at its file:line:col).
  tessera::TrainerOptions trainer;
  const tessera::ConfigNode root = recipe.root();
  auto read_seed = [&](const char* name, auto& field, const char*, const auto& constraint) {
    if (std::string(name) == "seed" && root.has(name)) tessera::detail::read_checked(root.child(name), field, constraint);
  };
  trainer.visit(read_seed);
  tessera::data::DataLoaderOptions loader;
  tessera::read_options(train.child("loader"), loader, "data.train.loader");
  tessera::data::StreamingOptions options;
  tessera::read_options(node, options, "data.train.dataset.streaming");
  // The order needs no class count: a stand-in spares the pass over every stream's labels (every shard).
  if (options.num_classes() == 0) options.num_classes(1);
  std::unique_ptr<tessera::data::StreamingDataset> made;
  try {
    made = std::make_unique<tessera::data::StreamingDataset>(options);
  } catch (const tessera::InputError& e) {  // a missing folder, a bad index.json: where the recipe names them
    throw tessera::InputError(node.location() + ": data.train.dataset.streaming: " + e.what());
  }
  const tessera::data::StreamingDataset& dataset = *made;
  if (batch_size <= 0) batch_size = loader.batch_size();
  const auto seed = static_cast<uint64_t>(trainer.seed());
  std::ostringstream out;
  out << path << ": " << dataset.describe() << ", batches of " << batch_size << ", seed " << seed << " (shards "
      << "numbered stream by stream)\n";
  if (!loader.shuffle()) out << "  (the loader does not shuffle: each epoch in stream order)\n";
  out << per_world(worlds, [&](int world) {
    return dataset.shards_touched(seed, batch_size, world, epochs, loader.shuffle());
  });
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tessera-shard: write and inspect MDS datasets (MosaicML Streaming's format)"};
  app.require_subcommand(1);

  CLI::App* write = app.add_subcommand("write", "convert a data set into MDS shards");
  bool fashion = false, exist_ok = false;
  mds::FashionMnistShardOptions source;
  std::string out, compression, hashes;
  int64_t size_limit = int64_t{1} << 26;
  tessera::data::TextOptions text;
  auto* fashion_flag = write->add_flag("--fashion-mnist", fashion, "convert Fashion-MNIST's IDX .gz files");
  auto* text_option = write->add_option("--text", text.path(), "convert a text file (or a folder of them) into "
                                        "samples of seq-length + 1 bytes, column tokens, for streaming seq_length");
  fashion_flag->excludes(text_option);
  write->add_option("--folder", source.folder(), "folder of the IDX files")->capture_default_str()->excludes(text_option);
  write->add_option("--split", source.split(), "train or test")->capture_default_str();
  write->add_option("--limit", source.limit(), "keep only the first N examples (0 = all)")->capture_default_str();
  write->add_option("--image-encoding", source.image_encoding(), "ndarray (uint8 28x28, fixed size) or png")
      ->capture_default_str()
      ->excludes(text_option);
  write->add_option("--seq-length", text.seq_length(), "with --text: tokens per example")
      ->capture_default_str()
      ->needs(text_option);
  write->add_option("--tokenizer", text.tokenizer(),
                    "with --text: a byte-level BPE or WordPiece tokenizer.json; samples hold its ids as uint16 "
                    "(uint32 above 65,536 tokens)")
      ->needs(text_option);
  write->add_option("--document-separator", text.document_separator(),
                    "with --text and --tokenizer: text between documents; each is encoded with the tokenizer's "
                    "template tokens around it (such as $'\\n%\\n' between fortunes)")
      ->needs(text_option);
  write->add_option("--test-fraction", text.test_fraction(), "with --text: share of every file held out for test")
      ->capture_default_str()
      ->needs(text_option);
  write->add_option("--out", out, "output folder (must be empty unless --exist-ok)")->required();
  write->add_option("--size-limit", size_limit, "maximum bytes of a shard file")->capture_default_str();
  write->add_option("--compression", compression, "zstd or zstd:LEVEL (default: none)");
  write->add_option("--hashes", hashes, "comma-separated hash algorithms per file, e.g. xxh3_64");
  write->add_flag("--exist-ok", exist_ok, "write into a non-empty folder");

  CLI::App* inspect = app.add_subcommand("inspect", "print columns, sample count, shards and a checksum");
  std::string dir;
  bool verify = false;
  inspect->add_option("dir", dir, "dataset folder (holding index.json)")->required();
  inspect->add_flag("--verify", verify, "check every shard file against index.json's hashes");

  CLI::App* merge = app.add_subcommand(
      "merge", "join the data sets that parallel writers wrote into subfolders of DIR: writes DIR/index.json");
  std::string merge_dir;
  merge->add_option("dir", merge_dir, "the folder whose subfolders hold the parts")->required();

  CLI::App* order = app.add_subcommand(
      "order", "shards each rank reads per epoch under the streaming dataset's order (docs/streaming.md)");
  std::string order_dir;
  int64_t batch_size = 128, epochs = 1;
  std::vector<int> worlds{1, 2, 4, 8};
  tessera::data::StreamingOrderOptions order_options;
  std::string order_recipe;
  auto* order_folder = order->add_option("dir", order_dir, "dataset folder (holding index.json)");
  auto* recipe_option =
      order->add_option("--recipe", order_recipe, "a recipe whose data.train is streaming (mixed streams too)");
  order_folder->excludes(recipe_option);
  order->add_option("--batch-size", batch_size, "global batch size (with --recipe: the recipe's unless given)")
      ->capture_default_str();
  order->add_option("--ranks", worlds, "world sizes to report")->delimiter(',')->capture_default_str();
  order->add_option("--partitions", order_options.partitions(), "canonical partitions")
      ->capture_default_str()
      ->excludes(recipe_option);
  order->add_option("--shuffle-block-size", order_options.shuffle_block_size(), "samples shuffled together")
      ->capture_default_str()
      ->excludes(recipe_option);
  order->add_option("--epochs", epochs, "epochs to average over")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints the message (or the help)
    return code == 0 ? 0 : 2;      // a bad command line is bad input
  }
  if (order->parsed()) {
    try {
      if (!order_recipe.empty()) {
        const bool batch_size_given = order->count("--batch-size") > 0;
        std::cout << recipe_shards_per_rank(order_recipe, batch_size_given ? batch_size : 0, worlds, epochs);
        return 0;
      }
      if (order_dir.empty()) throw tessera::InputError("order: give a dataset folder or --recipe");
      std::cout << shards_per_rank(order_dir, order_options, batch_size, worlds, epochs);
      return 0;
    } catch (const tessera::InputError& e) {
      std::cerr << "tessera-shard: " << e.what() << "\n";
      return 2;
    }
  }
  try {
    if (merge->parsed()) {
      const mds::Merged merged = mds::merge_index(merge_dir);
      std::cout << "merged " << merged.parts.size() << " parts (" << merged.index.shards.size() << " shards, "
                << merged.index.total_samples() << " samples) into " << merge_dir << "/index.json\n";
      for (const std::string& part : merged.empty_parts) std::cout << "skipped " << part << ": it has no samples\n";
      dir = merge_dir;
    }
    if (write->parsed()) {
      mds::WriterOptions options;
      options.compression(compression).size_limit(size_limit).exist_ok(exist_ok);
      std::vector<std::string> algos;
      std::stringstream ss(hashes);
      for (std::string a; std::getline(ss, a, ',');)
        if (!a.empty()) algos.push_back(a);
      options.hashes(algos);
      const bool from_text = text_option->count() > 0;
      if (!fashion && !from_text)
        throw tessera::InputError("write: give the data to convert: --fashion-mnist or --text PATH");
      text.split(source.split()).limit(source.limit());
      tessera::validate_options(text, "write --text");
      const mds::Index index = from_text ? mds::write_text(out, text, options) : mds::write_fashion_mnist(out, source, options);
      std::cout << "wrote " << index.total_samples() << " samples in " << index.shards.size() << " shards to " << out
                << "\n";
      if (from_text && !text.tokenizer().empty()) {
        const int64_t vocab = tessera::data::Tokenizer::load(text.tokenizer()).vocab_size();
        const int width = mds::text_token_width(vocab);
        std::cout << "read them with the streaming dataset's seq_length: " << text.seq_length()
                  << (width == 1 ? "" : width == 2 ? ", token_dtype: uint16" : ", token_dtype: uint32")
                  << ", num_classes: " << vocab << "\n";
      }
      dir = out;
    }
    const auto r = mds::inspect(dir, mds::ReaderOptions().verify_hashes(verify));
    std::cout << mds::format_inspection(dir, r);
    if (verify) std::cout << "hashes:      verified\n";
    return 0;
  } catch (const tessera::InputError& e) {
    std::cerr << "tessera-shard: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "tessera-shard: " << e.what() << "\n";
    return 1;
  }
}
