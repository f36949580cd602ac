// MDS shards: write/read round trips for every encoding (compressed and not), byte-exact golden files from
// MosaicML Streaming 0.13.0, and clear errors for every kind of corrupt index, shard or hash.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <tessera/data/mds.h>
#include <tessera/error.h>

#include "mds_support.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using namespace data;

double as_double(const mds::Value& v) {
  return std::holds_alternative<int64_t>(v) ? static_cast<double>(std::get<int64_t>(v)) : std::get<double>(v);
}

/// Checks that a read sample holds exactly what `test::sample_of(i)` wrote.
void expect_sample(const mds::SampleView& got, int64_t i) {
  const mds::Sample want = test::sample_of(i);
  SCOPED_TRACE("sample " + std::to_string(i));
  for (const char* name : {"i", "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64"}) {
    const at::Tensor t = got.tensor(name);
    EXPECT_EQ(t.dim(), 0) << name;
    EXPECT_EQ(t.item<int64_t>(), std::get<int64_t>(want.at(name))) << name;
  }
  EXPECT_EQ(got.tensor("u16").scalar_type(), at::kInt);  // widened: LibTorch 1.13 has no uint16
  EXPECT_EQ(got.tensor("i16").scalar_type(), at::kShort);
  EXPECT_EQ(got.tensor("f16").scalar_type(), at::kHalf);
  EXPECT_EQ(got.tensor("f16").item<float>(), static_cast<float>(c10::Half(static_cast<float>(as_double(want.at("f16"))))));
  EXPECT_EQ(got.tensor("f32").item<float>(), static_cast<float>(as_double(want.at("f32"))));
  EXPECT_EQ(got.tensor("f64").item<double>(), as_double(want.at("f64")));
  EXPECT_EQ(std::string(got.text("s")), std::get<std::string>(want.at("s")));
  EXPECT_EQ(std::string(got.raw("b").view()), std::get<std::string>(want.at("b")));
  EXPECT_EQ(got.tensor("b").numel(), static_cast<int64_t>(std::get<std::string>(want.at("b")).size()));
  for (const char* name : {"a", "af", "ax", "png", "pil"}) {
    const at::Tensor& w = std::get<at::Tensor>(want.at(name));
    const at::Tensor g = got.tensor(name);
    const at::Tensor expected = (std::string(name) == "png" || std::string(name) == "pil") && w.dim() == 2 ? w.unsqueeze(2) : w;
    EXPECT_EQ(g.scalar_type(), expected.scalar_type()) << name;
    EXPECT_TRUE(at::equal(g, expected)) << name << ": " << g.sizes() << " vs " << expected.sizes();
  }
  // Numbers as text: the text as Python's str() writes it, the tensor the number it reads back as.
  EXPECT_EQ(std::string(got.text("si")), std::to_string(std::get<int64_t>(want.at("si"))));
  EXPECT_EQ(got.tensor("si").scalar_type(), at::kLong);
  EXPECT_EQ(got.tensor("si").item<int64_t>(), std::get<int64_t>(want.at("si")));
  const double f = std::get<double>(want.at("sf"));
  EXPECT_EQ(got.tensor("sf").scalar_type(), at::kDouble);
  EXPECT_EQ(got.tensor("sf").item<double>(), f) << got.text("sf");  // the shortest digits read back exactly
  EXPECT_EQ(std::signbit(got.tensor("sf").item<double>()), std::signbit(f)) << got.text("sf");
  const mds::Value& sd = want.at("sd");
  const std::string sd_text = std::holds_alternative<int64_t>(sd) ? std::to_string(std::get<int64_t>(sd)) : std::get<std::string>(sd);
  EXPECT_EQ(std::string(got.text("sd")), sd_text);
  EXPECT_EQ(got.tensor("sd").item<double>(), std::strtod(sd_text.c_str(), nullptr));
  EXPECT_EQ(std::string(got.text("js")), std::get<std::string>(want.at("js")));
  EXPECT_EQ(got.tensor("js").numel(), static_cast<int64_t>(std::get<std::string>(want.at("js")).size()));
  // JPEG is lossy: the column decodes to exactly what decoding the encoder's output gives, close to the pixels.
  const at::Tensor px = std::get<at::Tensor>(want.at("jpg"));
  const at::Tensor jpg = got.tensor("jpg");
  EXPECT_EQ(jpg.sizes(), px.sizes());
  const std::string encoded = mds::encode_jpeg(px, 75);
  EXPECT_EQ(std::string(got.raw("jpg").view()), encoded);
  EXPECT_LT((jpg.to(at::kFloat) - px.to(at::kFloat)).abs().mean().item<float>(), 4.0f);
}

class MdsRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(MdsRoundTrip, EveryEncodingReadsBackExactly) {
  test::TempDir dir("mds_roundtrip");
  mds::WriterOptions opts;
  opts.columns(test::kAllColumns).compression(GetParam()).hashes({"xxh128", "xxh3_64", "xxh64"}).size_limit(3000);
  mds::Writer writer(dir.path(), opts);
  const int64_t n = 60;
  for (int64_t i = 0; i < n; ++i) writer.write(test::sample_of(i));
  const mds::Index written = writer.finish();
  ASSERT_GT(written.shards.size(), 3u) << "the size limit should split the samples into several shards";

  mds::Reader reader(dir.path(), mds::ReaderOptions().verify_hashes(true));
  ASSERT_EQ(reader.size(), n);
  ASSERT_EQ(reader.num_shards(), static_cast<int64_t>(written.shards.size()));
  std::vector<std::string> sorted_names;
  for (const auto& [name, enc] : test::kAllColumns) sorted_names.push_back(name);
  std::sort(sorted_names.begin(), sorted_names.end());
  EXPECT_EQ(reader.column_names(), sorted_names);  // stored sorted by name, as Streaming
  for (const auto& shard : reader.index().shards) {
    EXPECT_LE(shard.raw_data.bytes, 3000);
    EXPECT_EQ(shard.zip_data.has_value(), !GetParam().empty());
    EXPECT_EQ(shard.raw_data.hashes.size(), 3u);
  }
  for (int64_t i = 0; i < n; ++i) expect_sample(reader.sample(i), i);
  // locate() agrees with the shard offsets, and shard-level access sees the same samples.
  int64_t global = 0;
  for (int64_t k = 0; k < reader.num_shards(); ++k) {
    for (int64_t j = 0; j < reader.shard(k)->size(); ++j, ++global) {
      EXPECT_EQ(reader.locate(global), std::make_pair(k, j));
      EXPECT_EQ(std::string(reader.shard(k)->sample(j).record().view()),
                std::string(reader.sample(global).record().view()));
    }
  }
  EXPECT_EQ(global, n);
}

INSTANTIATE_TEST_SUITE_P(Compression, MdsRoundTrip, ::testing::Values("", "zstd", "zstd:19"),
                         [](const auto& info) { return info.param.empty() ? std::string("none") : info.param == "zstd" ? std::string("zstd") : std::string("zstd19"); });

TEST(Mds, ChecksumIgnoresShardingAndCompression) {
  test::TempDir a("mds_a"), b("mds_b");
  mds::WriterOptions opts;
  opts.columns(test::kAllColumns).size_limit(1 << 20);
  {
    mds::Writer w(a.path(), opts);
    for (int64_t i = 0; i < 30; ++i) w.write(test::sample_of(i));
    w.finish();
  }
  {
    mds::Writer w(b.path(), opts.compression("zstd:5").size_limit(2500));
    for (int64_t i = 0; i < 30; ++i) w.write(test::sample_of(i));
    w.finish();
  }
  const auto ia = mds::inspect(a.path()), ib = mds::inspect(b.path());
  EXPECT_EQ(ia.shards, 1);
  EXPECT_GT(ib.shards, 1);
  EXPECT_EQ(ia.samples, 30);
  EXPECT_EQ(ia.checksum, ib.checksum);
  EXPECT_EQ(ia.checksum.size(), 16u);
  // One changed value changes it.
  test::TempDir c("mds_c");
  mds::Writer w(c.path(), opts.compression(""));
  for (int64_t i = 0; i < 30; ++i) {
    auto s = test::sample_of(i);
    if (i == 17) s["u8"] = int64_t{200};
    w.write(s);
  }
  w.finish();
  EXPECT_NE(mds::inspect(c.path()).checksum, ia.checksum);
  const std::string report = mds::format_inspection(a.path(), ia);
  EXPECT_NE(report.find("samples:     30"), std::string::npos) << report;
  EXPECT_NE(report.find("ax: ndarray:int16:2,3"), std::string::npos) << report;
}

