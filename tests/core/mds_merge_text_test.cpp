// MDS numbers-as-text and JSON columns (str_int, str_float, str_decimal, json) and merge_index, which joins the
// data sets parallel writers wrote into subfolders (docs/streaming.md). Interop with Streaming: mds_interop_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include <ATen/ATen.h>
#include <tessera/data/mds.h>
#include <tessera/error.h>

#include "mds_support.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
namespace mds = data::mds;
using testing::input_error_of;

void expect_has(const std::string& message, const std::vector<std::string>& parts) {
  for (const std::string& p : parts) EXPECT_NE(message.find(p), std::string::npos) << "\"" << p << "\" not in: " << message;
}

/// The text a str_float column stores for `value` (written and read back).
std::string stored_float(double value) {
  test::TempDir dir("mds_float");
  mds::Writer w(dir.path(), mds::WriterOptions().columns({{"f", "str_float"}}));
  w.write({{"f", value}});
  w.finish();
  return std::string(mds::Reader(dir.path()).sample(0).text("f"));
}

TEST(MdsText, FloatsAreStoredAsPythonsStrWritesThem) {
  const double inf = std::numeric_limits<double>::infinity();
  // (value, Python 3.11's str(value)), the text Streaming's str_float encoding writes.
  const std::vector<std::pair<double, std::string>> golden = {
      {0.0, "0.0"}, {-0.0, "-0.0"}, {1.0, "1.0"}, {-2.5, "-2.5"}, {0.1, "0.1"},
      {0.3333333333333333, "0.3333333333333333"}, {0.6666666666666666, "0.6666666666666666"}, {1e+16, "1e+16"},
      {1000000000000000.0, "1000000000000000.0"}, {9999999999999998.0, "9999999999999998.0"},
      {1.2345678901234568e+17, "1.2345678901234568e+17"}, {0.0001, "0.0001"}, {1e-05, "1e-05"},
      {0.00012345, "0.00012345"}, {1.5e-07, "1.5e-07"}, {5e-324, "5e-324"},
      {1.7976931348623157e+308, "1.7976931348623157e+308"}, {1e+22, "1e+22"}, {1e+21, "1e+21"},
      {0.30000000000000004, "0.30000000000000004"}, {100.0, "100.0"}, {1234.5, "1234.5"}, {-1e-300, "-1e-300"},
      {9007199254740992.0, "9007199254740992.0"}, {9.223372036854776e+18, "9.223372036854776e+18"},
      {inf, "inf"}, {-inf, "-inf"}, {std::numeric_limits<double>::quiet_NaN(), "nan"},
      {3.14159e-10, "3.14159e-10"}, {6.02214076e+23, "6.02214076e+23"}, {1e+100, "1e+100"},
  };
  for (const auto& [value, text] : golden) EXPECT_EQ(stored_float(value), text);
  // An integer given for a float column is written as the float it is (Python's str(float(3))).
  test::TempDir dir("mds_float_int");
  mds::Writer w(dir.path(), mds::WriterOptions().columns({{"f", "str_float"}, {"d", "str_decimal"}, {"i", "str_int"}}));
  w.write({{"f", int64_t{3}}, {"d", int64_t{-40}}, {"i", int64_t{0}}});
  w.finish();
  const mds::SampleView s = mds::Reader(dir.path()).sample(0);
  EXPECT_EQ(std::string(s.text("f")), "3.0");
  EXPECT_EQ(std::string(s.text("d")), "-40");
  EXPECT_EQ(std::string(s.text("i")), "0");
  EXPECT_EQ(s.tensor("f").item<double>(), 3.0);
}

