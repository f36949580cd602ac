// MDS interop with PyPI's mosaicml-streaming 0.13.0 (its venv: scripts/install-peers.sh streaming, or
// $TESSERA_STREAMING_VENV): shards written by streaming.MDSWriter are read by Tessera sample for sample, Tessera's
// shards are read by streaming.StreamingDataset, both write the same bytes for the same samples, and mixed streams'
// stratified and per-stream batches draw from the streams alike. Each test skips, saying why, when the venv is
// absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <tessera/data/dataloader.h>
#include <tessera/data/mds.h>
#include <tessera/data/streaming.h>

#include "mds_support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
namespace mds = data::mds;
using nlohmann::json;

/// Runs tests/core/mds_interop.py with the streaming venv's Python; a failure shows the script's output.
void run_helper(const std::string& python, const std::string& args, const std::string& log) {
  test::run_python_helper(python, "mds_interop.py", args, log);
}

/// Every sample of the data set in `data` as StreamingDataset reads it. Streaming reads a copy: it decompresses
/// shards into the folder it reads, and Tessera must read the original (only .zstd files when compressed).
json read_with_streaming(const std::string& python, const std::string& data, const std::string& work) {
  const std::string copy = work + "/streaming-copy", out = work + "/samples.json";
  fs::create_directories(work);
  fs::copy(data, copy, fs::copy_options::recursive);
  run_helper(python, "dump " + copy + " " + out, work + "/dump.log");
  return json::parse(test::read_file(out));
}

c10::ScalarType tensor_type_of(const std::string& numpy_name) {
  for (auto d : {mds::DType::u8, mds::DType::i8, mds::DType::u16, mds::DType::i16, mds::DType::u32, mds::DType::i32,
                 mds::DType::u64, mds::DType::i64, mds::DType::f16, mds::DType::f32, mds::DType::f64})
    if (mds::dtype_name(d) == numpy_name) return mds::tensor_dtype(d);
  throw std::runtime_error("unknown dtype " + numpy_name);
}

at::Tensor values_of(const json& list) {
  std::vector<double> v = list.get<std::vector<double>>();
  return at::tensor(v, at::kDouble);
}

/// Checks a sample read by Tessera against the same sample read by Streaming (mds_interop.py's JSON).
void expect_same(const mds::SampleView& got, const json& want, int64_t index) {
  const mds::Shard& shard = got.shard();
  for (size_t c = 0; c < shard.info().column_names.size(); ++c) {
    const std::string& name = shard.info().column_names[c];
    const mds::Encoding& e = shard.encodings()[c];
    SCOPED_TRACE("sample " + std::to_string(index) + ", column " + name + " (" + e.name + ")");
    const json& v = want.at(name);
    const at::Tensor t = got.tensor(static_cast<int64_t>(c));
    switch (e.kind) {
      case mds::Encoding::Kind::scalar:
        if (at::isFloatingType(t.scalar_type())) EXPECT_EQ(t.to(at::kDouble).item<double>(), v.get<double>());
        else EXPECT_EQ(t.item<int64_t>(), v.get<int64_t>());
        break;
      case mds::Encoding::Kind::str: EXPECT_EQ(std::string(got.text(name)), v.get<std::string>()); break;
      case mds::Encoding::Kind::str_int: EXPECT_EQ(t.item<int64_t>(), v.get<int64_t>()); break;
      case mds::Encoding::Kind::str_float: EXPECT_EQ(t.item<double>(), v.get<double>()); break;
      case mds::Encoding::Kind::str_decimal:  // Decimal's str() may write the same number otherwise ("-0.00150")
        EXPECT_EQ(t.item<double>(), std::strtod(v.at("decimal").get<std::string>().c_str(), nullptr));
        break;
      case mds::Encoding::Kind::json: EXPECT_EQ(json::parse(got.text(name)), v); break;
      case mds::Encoding::Kind::bytes: {
        std::string hex;
        char buf[3];
        for (size_t i = 0; i < got.raw(name).size; ++i) {
          std::snprintf(buf, sizeof buf, "%02x", got.raw(name).data[i]);
          hex += buf;
        }
        EXPECT_EQ(hex, v.at("hex").get<std::string>());
        break;
      }
      case mds::Encoding::Kind::ndarray:
        EXPECT_EQ(t.scalar_type(), tensor_type_of(v.at("dtype").get<std::string>()));
        EXPECT_EQ(t.sizes().vec(), v.at("shape").get<std::vector<int64_t>>());
        EXPECT_TRUE(at::equal(t.to(at::kDouble).flatten(), values_of(v.at("data"))));
        break;
      default:  // images: Pillow's pixels (libjpeg-turbo decodes JPEG the same way in both)
        EXPECT_EQ(t.sizes().vec(), v.at("shape").get<std::vector<int64_t>>());
        EXPECT_TRUE(at::equal(t.to(at::kDouble).flatten(), values_of(v.at("data"))));
    }
  }
}

