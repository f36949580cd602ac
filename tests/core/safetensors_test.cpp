// safetensors files (include/tessera/safetensors.h): round trips of every dtype, the exact bytes of a small file,
// every malformed file refused with its problem; the Trainer's export_weights and loading such a file into a run;
// and PyPI's safetensors reading what Tessera writes and the other way round (tests/core/safetensors_interop.py, in
// the streaming peers' venv; skipped without it).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include <tessera/checkpoint.h>
#include <tessera/safetensors.h>
#include <tessera/trainer.h>

#include "mds_support.h"
#include "support.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

/// The values both sides of the interop test compute: arange(n) * 0.37 - 1 in double, converted, shaped.
at::Tensor known(at::ScalarType type, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  const at::Tensor x = at::arange(n, at::kDouble);
  const at::Tensor values = type == at::kBool ? x.remainder(3).eq(0) : x.mul(0.37).sub(1).to(type);
  return values.reshape(shape);
}

/// The tensors of the interop test, in file order.
std::vector<std::pair<std::string, at::Tensor>> known_tensors() {
  return {{"f64", known(at::kDouble, {2, 3})},   {"f32", known(at::kFloat, {4})},
          {"f16", known(at::kHalf, {3, 1})},     {"bf16", known(at::kBFloat16, {2, 2, 2})},
          {"i64", known(at::kLong, {})},         {"i32", known(at::kInt, {5})},
          {"i16", known(at::kShort, {2})},       {"i8", known(at::kChar, {3})},
          {"u8", known(at::kByte, {4})},         {"bool", known(at::kBool, {7})},
          {"empty", known(at::kFloat, {0, 3})}};
}