TEST(MdsText, ValuesOfTheWrongKindAreRefusedNamingTheColumn) {
  test::TempDir dir("mds_text_errors");
  mds::Writer w(dir.path(), mds::WriterOptions().columns(
                                {{"i", "str_int"}, {"f", "str_float"}, {"d", "str_decimal"}, {"j", "json"}}));
  const mds::Sample good = {{"i", int64_t{1}}, {"f", 0.5}, {"d", std::string("0.1")}, {"j", std::string("[1]")}};
  auto with = [&](const std::string& column, mds::Value v) {
    mds::Sample s = good;
    s[column] = std::move(v);
    return input_error_of([&] { w.write(s); });
  };
  expect_has(with("i", std::string("12")), {"column \"i\"", "expected an integer, got a string"});
  expect_has(with("i", 1.5), {"expected an integer, got a float"});
  expect_has(with("f", std::string("0.5")), {"column \"f\"", "expected a float, got a string"});
  expect_has(with("d", 0.1), {"column \"d\"", "not a float: a float is not the decimal it prints as"});
  expect_has(with("d", std::string("1,5")), {"\"1,5\" is not a decimal number"});
  expect_has(with("d", std::string("")), {"\"\" is not a decimal number"});
  expect_has(with("j", std::string("{\"a\": ")), {"column \"j\"", "not valid JSON"});
  expect_has(with("j", std::string("[NaN]")), {"not valid JSON (NaN and Infinity are not JSON either)"});
  expect_has(with("j", int64_t{3}), {"expected JSON text (a string), got an integer"});
  for (const char* text : {"12", "-0.5", "+1.25E+3", ".5", "5.", "1e-7", "NaN", "-Infinity", "inf", "sNaN"}) {
    mds::Sample s = good;
    s["d"] = std::string(text);
    EXPECT_NO_THROW(w.write(s)) << text;
  }
  w.finish();
  mds::Reader r(dir.path());
  EXPECT_EQ(r.sample(2).tensor("d").item<double>(), 1250.0);  // "+1.25E+3"
  EXPECT_TRUE(std::isnan(r.sample(9).tensor("d").item<double>()));  // "sNaN" reads as NaN
  EXPECT_EQ(r.sample(7).tensor("d").item<double>(), -std::numeric_limits<double>::infinity());
}

TEST(MdsText, TextThatIsNotItsNumberIsAnInputErrorWhenRead) {
  test::TempDir dir("mds_text_bad");
  {  // raw records (u32 length + text for each of the two variable-size columns, in name order) skip the checks
    mds::Writer w(dir.path(), mds::WriterOptions().columns({{"f", "str_float"}, {"i", "str_int"}}));
    auto record = [](const std::string& f, const std::string& i) {
      std::string r;
      for (const std::string* s : {&f, &i}) {
        const uint32_t n = static_cast<uint32_t>(s->size());
        r.append(reinterpret_cast<const char*>(&n), 4);
      }
      return r + f + i;
    };
    for (const auto& [f, i] : std::vector<std::pair<std::string, std::string>>{
             {"abc", "1"}, {"1.5", "12345678901234567890"}, {"1e999", "1x"}, {"+2.5", "+7"}, {"-1e-999", ""}}) {
      const std::string r = record(f, i);
      w.write_raw({reinterpret_cast<const uint8_t*>(r.data()), r.size()});
    }
    w.finish();
  }
  mds::Reader r(dir.path());
  expect_has(input_error_of([&] { r.sample(0).tensor("f"); }), {"shard.00000.mds", "sample 0", "column \"f\" (str_float)", "\"abc\" is not a number"});
  expect_has(input_error_of([&] { r.sample(1).tensor("i"); }), {"\"12345678901234567890\" does not fit int64; read the column's text() instead"});
  expect_has(input_error_of([&] { r.sample(2).tensor("i"); }), {"\"1x\" is not an integer"});
  expect_has(input_error_of([&] { r.sample(4).tensor("i"); }), {"\"\" is not an integer"});
  EXPECT_EQ(r.sample(2).tensor("f").item<double>(), std::numeric_limits<double>::infinity());  // as Python's float()
  EXPECT_EQ(r.sample(3).tensor("f").item<double>(), 2.5);
  EXPECT_EQ(r.sample(3).tensor("i").item<int64_t>(), 7);
  EXPECT_EQ(r.sample(4).tensor("f").item<double>(), -0.0);
}