TEST(MdsInterop, StreamingWritesTesseraReadsSampleForSample) {
  REQUIRE_STREAMING_VENV(python);
  for (const std::string compression : {"", "zstd:7"}) {
    SCOPED_TRACE("compression '" + compression + "'");
    test::TempDir dir("mds_from_streaming");
    const std::string data = dir.path() + "/data";
    run_helper(python, "write " + data + " '" + compression + "'", dir.path() + "/write.log");
    const json want = read_with_streaming(python, data, dir.path());
    EXPECT_EQ(fs::exists(data + "/shard.00000.mds"), compression.empty());

    mds::Reader reader(data, mds::ReaderOptions());
    ASSERT_EQ(reader.size(), 40);
    ASSERT_EQ(static_cast<int64_t>(want.size()), reader.size());
    EXPECT_GT(reader.num_shards(), 3);
    for (int64_t i = 0; i < reader.size(); ++i) expect_same(reader.sample(i), want[static_cast<size_t>(i)], i);
    if (compression.empty()) continue;
    // The zip files' xxh3_64 and xxh64 hashes, as Streaming computed them, check out.
    EXPECT_NO_THROW(mds::Reader(data, mds::ReaderOptions().verify_hashes(true)).sample(39));
  }
}

TEST(MdsInterop, RewritingStreamingsShardsGivesTheSameBytes) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir dir("mds_rewrite");
  const std::string data = dir.path() + "/data", copy = dir.path() + "/copy";
  run_helper(python, "write " + data + " ''", dir.path() + "/write.log");
  mds::Reader reader(data);
  const mds::ShardInfo& first = reader.index().shards.front();
  mds::Columns columns;
  for (size_t c = 0; c < first.column_names.size(); ++c)
    columns.emplace_back(first.column_names[c], first.column_encodings[c]);
  mds::Writer writer(copy, mds::WriterOptions().columns(columns).hashes(first.hashes).size_limit(first.size_limit));
  for (int64_t i = 0; i < reader.size(); ++i) writer.write_raw(reader.sample(i).record());
  const mds::Index& written = writer.finish();
  ASSERT_EQ(written.shards.size(), reader.index().shards.size());
  for (size_t k = 0; k < written.shards.size(); ++k) {
    const std::string name = written.shards[k].raw_data.basename;
    EXPECT_EQ(test::read_file(data + "/" + name), test::read_file(copy + "/" + name)) << name;
  }
  EXPECT_EQ(test::read_file(data + "/index.json"), test::read_file(copy + "/index.json"));
}

TEST(MdsInterop, TesseraWritesStreamingReadsSampleForSample) {
  REQUIRE_STREAMING_VENV(python);
  for (const std::string compression : {"", "zstd"}) {
    SCOPED_TRACE("compression '" + compression + "'");
    test::TempDir dir("mds_to_streaming");
    const std::string data = dir.path() + "/data";
    {
      mds::Writer w(data, mds::WriterOptions().columns(test::kAllColumns).compression(compression)
                              .hashes({"xxh3_64", "xxh64"}).size_limit(4000));
      for (int64_t i = 0; i < 40; ++i) w.write(test::sample_of(i));
      w.finish();
    }
    mds::Reader reader(data);
    const json got = read_with_streaming(python, data, dir.path());
    ASSERT_EQ(static_cast<int64_t>(got.size()), reader.size());
    for (int64_t i = 0; i < reader.size(); ++i) expect_same(reader.sample(i), got[static_cast<size_t>(i)], i);
  }
}