TEST(Mds, TensorsViewTheMappedShardWithoutCopies) {
  test::TempDir dir("mds_view");
  mds::WriterOptions opts;
  opts.columns({{"image", "ndarray:uint8:28,28"}, {"label", "int"}});
  mds::Writer w(dir.path(), opts);
  for (int64_t i = 0; i < 5; ++i) w.write({{"image", at::full({28, 28}, i, at::kByte)}, {"label", i}});
  w.finish();
  mds::Reader reader(dir.path());
  const auto shard = reader.shard(0);
  const mds::Bytes file = shard->file();
  at::Tensor image = reader.sample(3).tensor("image");
  const auto* p = static_cast<const uint8_t*>(image.data_ptr());
  EXPECT_GE(p, file.data);
  EXPECT_LE(p + 28 * 28, file.data + file.size);  // a view into the mapping: no copy
  EXPECT_TRUE(at::equal(image, at::full({28, 28}, 3, at::kByte)));
  // The view keeps the mapping alive after the reader and shard handles are gone; writes never reach the file.
  image.fill_(9);
  EXPECT_EQ(image.sum().item<int64_t>(), 9 * 28 * 28);
  EXPECT_EQ(mds::Reader(dir.path()).sample(3).tensor("image").sum().item<int64_t>(), 3 * 28 * 28);
}

TEST(Mds, NdarrayHeaderIsStreamingsLayout) {
  test::TempDir dir("mds_nd");
  mds::WriterOptions opts;
  opts.columns({{"a", "ndarray"}, {"f", "ndarray:float64"}});
  mds::Writer w(dir.path(), opts);
  w.write({{"a", at::arange(600, at::kShort).view({2, 300})}, {"f", at::ones({3}, at::kDouble)}});
  w.finish();
  const mds::SampleView sample = mds::Reader(dir.path()).sample(0);  // keeps the shard's memory alive
  const mds::Bytes a = sample.raw("a");
  ASSERT_EQ(a.size, 1 + 1 + 2 * 2 + 600 * 2u);
  EXPECT_EQ(a.data[0], 17);             // int16
  EXPECT_EQ(a.data[1], (2 << 2) | 1);   // ndim 2, shape stored as uint16
  EXPECT_EQ(a.data[2] | (a.data[3] << 8), 2);
  EXPECT_EQ(a.data[4] | (a.data[5] << 8), 300);
  const mds::Bytes f = sample.raw("f");
  ASSERT_EQ(f.size, 1 + 1 + 3 * 8u);    // dtype fixed: shape header only
  EXPECT_EQ(f.data[0], (1 << 2) | 0);
}

// The files MosaicML Streaming 0.13.0 writes for MDSWriter(columns={'y': 'int', 'x': 'str'}) and one sample
// {'x': 'ab', 'y': 3} (read back with Python and pasted here as bytes).
TEST(Mds, WritesStreamingsBytesExactly) {
  test::TempDir dir("mds_golden");
  mds::Writer w(dir.path(), mds::WriterOptions().columns({{"y", "int"}, {"x", "str"}}));
  w.write({{"x", std::string("ab")}, {"y", int64_t{3}}});
  w.finish();
  const std::string config =
      "{\"column_encodings\": [\"str\", \"int\"], \"column_names\": [\"x\", \"y\"], \"column_sizes\": [null, 8], "
      "\"compression\": null, \"format\": \"mds\", \"hashes\": [], \"size_limit\": 67108864, \"version\": 2}";
  const std::string shard = std::string("\x01\x00\x00\x00\xc1\x00\x00\x00\xcf\x00\x00\x00", 12) + config +
                            std::string("\x02\x00\x00\x00" "ab" "\x03\x00\x00\x00\x00\x00\x00\x00", 14);
  EXPECT_EQ(test::read_file(dir.path() + "/shard.00000.mds"), shard);
  EXPECT_EQ(test::read_file(dir.path() + "/index.json"),
            "{\"shards\": [{\"column_encodings\": [\"str\", \"int\"], \"column_names\": [\"x\", \"y\"], "
            "\"column_sizes\": [null, 8], \"compression\": null, \"format\": \"mds\", \"hashes\": [], \"raw_data\": "
            "{\"basename\": \"shard.00000.mds\", \"bytes\": 207, \"hashes\": {}}, \"samples\": 1, \"size_limit\": "
            "67108864, \"version\": 2, \"zip_data\": null}], \"version\": 2}");
  EXPECT_FALSE(fs::exists(dir.path() + "/index.json.tmp"));
}