TEST(MdsText, AnyCorruptByteOfTheTextColumnsIsReadOrRefusedNeverACrash) {
  // Every byte of a shard of numbers as text and JSON replaced in turn: each sample's columns decode (a digit may
  // become another) or are an InputError naming the shard; nothing is read outside the file.
  test::TempDir dir("mds_text_corrupt");
  {
    mds::Writer w(dir.path(), mds::WriterOptions().columns(
                                  {{"i", "str_int"}, {"f", "str_float"}, {"d", "str_decimal"}, {"j", "json"}}));
    for (int64_t k = 0; k < 6; ++k)
      w.write({{"i", k * 1234567 - 3}, {"f", 1.0 / (k + 3.0)}, {"d", std::string("-1.25E+") + std::to_string(k)},
               {"j", std::string("{\"k\": [") + std::to_string(k) + ", null]}"}});
    w.finish();
  }
  const std::string shard = dir.path() + "/shard.00000.mds", good = test::read_file(shard);
  uint64_t state = 777;
  int refused = 0;
  for (size_t at = 0; at < good.size(); ++at) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ static_cast<char>(1 + (state >> 56) % 255));
    test::write_file(shard, bad);
    try {
      mds::Reader r(dir.path());
      for (int64_t k = 0; k < r.size(); ++k) r.sample(k).tensors();
    } catch (const InputError& e) {
      ++refused;
      EXPECT_NE(std::string(e.what()).find(shard), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(refused, 100);  // most changed digits of str_int / str_float / str_decimal are not numbers any more
}

// ---- merge_index -----------------------------------------------------------------------------------------

/// Writes a part of `n` samples with ids from `first` (columns id: int, name: str) into `dir`, a few per shard.
void write_part(const std::string& dir, int64_t first, int64_t n, const std::string& compression = "",
                mds::Columns columns = {{"id", "int"}, {"name", "str"}}) {
  fs::create_directories(dir);
  mds::Writer w(dir, mds::WriterOptions().columns(columns).compression(compression).size_limit(400).exist_ok(true));
  for (int64_t i = first; i < first + n; ++i) w.write({{"id", i}, {"name", "sample " + std::to_string(i)}});
  w.finish();
}

std::vector<int64_t> ids_of(const std::string& dir) {
  mds::Reader r(dir, mds::ReaderOptions().verify_hashes(true));
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < r.size(); ++i) ids.push_back(r.sample(i).tensor("id").item<int64_t>());
  return ids;
}

std::vector<int64_t> range(int64_t from, int64_t to) {
  std::vector<int64_t> out;
  for (int64_t i = from; i < to; ++i) out.push_back(i);
  return out;
}

