#pragma once
// Helpers of the MDS, streaming and tokenizer tests: a temporary folder, whole-file reads and writes, samples of every
// encoding, folders of labelled samples, the targets of an epoch's batches, and the interop tests' peers venv.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <limits>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <tessera/data/batch_source.h>
#include <tessera/data/mds.h>

namespace tessera::test {

/// The targets of every batch `source` yields in epoch `epoch` from `first_batch` on (with labels that are
/// sample ids, the samples of each batch).
inline std::vector<std::vector<int64_t>> batches_of(data::BatchSource& source, uint64_t seed, int64_t epoch,
                                                   int64_t first_batch = 0) {
  source.start_epoch(seed, epoch, first_batch);
  std::vector<std::vector<int64_t>> out;
  while (auto b = source.next()) {
    const at::Tensor t = b->target().contiguous();
    out.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  }
  return out;
}

/// An MDS folder of `n` samples labelled first, first + 1, ... (or label % classes when classes > 0), each image
/// uint8 [side, side] a function of its label; shards of at most `size_limit` bytes.
inline void write_labels(const std::string& dir, int64_t first, int64_t n, int64_t size_limit, int64_t classes = 0,
                         int64_t side = 4) {
  data::mds::Writer writer(dir, data::mds::WriterOptions()
                                    .columns({{"image", "ndarray:uint8:" + std::to_string(side) + "," +
                                                            std::to_string(side)},
                                              {"label", "int"}})
                                    .size_limit(size_limit));
  for (int64_t i = first; i < first + n; ++i) {
    at::Tensor image = at::arange(side * side, at::kLong).add(i * 7).remainder(256).to(at::kByte).view({side, side});
    writer.write({{"image", image}, {"label", classes == 0 ? i : i % classes}});
  }
  writer.finish();
}

/// A fresh folder under the system's temp folder, removed with everything in it at the end of the scope.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) {
    std::string tmpl = (std::filesystem::temp_directory_path() / ("tessera_" + prefix + "_XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// The Python of the streaming peers' venv (scripts/install-peers.sh streaming, or $TESSERA_STREAMING_VENV): it holds
/// mosaicml-streaming, Hugging Face tokenizers and tensorboard, the interop tests' peers. "" when it is absent.
inline std::string streaming_venv_python() {
  const char* env = std::getenv("TESSERA_STREAMING_VENV");
  const char* home = std::getenv("HOME");
  const std::string venv = env ? env : std::string(home ? home : "/root") + "/.cache/tessera/venv-peers-streaming-0.13.0";
  const std::string python = venv + "/bin/python";
  return std::filesystem::exists(python) ? python : std::string();
}

/// Declares `python`, the venv's Python, or skips the test saying how to create the venv.
#define REQUIRE_STREAMING_VENV(python)                                                                        \
  const std::string python = ::tessera::test::streaming_venv_python();                                       \
  if (python.empty())                                                                                         \
  GTEST_SKIP() << "the streaming peers' venv (mosaicml-streaming, tokenizers, tensorboard) is absent: create " \
                  "it with scripts/install-peers.sh streaming (or point TESSERA_STREAMING_VENV at one)"

inline std::string read_file(const std::string& path);

/// Runs tests/core/`script` with `python` and `args`, its output in `log`; a failure shows that output.
inline void run_python_helper(const std::string& python, const std::string& script, const std::string& args,
                              const std::string& log) {
  const std::string cmd = python + " " TESSERA_SOURCE_DIR "/tests/core/" + script + " " + args + " > " + log + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << read_file(log);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out) throw std::runtime_error("cannot write " + path);
}

// Every encoding Tessera writes, with values that are a pure function of the sample index.
inline const data::mds::Columns kAllColumns = {
    {"i", "int"},         {"u8", "uint8"},     {"u16", "uint16"},   {"u32", "uint32"},   {"u64", "uint64"},
    {"i8", "int8"},       {"i16", "int16"},    {"i32", "int32"},    {"i64", "int64"},    {"f16", "float16"},
    {"f32", "float32"},   {"f64", "float64"},  {"s", "str"},        {"b", "bytes"},      {"a", "ndarray"},
    {"af", "ndarray:float32"}, {"ax", "ndarray:int16:2,3"}, {"png", "png"}, {"jpg", "jpeg"}, {"pil", "pil"},
    {"si", "str_int"},    {"sf", "str_float"}, {"sd", "str_decimal"}, {"js", "json"},
};

/// The str_float values of sample_of: Python's str() switches to scientific notation below 1e-4 and from 1e16;
/// the shortest round-trip digits; the extremes of a double.
inline double float_of(int64_t i) {
  switch (i % 8) {
    case 0: return 1e16 * static_cast<double>(i / 8);  // 0.0, 1e+16, 2e+16, ...
    case 1: return 1.0 / (3.0 + static_cast<double>(i));
    case 2: return -1e-5 * static_cast<double>(i);
    case 3: return i % 16 == 3 ? 1e22 : 9999999999999998.0;
    case 4: return i % 16 == 4 ? 5e-324 : 1.7976931348623157e308;
    case 5: return 0.1 * static_cast<double>(i);
    case 6: return i % 16 == 6 ? -0.0 : 0.0001;
    default: return 123456789.0 * static_cast<double>(i);
  }
}

inline at::Tensor pixels(int64_t i, int64_t channels) {
  // A smooth gradient (JPEG keeps it close) that differs per sample.
  at::Tensor y = at::arange(8, at::kFloat).view({8, 1, 1}), x = at::arange(12, at::kFloat).view({1, 12, 1});
  at::Tensor c = at::arange(channels, at::kFloat).view({1, 1, channels});
  return (y * 9 + x * 5 + c * 30 + static_cast<double>(i % 10 * 3)).to(at::kByte);  // at most 235
}

inline data::mds::Sample sample_of(int64_t i) {
  data::mds::Sample s;
  s["i"] = int64_t{-1000000007} * i;
  s["u8"] = i % 256;
  s["u16"] = int64_t{65535} - i;
  s["u32"] = int64_t{4000000000} + i;
  s["u64"] = (int64_t{1} << 62) + i;
  s["i8"] = -i;
  s["i16"] = int64_t{-32768} + i;
  s["i32"] = int64_t{2000000000} + i;
  s["i64"] = -(int64_t{1} << 60) - i;
  s["f16"] = 0.1 * static_cast<double>(i);
  s["f32"] = 1.0 / (1.0 + static_cast<double>(i));
  s["f64"] = 3.141592653589793 * static_cast<double>(i);
  s["s"] = std::string(static_cast<size_t>(i % 5), 'x') + "h\xC3\xA9";  // UTF-8 "hé"
  s["b"] = std::string(static_cast<size_t>(i % 4), static_cast<char>(i));  // sometimes empty
  s["a"] = at::arange(1 + i % 300, at::kInt).mul(3).view({1, -1});        // dynamic dtype and shape
  s["af"] = at::linspace(0, 1, 2 + i % 3, at::kFloat);
  s["ax"] = at::arange(6, at::kShort).view({2, 3}).add(static_cast<int16_t>(i));
  s["png"] = pixels(i, 1 + i % 4);
  s["jpg"] = pixels(i, i % 2 ? 3 : 1);
  s["pil"] = pixels(i, i % 2 ? 3 : 4);
  s["si"] = i == 5 ? std::numeric_limits<int64_t>::min() : i == 6 ? std::numeric_limits<int64_t>::max() : i * i * i * 1000003 - 7;
  s["sf"] = float_of(i);
  if (i % 3 == 0) s["sd"] = std::string("0.1");
  else if (i % 3 == 1) s["sd"] = "-" + std::to_string(i) + ".50E-3";
  else s["sd"] = i;  // an integer: its digits
  s["js"] = "{\"i\": " + std::to_string(i) + ", \"v\": [1.5, null, \"x\u00e9\"]}";
  return s;
}

}  // namespace tessera::test
