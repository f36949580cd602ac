// Hugging Face's safetensors format (include/tessera/safetensors.h): writing atomically, reading with every check
// the reference implementation makes (header size, dtypes, shapes against byte ranges, offsets contiguous from 0 to
// the end of the file).
#include <tessera/safetensors.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <tessera/checkpoint.h>

#include "checkpoint_file.h"

namespace tessera {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeader = 100'000'000;  // the reference reader's limit

struct Code {
  const char* name;
  at::ScalarType type;
};
constexpr Code kCodes[] = {{"F64", at::kDouble}, {"F32", at::kFloat},  {"F16", at::kHalf}, {"BF16", at::kBFloat16},
                           {"I64", at::kLong},   {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},
                           {"U8", at::kByte},    {"BOOL", at::kBool}};

const char* code_of(at::ScalarType type) {
  for (const auto& c : kCodes) {
    if (c.type == type) return c.name;
  }
  return nullptr;
}

[[noreturn]] void malformed(const std::string& path, const std::string& problem) {
  throw CheckpointError(fmt::format("safetensors '{}': {}", path, problem));
}

}  // namespace

void save_safetensors(const std::string& path, const Safetensors& contents) {
  json header = json::object();
  std::set<std::string> names;
  std::vector<at::Tensor> bytes;  // contiguous CPU copies, in file order
  uint64_t offset = 0;
  for (const auto& [name, tensor] : contents.tensors) {
    if (name.empty() || name == "__metadata__" || !names.insert(name).second) {
      throw InputError(fmt::format("save_safetensors '{}': the tensor name \"{}\" is {}", path, name,
                                   name.empty() ? "empty" : name == "__metadata__" ? "reserved" : "given twice"));
    }
    if (!tensor.defined()) throw InputError(fmt::format("save_safetensors '{}': tensor \"{}\" is undefined", path, name));
    const char* code = code_of(tensor.scalar_type());
    if (code == nullptr) {
      throw InputError(fmt::format("save_safetensors '{}': tensor \"{}\" is {}, which safetensors cannot hold (it has "
                                   "F64, F32, F16, BF16, I64, I32, I16, I8, U8 and BOOL)",
                                   path, name, c10::toString(tensor.scalar_type())));
    }
    at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t size = static_cast<uint64_t>(cpu.numel()) * cpu.element_size();
    header[name] = {{"dtype", code}, {"shape", cpu.sizes().vec()}, {"data_offsets", {offset, offset + size}}};
    offset += size;
    bytes.push_back(std::move(cpu));
  }
  if (!contents.metadata.empty()) header["__metadata__"] = contents.metadata;
  std::string text = header.dump();
  text.append((8 - (text.size() % 8)) % 8, ' ');  // the data starts 8-byte aligned
  const uint64_t n = text.size();
  unsigned char size_bytes[8];
  for (int i = 0; i < 8; ++i) size_bytes[i] = static_cast<unsigned char>(n >> (8 * i));
  std::vector<std::pair<const void*, size_t>> pieces{{size_bytes, 8}, {text.data(), text.size()}};
  for (const auto& t : bytes) {
    if (t.numel() > 0) pieces.emplace_back(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  checkpoint::write_pieces_atomically(pieces, path);
}

Safetensors load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) malformed(path, "cannot open the file");
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  if (file_size < 8) malformed(path, fmt::format("the file has {} bytes, fewer than the 8 of the header's size", file_size));
  unsigned char size_bytes[8];
  in.read(reinterpret_cast<char*>(size_bytes), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(size_bytes[i]) << (8 * i);
  if (n > kMaxHeader) malformed(path, fmt::format("the header claims {} bytes, more than the format's 100 MB", n));
  if (n > file_size - 8) {
    malformed(path, fmt::format("the header claims {} bytes and the file has {} after the size (truncated?)", n,
                                file_size - 8));
  }
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  const uint64_t data_size = file_size - 8 - n;

  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    malformed(path, std::string("the header is not JSON: ") + e.what());
  }
  if (!header.is_object()) malformed(path, "the header is not a JSON object");

  struct Entry {
    std::string name;
    at::ScalarType type;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  Safetensors out;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) malformed(path, "__metadata__ is not an object of strings");
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string()) malformed(path, fmt::format("__metadata__ \"{}\" is {}, not a string", key, v.dump()));
        out.metadata[key] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = fmt::format("tensor \"{}\"", name);
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets")) {
      malformed(path, where + " lacks dtype, shape or data_offsets");
    }
    Entry e{name, at::kFloat, {}, 0, 0};
    const json& dtype = value.at("dtype");
    const auto code = std::find_if(std::begin(kCodes), std::end(kCodes), [&](const Code& c) {
      return dtype.is_string() && dtype.get<std::string>() == c.name;
    });
    if (code == std::end(kCodes)) {
      malformed(path, fmt::format("{} has dtype {}, which Tessera does not read (F64, F32, F16, BF16, I64, I32, I16, "
                                  "I8, U8, BOOL)",
                                  where, dtype.dump()));
    }
    e.type = code->type;
    const json& shape = value.at("shape");
    const json& offsets = value.at("data_offsets");
    if (!shape.is_array() || !std::all_of(shape.begin(), shape.end(), [](const json& d) { return d.is_number_unsigned(); })) {
      malformed(path, fmt::format("{} has shape {}; expected a list of sizes >= 0", where, shape.dump()));
    }
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      malformed(path, fmt::format("{} has data_offsets {}; expected [begin, end]", where, offsets.dump()));
    }
    e.begin = offsets[0].get<uint64_t>();
    e.end = offsets[1].get<uint64_t>();
    uint64_t numel = 1;
    for (const auto& d : shape) {
      const uint64_t size = d.get<uint64_t>();
      if (size != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / size) {
        malformed(path, fmt::format("{} has shape {}, too large", where, shape.dump()));
      }
      numel *= size;
      e.shape.push_back(static_cast<int64_t>(size));
    }
    const uint64_t expected = numel * at::elementSize(e.type);
    if (e.begin > e.end || e.end - e.begin != expected) {
      malformed(path, fmt::format("{} ({} {}) needs {} bytes and its data_offsets [{}, {}] give {}", where, code->name,
                                  shape.dump(), expected, e.begin, e.end,
                                  e.begin > e.end ? std::string("a negative size") : std::to_string(e.end - e.begin)));
    }
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  for (const Entry& e : entries) {
    if (e.begin != at) {
      malformed(path, fmt::format("tensor \"{}\" starts at byte {} of the data, where {} was expected (the tensors must "
                                  "follow one another without gaps or overlaps)",
                                  e.name, e.begin, at));
    }
    at = e.end;
  }
  if (at != data_size) {
    malformed(path, fmt::format("the tensors cover {} bytes of data and the file has {} after the header{}", at,
                                data_size, at > data_size ? " (truncated?)" : ""));
  }
  for (const Entry& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.type));
    if (e.end > e.begin) {
      in.seekg(static_cast<std::streamoff>(8 + n + e.begin));
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
      if (!in) malformed(path, fmt::format("cannot read tensor \"{}\"", e.name));
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace tessera