TEST(Mds, HashesMatchPythonXxhash) {
  // Python: xxhash.<algo>(b"tessera mds").hexdigest()
  const std::string d = "tessera mds";
  EXPECT_EQ(mds::hash_hex("xxh32", d.data(), d.size()), "6c09aa98");
  EXPECT_EQ(mds::hash_hex("xxh64", d.data(), d.size()), "d3ebc4f129cd3ca3");
  EXPECT_EQ(mds::hash_hex("xxh3_64", d.data(), d.size()), "1f4126ae88546ca7");
  EXPECT_EQ(mds::hash_hex("xxh128", d.data(), d.size()), "61b6265b3ce958463bc82dcef8f86fdb");
  EXPECT_EQ(mds::hash_hex("xxh3_128", d.data(), d.size()), "61b6265b3ce958463bc82dcef8f86fdb");
  EXPECT_NE(testing::input_error_of([&] { mds::hash_hex("sha1", d.data(), d.size()); }).find("not supported"),
            std::string::npos);
}

TEST(Mds, ImagesRoundTripThroughLibpngAndLibjpeg) {
  for (int64_t c : {1, 2, 3, 4}) {
    const at::Tensor px = test::pixels(5, c);
    EXPECT_TRUE(at::equal(mds::decode_png(mds::Bytes{reinterpret_cast<const uint8_t*>(mds::encode_png(px).data()),
                                                     mds::encode_png(px).size()}, "png"), px)) << c;
  }
  const std::string jpg = mds::encode_jpeg(test::pixels(5, 3), 95);
  const at::Tensor back = mds::decode_jpeg({reinterpret_cast<const uint8_t*>(jpg.data()), jpg.size()}, "jpeg");
  EXPECT_EQ(back.sizes(), test::pixels(5, 3).sizes());
  EXPECT_LT((back.to(at::kFloat) - test::pixels(5, 3).to(at::kFloat)).abs().max().item<float>(), 12.0f);
  const std::string cut = jpg.substr(0, jpg.size() / 2);
  EXPECT_NE(testing::input_error_of([&] { mds::decode_jpeg({reinterpret_cast<const uint8_t*>(cut.data()), cut.size()}, "x"); })
                .find("JPEG"),
            std::string::npos);
  const std::string junk = "\x89PNG but not really";
  EXPECT_NE(testing::input_error_of([&] { mds::decode_png({reinterpret_cast<const uint8_t*>(junk.data()), junk.size()}, "x"); })
                .find("not a valid PNG file"),
            std::string::npos);
}