TEST(MdsInterop, NumbersAsTextAndJsonReencodeToStreamingsBytes) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir dir("mds_numbers");
  const std::string theirs = dir.path() + "/theirs", ours = dir.path() + "/ours";
  run_helper(python, "numbers " + theirs, dir.path() + "/numbers.log");
  const json want = read_with_streaming(python, theirs, dir.path());
  mds::Reader reader(theirs);
  ASSERT_EQ(reader.size(), 300);
  mds::Columns columns;
  for (size_t c = 0; c < reader.column_names().size(); ++c)
    columns.emplace_back(reader.column_names()[c], reader.column_encodings()[c]);
  // Each value decoded and encoded again, numbers as numbers: Tessera writes Python's str() of each float.
  mds::Writer writer(ours, mds::WriterOptions().columns(columns).size_limit(3000));
  for (int64_t i = 0; i < reader.size(); ++i) {
    const mds::SampleView s = reader.sample(i);
    expect_same(s, want[static_cast<size_t>(i)], i);
    writer.write({{"si", s.tensor("si").item<int64_t>()}, {"sf", s.tensor("sf").item<double>()},
                  {"sd", std::string(s.text("sd"))}, {"js", std::string(s.text("js"))}, {"s", std::string(s.text("s"))}});
  }
  writer.finish();
  std::vector<std::string> names{"index.json"};
  for (const auto& shard : reader.index().shards) names.push_back(shard.raw_data.basename);
  ASSERT_GT(names.size(), 5u);
  for (const auto& name : names) EXPECT_EQ(test::read_file(theirs + "/" + name), test::read_file(ours + "/" + name)) << name;
}

TEST(MdsInterop, MergedPartsReadAlikeWhicheverLibraryMergedThem) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir dir("mds_merged");
  {  // Streaming writes and merges three parts; Tessera reads the whole.
    const std::string root = dir.path() + "/theirs";
    run_helper(python, "parts " + root, dir.path() + "/parts.log");
    const json want = read_with_streaming(python, root, dir.path() + "/theirs-read");
    mds::Reader reader(root);
    ASSERT_EQ(reader.size(), 24);
    ASSERT_EQ(static_cast<int64_t>(want.size()), reader.size());
    std::set<int64_t> labels;
    for (int64_t i = 0; i < reader.size(); ++i) {
      expect_same(reader.sample(i), want[static_cast<size_t>(i)], i);
      labels.insert(reader.sample(i).tensor("label").item<int64_t>());
    }
    EXPECT_EQ(labels.size(), 24u);
  }
  {  // Tessera writes and merges parts (one compressed); Streaming reads the whole.
    const std::string root = dir.path() + "/ours";
    for (int part = 0; part < 3; ++part) {
      mds::Writer w(root + "/part-" + std::to_string(part),
                    mds::WriterOptions().columns(test::kAllColumns).size_limit(4000).compression(part == 1 ? "zstd" : ""));
      for (int64_t i = 10 * part; i < 10 * part + 10; ++i) w.write(test::sample_of(i));
      w.finish();
    }
    mds::merge_index(root);
    mds::Reader reader(root);
    ASSERT_EQ(reader.size(), 30);
    const json got = read_with_streaming(python, root, dir.path() + "/ours-read");
    ASSERT_EQ(static_cast<int64_t>(got.size()), reader.size());
    for (int64_t i = 0; i < reader.size(); ++i) expect_same(reader.sample(i), got[static_cast<size_t>(i)], i);
  }
}