TEST(MdsMerge, PartsInSubfoldersBecomeOneDataSetInNaturalOrderWithoutMovingAShard) {
  test::TempDir root("mds_merge");
  const std::string r = root.path();
  write_part(r + "/part-10", 300, 7, "zstd");  // natural order: part-2 before part-10
  write_part(r + "/part-2", 200, 9);
  write_part(r + "/part-1", 100, 12);
  write_part(r + "/more/part-0", 0, 5);  // a part further down; "more" sorts before "part-1"
  write_part(r + "/part-3", 0, 0);       // a writer that got no samples: an index without shards
  const std::string before = test::read_file(r + "/part-1/shard.00000.mds");

  const mds::Merged merged = mds::merge_index(r);
  EXPECT_EQ(merged.parts, (std::vector<std::string>{"more/part-0", "part-1", "part-2", "part-10"}));
  EXPECT_EQ(merged.empty_parts, std::vector<std::string>{"part-3"});
  EXPECT_EQ(merged.index.total_samples(), 5 + 12 + 9 + 7);
  std::vector<int64_t> want = range(0, 5);
  for (auto [from, to] : {std::pair<int64_t, int64_t>{100, 112}, {200, 209}, {300, 307}})
    for (int64_t i = from; i < to; ++i) want.push_back(i);
  EXPECT_EQ(ids_of(r), want);  // hashes verified through the prefixed names
  EXPECT_EQ(test::read_file(r + "/part-1/shard.00000.mds"), before);
  EXPECT_GT(mds::Reader(r).num_shards(), 4);
  const mds::Index index = mds::read_index(r);
  const mds::ShardInfo& last = index.shards.back();
  EXPECT_EQ(last.raw_data.basename.rfind("part-10/shard.", 0), 0u);
  ASSERT_TRUE(last.zip_data.has_value());
  EXPECT_EQ(last.zip_data->basename.rfind("part-10/shard.", 0), 0u);
  EXPECT_EQ(last.zip_data->basename.substr(last.zip_data->basename.size() - 5), ".zstd");
  // The merged data set reads as the parts' samples one after another, record for record.
  mds::Reader all(r), part(r + "/part-2");
  for (int64_t i = 0; i < part.size(); ++i)
    EXPECT_EQ(std::string(all.sample(17 + i).record().view()), std::string(part.sample(i).record().view()));

  // A part added later: merging again replaces the merged index.
  write_part(r + "/part-11", 400, 3);
  EXPECT_EQ(mds::merge_index(r).parts.back(), "part-11");
  EXPECT_EQ(ids_of(r).back(), 402);
  EXPECT_EQ(mds::Reader(r).size(), 36);
}

TEST(MdsMerge, BadPartsAreRefusedAndNothingIsWritten) {
  auto merge_error = [](const std::string& root) { return input_error_of([&] { mds::merge_index(root); }); };
  {
    test::TempDir root("mds_merge_columns");
    write_part(root.path() + "/a", 0, 3);
    write_part(root.path() + "/b", 3, 3, "", {{"id", "int"}, {"name", "bytes"}});
    expect_has(merge_error(root.path()), {"part b has columns {id: int, name: bytes}", "part a has {id: int, name: str}",
                                          "must have the same columns"});
    EXPECT_FALSE(fs::exists(root.path() + "/index.json"));
  }
  {
    test::TempDir root("mds_merge_missing");
    write_part(root.path() + "/a", 0, 30);
    fs::remove(root.path() + "/a/shard.00001.mds");
    expect_has(merge_error(root.path()), {"part a: shard file", "a/shard.00001.mds is missing"});
    EXPECT_FALSE(fs::exists(root.path() + "/index.json"));
  }
  {
    test::TempDir root("mds_merge_own");
    write_part(root.path(), 0, 3);  // the root is a data set itself
    write_part(root.path() + "/a", 3, 3);
    const std::string own = test::read_file(root.path() + "/index.json");
    expect_has(merge_error(root.path()), {"holds a data set of its own", "shard.00000.mds",
                                          "merge the parts into a folder that holds only parts"});
    EXPECT_EQ(test::read_file(root.path() + "/index.json"), own);
  }
  {
    test::TempDir root("mds_merge_none");
    fs::create_directories(root.path() + "/empty/folder");
    expect_has(merge_error(root.path()), {"no subfolder of", "holds an index.json"});
    write_part(root.path() + "/p", 0, 0);
    expect_has(merge_error(root.path()), {"every part under", "is empty"});
    expect_has(merge_error(root.path() + "/nowhere"), {"nowhere does not exist"});
    EXPECT_FALSE(fs::exists(root.path() + "/index.json"));
    // An index without shards is refused as a data set, and said why.
    expect_has(input_error_of([&] { mds::Reader(root.path() + "/p"); }), {"\"shards\" is empty", "its writer got no samples"});
  }
}

}  // namespace
}  // namespace tessera