TEST(Mds, WriterRefusesBadInputWithReasons) {
  test::TempDir dir("mds_bad_writer");
  auto err = [&](const std::function<void()>& f) { return testing::input_error_of(f); };
  const mds::WriterOptions base = mds::WriterOptions().columns({{"x", "uint8"}, {"t", "ndarray"}}).exist_ok(true);
  EXPECT_NE(err([&] { mds::Writer(dir.path(), mds::WriterOptions(base).columns({{"x", "pkl"}})); }).find("\"pkl\" is not supported"),
            std::string::npos);
  EXPECT_NE(err([&] { mds::Writer(dir.path(), mds::WriterOptions(base).compression("gz")); }).find("zstd"), std::string::npos);
  EXPECT_NE(err([&] { mds::Writer(dir.path(), mds::WriterOptions(base).compression("zstd:30")); }).find("1..22"),
            std::string::npos);
  EXPECT_NE(err([&] { mds::Writer(dir.path(), mds::WriterOptions(base).hashes({"xxh64", "xxh32"})); }).find("sorted"),
            std::string::npos);
  EXPECT_NE(err([&] { mds::Writer(dir.path(), mds::WriterOptions(base).hashes({"sha256"})); }).find("sha256"),
            std::string::npos);
  mds::Writer w(dir.path(), base);
  EXPECT_NE(err([&] { w.write({{"x", int64_t{300}}, {"t", at::ones({2})}}); }).find("300 is out of range for uint8"),
            std::string::npos);
  EXPECT_NE(err([&] { w.write({{"x", int64_t{1}}}); }).find("exactly the columns t, x"), std::string::npos);
  EXPECT_NE(err([&] { w.write({{"x", int64_t{1}}, {"t", at::ones({2}, at::kBFloat16)}}); }).find("bfloat16"),
            std::string::npos);
  EXPECT_NE(err([&] { w.write({{"x", int64_t{1}}, {"t", at::ones({0})}}); }).find("at least one"), std::string::npos);
  EXPECT_NE(err([&] { w.write({{"x", std::string("a")}, {"t", at::ones({1})}}); }).find("expected a number"),
            std::string::npos);
  w.finish();
  EXPECT_NE(err([&] { mds::Writer(dir.path(), mds::WriterOptions(base).exist_ok(false)); }).find("not empty"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------------------
// Corrupt datasets: each is an InputError that names the file and says what is wrong.

class MdsCorrupt : public ::testing::Test {
 protected:
  void SetUp() override {
    mds::WriterOptions opts;
    opts.columns({{"s", "str"}, {"a", "ndarray"}, {"n", "int"}, {"p", "png"}}).hashes({"xxh3_64"});
    mds::Writer w(dir_.path(), opts);
    for (int64_t i = 0; i < 4; ++i)
      w.write({{"s", std::string("abc")}, {"a", at::arange(3, at::kFloat)}, {"n", i}, {"p", test::pixels(i, 3)}});
    w.finish();
    shard_ = dir_.path() + "/shard.00000.mds";
    index_ = dir_.path() + "/index.json";
  }
  /// The message of reading every sample of every column (with hash checks when `verify`).
  std::string read_error(bool verify = false) {
    return testing::input_error_of([&] {
      mds::Reader r(dir_.path(), mds::ReaderOptions().verify_hashes(verify));
      for (int64_t i = 0; i < r.size(); ++i) r.sample(i).tensors();
    });
  }
  void patch(const std::string& path, size_t at, const std::string& bytes) {
    std::string content = test::read_file(path);
    content.replace(at, bytes.size(), bytes);
    test::write_file(path, content);
  }
  void replace_in_index(const std::string& from, const std::string& to) {
    std::string content = test::read_file(index_);
    const auto at = content.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    test::write_file(index_, content.replace(at, from.size(), to));
  }
  /// Offset of sample `i`'s record in the shard file.
  uint32_t record_offset(int i) {
    const std::string c = test::read_file(shard_);
    uint32_t v;
    std::memcpy(&v, c.data() + 4 + 4 * i, 4);
    return v;
  }
  static void expect_has(const std::string& message, const std::vector<std::string>& parts) {
    for (const auto& p : parts) EXPECT_NE(message.find(p), std::string::npos) << "'" << p << "' not in: " << message;
  }
  test::TempDir dir_{"mds_corrupt"};
  std::string shard_, index_;
};

TEST_F(MdsCorrupt, IntactDatasetReads) { EXPECT_NO_THROW(mds::Reader(dir_.path(), mds::ReaderOptions().verify_hashes(true)).sample(3).tensors()); }

TEST_F(MdsCorrupt, MissingIndex) {
  fs::remove(index_);
  expect_has(read_error(), {index_, "not found"});
}

TEST_F(MdsCorrupt, IndexNotJson) {
  test::write_file(index_, "{\"shards\": [");
  expect_has(read_error(), {index_, "not valid JSON"});
}

TEST_F(MdsCorrupt, IndexMissingKey) {
  replace_in_index("\"samples\": 4, ", "");
  expect_has(read_error(), {index_, "shard 0", "\"samples\" is missing"});
}

TEST_F(MdsCorrupt, IndexWrongVersion) {
  replace_in_index("], \"version\": 2}", "], \"version\": 3}");
  expect_has(read_error(), {index_, "\"version\" must be 2"});
}

TEST_F(MdsCorrupt, IndexUnsupportedEncoding) {
  replace_in_index("\"str\"", "\"pkl\"");
  expect_has(read_error(), {index_, "column \"s\"", "\"pkl\" is not supported"});
}

TEST_F(MdsCorrupt, IndexColumnSizesDisagree) {
  replace_in_index("[null, 8, null, null]", "[null, 4, null, null]");
  expect_has(read_error(), {index_, "column \"n\"", "column_sizes 4, expected 8"});
}

TEST_F(MdsCorrupt, IndexBasenameEscapesTheDataset) {
  replace_in_index("\"shard.00000.mds\"", "\"../shard.00000.mds\"");
  expect_has(read_error(), {index_, "relative path inside the dataset"});
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_mds_index/regress_*): the size of an ndarray column's value overflowed
// int64 (undefined behaviour), and sample counts that add up past int64 overflowed the dataset's offsets.
TEST_F(MdsCorrupt, IndexNdarrayShapeTooLargeForASample) {
  replace_in_index("\"ndarray\"", "\"ndarray:uint8:9999999999,9999999999\"");
  expect_has(read_error(), {index_, "column \"a\"", "ndarray:uint8:9999999999,9999999999", "more than 4 GiB"});
  EXPECT_NE(testing::input_error_of([] { mds::Encoding::parse("ndarray:float64:65536,65536", "here"); })
                .find("here: column encoding \"ndarray:float64:65536,65536\" has a shape of more than 4 GiB"),
            std::string::npos);
  EXPECT_EQ(mds::Encoding::parse("ndarray:uint8:65536,65535", "here").fixed_size().value_or(-1), int64_t{65536} * 65535);
}

// Found by fuzzing (regress_mds_number_overflow): a number beyond double's range escaped as nlohmann's out_of_range.
TEST_F(MdsCorrupt, IndexNumberBeyondADouble) {
  replace_in_index("\"samples\": 4, ", "\"samples\": 1e999, ");
  expect_has(read_error(), {index_, "not valid JSON", "number overflow"});
}

TEST_F(MdsCorrupt, IndexSampleCountBeyondAShardHeader) {
  replace_in_index("\"samples\": 4, ", "\"samples\": 9223372036854775807, ");
  expect_has(read_error(), {index_, "shard 0", "\"samples\" is 9223372036854775807, more than a shard can hold",
                            "at most 4294967295"});
}

TEST_F(MdsCorrupt, ShardMissing) {
  fs::remove(shard_);
  expect_has(read_error(), {shard_, "not found"});
}

TEST_F(MdsCorrupt, ShardTruncated) {
  const std::string c = test::read_file(shard_);
  test::write_file(shard_, c.substr(0, c.size() - 10));
  expect_has(read_error(), {shard_, "bytes, index.json says", "truncated"});
}

TEST_F(MdsCorrupt, ShardSampleCountDisagrees) {
  patch(shard_, 0, std::string("\x03\x00\x00\x00", 4));
  expect_has(read_error(), {shard_, "holds 3 samples, index.json says 4"});
}

TEST_F(MdsCorrupt, ShardOffsetsNotMonotonic) {
  const uint32_t o1 = record_offset(1), o2 = record_offset(2);
  std::string b1(4, '\0'), b2(4, '\0');
  std::memcpy(b1.data(), &o2, 4);
  std::memcpy(b2.data(), &o1, 4);
  patch(shard_, 8, b1);
  patch(shard_, 12, b2);
  expect_has(read_error(), {shard_, "offset of sample 2", "is before that of sample 1"});
}

TEST_F(MdsCorrupt, ShardOffsetPastTheEnd) {
  patch(shard_, 4 + 4 * 4, std::string("\xff\xff\x00\x00", 4));
  expect_has(read_error(), {shard_, "the last sample ends at byte 65535 but the file has"});
}

TEST_F(MdsCorrupt, ShardOffsetInsideHeader) {
  patch(shard_, 4, std::string("\x02\x00\x00\x00", 4));
  expect_has(read_error(), {shard_, "sample 0 starts at byte 2, inside the header"});
}

TEST_F(MdsCorrupt, ColumnLengthRunsPastTheSample) {
  // Variable columns in order a, p, s: sample 1's first length prefix (a's) made huge.
  patch(shard_, record_offset(1), std::string("\x00\x00\x01\x00", 4));
  expect_has(read_error(), {shard_, "sample 1", "column \"a\"", "run past the end of the sample"});
}

TEST_F(MdsCorrupt, NdarrayBadDtypeCode) {
  patch(shard_, record_offset(2) + 12, std::string("\x07", 1));  // after the three u32 lengths: a's dtype byte
  expect_has(read_error(), {shard_, "sample 2", "column \"a\"", "unknown ndarray dtype code 7"});
}

TEST_F(MdsCorrupt, CorruptPng) {
  const std::string c = test::read_file(shard_);
  uint32_t a_len;  // variable columns a, p, s: three u32 lengths, then a, n (8 bytes), p, s
  std::memcpy(&a_len, c.data() + record_offset(0), 4);
  patch(shard_, record_offset(0) + 12 + a_len + 8 + 1, "XXXX");  // after a and n: inside the PNG signature
  expect_has(read_error(), {shard_, "sample 0", "column \"p\"", "not a valid PNG file"});
}

TEST_F(MdsCorrupt, HashMismatchIsCaughtWhenVerifying) {
  const std::string c = test::read_file(shard_);
  patch(shard_, c.size() - 1, std::string(1, static_cast<char>(c.back() ^ 1)));  // last byte of the last png
  expect_has(read_error(/*verify=*/true), {shard_, "is corrupt: its xxh3_64 hash is", "index.json says"});
}

TEST_F(MdsCorrupt, UnverifiableHashesAreNamed) {
  replace_in_index("\"xxh3_64\": ", "\"sha1\": ");
  expect_has(read_error(/*verify=*/true), {shard_, "cannot verify its hashes (sha1)"});
  EXPECT_NO_THROW(mds::Reader(dir_.path()).sample(0).tensors());  // without verification it reads
}

TEST_F(MdsCorrupt, AnyCorruptByteIsReadOrRefusedNeverACrash) {
  // Every byte of the shard (header, offsets, config, lengths, ndarray headers, PNG data) replaced in turn by a
  // value from a fixed generator: reading every column of every sample either works or is an InputError.
  const std::string good = test::read_file(shard_);
  uint64_t state = 12345;
  int refused = 0;
  for (size_t at = 0; at < good.size(); ++at) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ static_cast<char>(1 + (state >> 56) % 255));
    test::write_file(shard_, bad);
    try {
      mds::Reader r(dir_.path());
      for (int64_t i = 0; i < r.size(); ++i) r.sample(i).tensors();
    } catch (const InputError& e) {
      ++refused;
      EXPECT_NE(std::string(e.what()).find(shard_), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(refused, 50);  // header, offsets, lengths and PNG structure are checked
}

TEST(MdsCorruptZip, BadZstdDataAndSizes) {
  test::TempDir dir("mds_zip");
  mds::Writer w(dir.path(), mds::WriterOptions().columns({{"n", "int"}}).compression("zstd"));
  for (int64_t i = 0; i < 100; ++i) w.write({{"n", i}});
  w.finish();
  const std::string zip = dir.path() + "/shard.00000.mds.zstd";
  const std::string good = test::read_file(zip);
  auto message = [&] { return testing::input_error_of([&] { mds::Reader(dir.path()).sample(0); }); };
  test::write_file(zip, std::string(good.size(), 'z'));
  EXPECT_NE(message().find(zip + " is not valid zstd data"), std::string::npos) << message();
  test::write_file(zip, good.substr(0, good.size() - 3) + "abc");
  const std::string m = message();
  EXPECT_NE(m.find(zip), std::string::npos) << m;
  EXPECT_TRUE(m.find("zstd") != std::string::npos || m.find("truncated") != std::string::npos) << m;
  fs::remove(zip);
  EXPECT_NE(message().find("not found, nor its decompressed form"), std::string::npos) << message();
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_mds_shard/regress_zstd_claims_4gib): the decompressed size index.json
// claims was allocated up front (4 GiB for a file of a few bytes; 2^62 bytes here, which no allocation survives); now
// the output grows as the data decompresses.
TEST(MdsCorruptZip, RawSizeTheZipDoesNotBackIsAMismatchNotAnAllocation) {
  test::TempDir dir("mds_zip_size");
  mds::Writer w(dir.path(), mds::WriterOptions().columns({{"n", "int"}}).compression("zstd"));
  for (int64_t i = 0; i < 100; ++i) w.write({{"n", i}});
  w.finish();
  const std::string index = dir.path() + "/index.json";
  const std::string text = test::read_file(index);
  const std::string key = "\"basename\": \"shard.00000.mds\", \"bytes\": ";
  const size_t at = text.find(key);
  ASSERT_NE(at, std::string::npos) << text;
  const size_t end = text.find(',', at + key.size());
  const std::string raw_bytes = text.substr(at + key.size(), end - at - key.size());
  test::write_file(index, text.substr(0, at + key.size()) + "4611686018427387904" + text.substr(end));
  const std::string m = testing::input_error_of([&] { mds::Reader(dir.path()).sample(0); });
  EXPECT_NE(m.find("shard.00000.mds.zstd decompresses to " + raw_bytes + " bytes, index.json says 4611686018427387904"),
            std::string::npos)
      << m;
}

}  // namespace
}  // namespace tessera
