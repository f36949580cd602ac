#include "tfevents.h"
#include "crc32.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace tessera::callbacks::tfevents {
namespace {

// Protocol-buffer wire format: each field is a key (number << 3 | wire type) and a value. Fields are written in
// field-number order and proto3 defaults (0, "") are left out, as protobuf's own serializers do, so that these
// bytes equal what TensorBoard's Python protos serialize (tests/core/tensorboard_interop_test.cpp checks it).
enum Wire : uint32_t { Varint = 0, Fixed64 = 1, Bytes = 2, Fixed32 = 5 };

void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void key(std::string& out, uint32_t field, Wire wire) { varint(out, (static_cast<uint64_t>(field) << 3) | wire); }

template <class T>
void little_endian(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

void bytes_field(std::string& out, uint32_t field, const std::string& bytes) {
  key(out, field, Bytes);
  varint(out, bytes.size());
  out += bytes;
}

void double_field(std::string& out, uint32_t field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  key(out, field, Fixed64);
  little_endian(out, bits);
}

void float_field(std::string& out, uint32_t field, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  key(out, field, Fixed32);
  little_endian(out, bits);
}

void varint_field(std::string& out, uint32_t field, uint64_t v) {
  key(out, field, Varint);
  varint(out, v);
}

// event.proto: Event {double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5}.
std::string event(double wall_time, int64_t step, uint32_t what_field, const std::string& what) {
  std::string e;
  if (wall_time != 0) double_field(e, 1, wall_time);
  if (step != 0) varint_field(e, 2, static_cast<uint64_t>(step));
  bytes_field(e, what_field, what);
  return record(e);
}

// summary.proto: SummaryMetadata {PluginData plugin_data = 1}; PluginData {string plugin_name = 1; bytes content = 2}.
std::string plugin_metadata(const std::string& plugin, const std::string& content) {
  std::string data;
  bytes_field(data, 1, plugin);
  if (!content.empty()) bytes_field(data, 2, content);
  std::string metadata;
  bytes_field(metadata, 1, data);
  return metadata;
}

// Summary {repeated Value value = 1}; Value {string tag = 1; TensorProto tensor = 8; SummaryMetadata metadata = 9}.
std::string tensor_summary(const std::string& tag, const std::string& tensor, const std::string& metadata) {
  std::string value;
  bytes_field(value, 1, tag);
  bytes_field(value, 8, tensor);
  bytes_field(value, 9, metadata);
  std::string summary;
  bytes_field(summary, 1, value);
  return summary;
}

// google/protobuf/struct.proto: Value {double number_value = 2; string string_value = 3; bool bool_value = 4}.
std::string struct_value(const std::string& text) {
  std::string v;
  if (text == "true" || text == "false") {
    varint_field(v, 4, text == "true" ? 1 : 0);
    return v;
  }
  if (!text.empty() && text.find_first_of(" \t\n") == std::string::npos) {
    char* end = nullptr;
    errno = 0;
    const double number = std::strtod(text.c_str(), &end);
    if (end == text.c_str() + text.size() && errno == 0 && std::isfinite(number)) {
      double_field(v, 2, number);
      return v;
    }
  }
  bytes_field(v, 3, text);
  return v;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) { return reflected_crc32<0x82f63b78u>(data, size); }

uint32_t masked_crc32c(const std::string& bytes) {
  const uint32_t crc = crc32c(bytes.data(), bytes.size());
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string record(const std::string& payload) {
  std::string length;
  little_endian(length, static_cast<uint64_t>(payload.size()));
  std::string out = length;
  little_endian(out, masked_crc32c(length));
  out += payload;
  little_endian(out, masked_crc32c(payload));
  return out;
}

std::string file_version(double wall_time) { return event(wall_time, 0, 3, "brain.Event:2"); }

std::string scalars(double wall_time, int64_t step, const std::map<std::string, double>& values) {
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    bytes_field(value, 1, tag);
    float_field(value, 2, static_cast<float>(v));  // Value.simple_value
    bytes_field(summary, 1, value);
  }
  return event(wall_time, step, 5, summary);
}

std::string text(double wall_time, int64_t step, const std::string& tag, const std::string& markdown) {
  // tensor.proto: TensorProto {DataType dtype = 1 (DT_STRING = 7); repeated bytes string_val = 8}; no shape: rank 0.
  std::string tensor;
  varint_field(tensor, 1, 7);
  bytes_field(tensor, 8, markdown);
  // The text plugin's content is TextPluginData {int32 version = 1} at version 0: empty.
  return event(wall_time, step, 5, tensor_summary(tag, tensor, plugin_metadata("text", "")));
}

std::string image(double wall_time, int64_t step, const std::string& tag, const std::string& png, int64_t height,
                  int64_t width, int64_t channels) {
  // summary.proto: Image {int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4};
  // Value {string tag = 1; Image image = 4}.
  std::string img;
  varint_field(img, 1, static_cast<uint64_t>(height));
  varint_field(img, 2, static_cast<uint64_t>(width));
  varint_field(img, 3, static_cast<uint64_t>(channels));
  bytes_field(img, 4, png);
  std::string value;
  bytes_field(value, 1, tag);
  bytes_field(value, 4, img);
  std::string summary;
  bytes_field(summary, 1, value);
  return event(wall_time, step, 5, summary);
}

std::string session_start(double wall_time, int64_t step, const std::map<std::string, std::string>& hparams,
                          double start_time) {
  // tensorboard/plugins/hparams/plugin_data.proto: SessionStartInfo {map<string, Value> hparams = 1;
  // double start_time_secs = 5}; HParamsPluginData {int32 version = 1 (0); SessionStartInfo session_start_info = 3}.
  std::string info;
  for (const auto& [name, value] : hparams) {
    std::string entry;
    bytes_field(entry, 1, name);
    bytes_field(entry, 2, struct_value(value));
    bytes_field(info, 1, entry);
  }
  if (start_time != 0) double_field(info, 5, start_time);
  std::string content;
  bytes_field(content, 3, info);
  // The plugin's summaries carry an empty float tensor (dtype DT_FLOAT = 1, shape [0]), as its own writers do.
  std::string shape;
  bytes_field(shape, 2, "");  // TensorShapeProto {repeated Dim dim = 2}: one Dim of size 0
  std::string tensor;
  varint_field(tensor, 1, 1);
  bytes_field(tensor, 2, shape);
  return event(wall_time, step, 5,
               tensor_summary("_hparams_/session_start_info", tensor, plugin_metadata("hparams", content)));
}

}  // namespace tessera::callbacks::tfevents