TEST(MdsInterop, FashionMnistShardsAreByteIdenticalToStreamings) {
  REQUIRE_STREAMING_VENV(python);
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  test::TempDir dir("mds_fashion");
  const std::string theirs = dir.path() + "/streaming", ours = dir.path() + "/tessera";
  run_helper(python, "fashion " + theirs + " 3000 500000", dir.path() + "/fashion.log");
  mds::write_fashion_mnist(ours, mds::FashionMnistShardOptions().limit(3000),
                           mds::WriterOptions().hashes({"xxh3_64"}).size_limit(500000));
  auto files = [](const std::string& folder) {
    std::vector<std::string> names;
    for (const auto& f : fs::directory_iterator(folder)) names.push_back(f.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  };
  const auto names = files(theirs);
  ASSERT_EQ(names, files(ours));
  ASSERT_GT(names.size(), 3u);  // several shards and index.json
  for (const auto& name : names) EXPECT_EQ(test::read_file(theirs + "/" + name), test::read_file(ours + "/" + name)) << name;
  EXPECT_EQ(mds::inspect(theirs).checksum, mds::inspect(ours).checksum);
}

TEST(MdsInterop, StratifiedAndPerStreamBatchesDrawFromTheStreamsAsStreamingsDo) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir dir("mds_interop_batches");
  test::write_labels(dir.path() + "/a", 0, 50, 200);     // labels 0..49
  test::write_labels(dir.path() + "/b", 1000, 30, 120);  // labels 1000..1029
  const auto rows_of_a = [](const std::vector<std::vector<int64_t>>& batches) {
    std::vector<int64_t> out;
    for (const auto& b : batches) out.push_back(std::count_if(b.begin(), b.end(), [](int64_t l) { return l < 1000; }));
    return out;
  };
  const auto each_once = [](const std::vector<std::vector<int64_t>>& batches) {
    std::set<int64_t> seen;
    size_t n = 0;
    for (const auto& b : batches) {
      seen.insert(b.begin(), b.end());
      n += b.size();
    }
    return seen.size() == n;
  };
  // Batches of 10: 6.25 and 3.75 rows, so 6 and 4, 7 batches; of 4: 2.5 and 1.5, a tie, so 2 and 2 (the later
  // stream takes the row left), 15 batches; per stream, batches of 16: 3 of a's and 1 of b's.
  int k = 0;
  for (const auto& [method, batch] : {std::pair<std::string, int64_t>{"stratified", 10}, {"stratified", 4},
                                      {"per_stream", 16}}) {
    SCOPED_TRACE(method + " in batches of " + std::to_string(batch));
    // Streaming reads copies of the folders: new ones for each run, so that its shared memory never collides.
    const std::string run = dir.path() + "/run" + std::to_string(k++), out = run + "/batches.json";
    fs::create_directories(run);
    for (const char* s : {"/a", "/b"}) fs::copy(dir.path() + s, run + s, fs::copy_options::recursive);
    run_helper(python, "batches " + method + " " + std::to_string(batch) + " " + out + " " + run + "/a " + run + "/b",
               run + "/batches.log");
    const auto theirs = json::parse(test::read_file(out)).get<std::vector<std::vector<int64_t>>>();
    const auto ds = std::make_shared<data::StreamingDataset>(
        data::StreamingOptions()
            .streams({data::StreamOptions().local(dir.path() + "/a"), data::StreamOptions().local(dir.path() + "/b")})
            .batching_method(method));
    data::DataLoader loader(ds, data::DataLoaderOptions().batch_size(batch));
    const auto ours = test::batches_of(loader, 0, 0);
    EXPECT_EQ(ours.size(), theirs.size());
    std::vector<int64_t> our_rows = rows_of_a(ours), their_rows = rows_of_a(theirs);
    if (method == "per_stream") {  // the streams' batches come in orders of each library's own generator
      std::sort(our_rows.begin(), our_rows.end());
      std::sort(their_rows.begin(), their_rows.end());
    }
    EXPECT_EQ(our_rows, their_rows);
    EXPECT_TRUE(each_once(ours));
    EXPECT_TRUE(each_once(theirs));
  }
}

}  // namespace
}  // namespace tessera