/// A file of `header` (its size written in front, as the format has it) and `data`.
std::string raw_file(const std::string& header, const std::string& data, int64_t claimed = -1) {
  const uint64_t n = claimed >= 0 ? static_cast<uint64_t>(claimed) : header.size();
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

TEST(Safetensors, EveryDtypeRoundTripsBitwiseWithItsMetadata) {
  test::TempDir dir("safetensors");
  Safetensors contents;
  contents.tensors = known_tensors();
  contents.tensors.emplace_back("strided", at::arange(12, at::kFloat).reshape({3, 4}).t());  // written row-major
  contents.metadata = {{"format", "pt"}, {"note", "ünïcode"}};
  const std::string path = dir.path() + "/all.safetensors";
  save_safetensors(path, contents);
  const Safetensors back = load_safetensors(path);
  ASSERT_EQ(back.tensors.size(), contents.tensors.size());
  for (size_t i = 0; i < back.tensors.size(); ++i) {
    EXPECT_EQ(back.tensors[i].first, contents.tensors[i].first) << "file order is the order given";
    EXPECT_EQ(back.tensors[i].second.scalar_type(), contents.tensors[i].second.scalar_type()) << back.tensors[i].first;
    EXPECT_TRUE(at::equal(back.tensors[i].second, contents.tensors[i].second)) << back.tensors[i].first;
  }
  EXPECT_EQ(back.metadata, contents.metadata);
  // The data starts 8-byte aligned.
  const std::string bytes = test::read_file(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
}

TEST(Safetensors, TheBytesOfASmallFileAreTheFormats) {
  test::TempDir dir("safetensors");
  const std::string path = dir.path() + "/small.safetensors";
  save_safetensors(path, {{{"b", at::tensor({1.5f, -2.0f})}, {"a", at::tensor({int8_t{7}})}}, {{"k", "v"}}});
  const std::string header =
      R"({"__metadata__":{"k":"v"},"a":{"data_offsets":[8,9],"dtype":"I8","shape":[1]},)"
      R"("b":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}})";
  const std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  const std::string data("\x00\x00\xc0\x3f\x00\x00\x00\xc0\x07", 9);  // 1.5f, -2.0f little-endian, then int8 7
  EXPECT_EQ(test::read_file(path), raw_file(padded, data));
}

TEST(Safetensors, MalformedFilesAreRefusedSayingWhatIsWrong) {
  test::TempDir dir("safetensors");
  const std::string path = dir.path() + "/bad.safetensors";
  auto error_for = [&](const std::string& bytes) {
    test::write_file(path, bytes);
    return testing::input_error_of([&] { load_safetensors(path); });
  };
  const std::string f32 = R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  EXPECT_THAT(error_for("{}"), HasSubstr("the file has 2 bytes, fewer than the 8 of the header's size"));
  EXPECT_THAT(error_for(raw_file("{" + f32 + "}", std::string(8, '\0'), 1000)),
              HasSubstr("the header claims 1000 bytes and the file has"));
  EXPECT_THAT(error_for(raw_file("{", "", 1LL << 40)), HasSubstr("more than the format's 100 MB"));
  EXPECT_THAT(error_for(raw_file("{\"x\": [", "")), HasSubstr("the header is not JSON"));
  EXPECT_THAT(error_for(raw_file("[1]", "")), HasSubstr("the header is not a JSON object"));
  EXPECT_THAT(error_for(raw_file(R"({"x":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "x")),
              HasSubstr("tensor \"x\" has dtype \"F8_E4M3\", which Tessera does not read"));
  EXPECT_THAT(error_for(raw_file(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'))),
              HasSubstr("tensor \"x\" (F32 [3]) needs 12 bytes and its data_offsets [0, 8] give 8"));
  EXPECT_THAT(error_for(raw_file(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0'))),
              HasSubstr("tensor \"x\" has shape [-2]; expected a list of sizes >= 0"));
  EXPECT_THAT(error_for(raw_file(R"({"x":{"dtype":"F32","shape":[2]}})", std::string(8, '\0'))),
              HasSubstr("tensor \"x\" lacks dtype, shape or data_offsets"));
  EXPECT_THAT(error_for(raw_file("{" + f32 + R"(,"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                 std::string(12, '\0'))),
              HasSubstr("where 8 was expected (the tensors must follow one another without gaps or overlaps)"));
  EXPECT_THAT(error_for(raw_file("{" + f32 + "}", std::string(6, '\0'))),
              HasSubstr("the tensors cover 8 bytes of data and the file has 6 after the header (truncated?)"));
  EXPECT_THAT(error_for(raw_file("{" + f32 + "}", std::string(9, '\0'))),
              HasSubstr("the tensors cover 8 bytes of data and the file has 9 after the header"));
  EXPECT_THAT(error_for(raw_file("{" + f32 + R"(,"__metadata__":{"n":1}})", std::string(8, '\0'))),
              HasSubstr("__metadata__ \"n\" is 1, not a string"));
  EXPECT_THAT(testing::input_error_of([&] { load_safetensors(dir.path() + "/missing.safetensors"); }),
              HasSubstr("cannot open the file"));
  // Every message names the file, as a CheckpointError.
  test::write_file(path, "{}");
  EXPECT_THROW(load_safetensors(path), CheckpointError);
  EXPECT_THAT(error_for("{}"), HasSubstr("safetensors '" + path + "': "));

  // What cannot be written is refused before anything is written.
  const std::string out = dir.path() + "/out.safetensors";
  EXPECT_THAT(testing::input_error_of([&] { save_safetensors(out, {{{"c", at::ones({2}, at::kComplexFloat)}}, {}}); }),
              HasSubstr("tensor \"c\" is ComplexFloat, which safetensors cannot hold"));
  EXPECT_THAT(testing::input_error_of([&] { save_safetensors(out, {{{"a", at::ones({1})}, {"a", at::ones({1})}}, {}}); }),
              HasSubstr("the tensor name \"a\" is given twice"));
  EXPECT_THAT(testing::input_error_of([&] { save_safetensors(out, {{{"__metadata__", at::ones({1})}}, {}}); }),
              HasSubstr("is reserved"));
  EXPECT_FALSE(std::filesystem::exists(out));
}

// ------------------------------------------------------------------------------------------------ the Trainer

TEST(Safetensors, ExportedWeightsLoadIntoAnotherRunAndHalfPrecisionWeightsAreConverted) {
  test::TempDir dir("safetensors");
  auto trainer = [] {
    return std::make_unique<Trainer>(TrainerOptions().max_duration(Time(4, TimeUnit::Batch)).seed(3).threads(1),
                                     testing::tiny_components());
  };
  auto trained = trainer();
  trained->fit();
  const std::string path = dir.path() + "/sub/weights.safetensors";
  trained->export_weights(path);
  const std::string fingerprint = weights_fingerprint(*trained->state().model);

  auto fresh = trainer();
  ASSERT_NE(weights_fingerprint(*fresh->state().model), fingerprint);
  fresh->load_checkpoint(path, /*weights_only=*/true);
  EXPECT_EQ(weights_fingerprint(*fresh->state().model), fingerprint);
  EXPECT_EQ(fresh->loaded_checkpoint(), path);
  EXPECT_THAT(testing::input_error_of([&] { trainer()->load_checkpoint(path); }),
              HasSubstr("is a safetensors file: it holds weights only, not a run to resume; pass weights_only=true "
                        "to load_checkpoint"));

  // Weights saved in bfloat16 (as many published models are) load into the float32 model, rounded.
  Safetensors half = load_safetensors(path);
  for (auto& [name, t] : half.tensors) {
    if (t.is_floating_point()) t = t.to(at::kBFloat16);
  }
  half.tensors.emplace_back("extra.weight", at::ones({2}));
  const std::string half_path = dir.path() + "/half.safetensors";
  save_safetensors(half_path, half);
  auto target = trainer();
  const std::string before = weights_fingerprint(*target->state().model);
  EXPECT_THAT(testing::input_error_of([&] { target->load_checkpoint(half_path, true); }),
              HasSubstr("the checkpoint has weights the model lacks: extra.weight"));
  EXPECT_EQ(weights_fingerprint(*target->state().model), before) << "a refused load changes nothing";
  target->load_checkpoint(half_path, true, /*strict=*/false);
  for (const auto& [name, t] : half.tensors) {
    if (name == "extra.weight") continue;
    const auto params = target->state().model->named_parameters();
    const at::Tensor* mine = params.find(name);
    if (mine == nullptr) continue;  // a buffer
    EXPECT_EQ(mine->scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(*mine, t.to(at::kFloat))) << name;
  }
}

// ------------------------------------------------------------------------------------------------ interop

TEST(SafetensorsInterop, PyPISafetensorsReadsTesseraFilesAndTesseraReadsItsFiles) {
  REQUIRE_STREAMING_VENV(python);
  if (std::system((python + " -c 'import safetensors' > /dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << "the streaming peers' venv has no safetensors: recreate it with scripts/install-peers.sh streaming";
  }
  test::TempDir dir("safetensors");
  const std::string ours = dir.path() + "/tessera.safetensors";
  save_safetensors(ours, {known_tensors(), {{"format", "pt"}, {"producer", "tessera"}}});
  test::run_python_helper(python, "safetensors_interop.py", "check " + ours, dir.path() + "/check.log");

  const std::string theirs = dir.path() + "/python.safetensors";
  test::run_python_helper(python, "safetensors_interop.py", "write " + theirs, dir.path() + "/write.log");
  const Safetensors read = load_safetensors(theirs);
  std::map<std::string, at::Tensor> by_name(read.tensors.begin(), read.tensors.end());
  for (const auto& [name, expected] : known_tensors()) {
    ASSERT_EQ(by_name.count(name), 1u) << name;
    EXPECT_EQ(by_name.at(name).scalar_type(), expected.scalar_type()) << name;
    EXPECT_TRUE(at::equal(by_name.at(name), expected)) << name;
  }
  EXPECT_EQ(read.tensors.size(), known_tensors().size());
  EXPECT_EQ(read.metadata, (std::map<std::string, std::string>{{"producer", "python"}}));
}

}  // namespace
}  // namespace tessera
