// The checkpoint file format: writing atomically, reading with verification (see checkpoint_file.h).
#include "checkpoint/checkpoint_file.h"
#include "posix_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/checkpoint.h>

namespace tessera::checkpoint {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'T', 'S', 'R', 'C', 'K', 'P', 'T', '1'};
constexpr size_t kHeaderSize = 24;

/// The dtypes a checkpoint may hold, by their names in the metadata.
const std::vector<std::pair<std::string, at::ScalarType>>& dtypes() {
  static const std::vector<std::pair<std::string, at::ScalarType>> table = {
      {"float32", at::kFloat}, {"float64", at::kDouble}, {"float16", at::kHalf}, {"bfloat16", at::kBFloat16},
      {"int64", at::kLong},    {"int32", at::kInt},      {"int16", at::kShort},  {"int8", at::kChar},
      {"uint8", at::kByte},    {"bool", at::kBool}};
  return table;
}

std::string dtype_name(at::ScalarType t) {
  for (const auto& [name, type] : dtypes()) {
    if (type == t) return name;
  }
  throw Error(fmt::format("checkpoint: cannot store a tensor of type {}", c10::toString(t)));
}

uint32_t crc_update(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = static_cast<uint32_t>(crc32(crc, p, chunk));
    p += chunk;
    n -= chunk;
  }
  return crc;
}

void put_u64(unsigned char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint64_t get_u64(const unsigned char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(in[i]) << (8 * i);
  return v;
}

using posix::errno_text;

/// Writes all of `n` bytes or throws.
void write_all(int fd, const void* data, size_t n, const std::string& path) {
  if (!posix::write_all(fd, data, n)) {
    throw Error(fmt::format("checkpoint: cannot write '{}': {}", path, errno_text()));
  }
}

void fsync_folder(const fs::path& folder) {
  const std::string dir = folder.empty() ? std::string(".") : folder.string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("checkpoint: cannot open the folder '{}' to sync it: {}", dir, errno_text()));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(fmt::format("checkpoint: cannot sync the folder '{}': {}", dir, errno_text()));
}

/// Test hook for the fault-injection test: TESSERA_TEST_KILL_IN_CHECKPOINT_WRITE=n kills this process with
/// SIGKILL halfway through writing its n-th checkpoint file (after half of the pieces, before the rename).
bool kill_in_this_write() {
  static std::atomic<int64_t> writes{0};
  static const int64_t target = [] {
    const char* v = std::getenv("TESSERA_TEST_KILL_IN_CHECKPOINT_WRITE");
    return v ? std::atoll(v) : int64_t{0};
  }();
  const int64_t n = ++writes;
  return target > 0 && n == target;
}

/// Writes the pieces to a temporary file beside `path`, syncs it and renames it over `path`.
void write_pieces(const std::vector<std::pair<const void*, size_t>>& pieces, const std::string& path,
                  bool kill_midway = false) {
  const fs::path target(path);
  const fs::path folder = target.parent_path();
  const std::string tmp = fmt::format("{}.tmp-{}", path, static_cast<long>(::getpid()));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(fmt::format("checkpoint: cannot create '{}': {}", tmp, errno_text()));
  try {
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (kill_midway && i == pieces.size() / 2) {
        ::fsync(fd);
        std::raise(SIGKILL);
      }
      write_all(fd, pieces[i].first, pieces[i].second, tmp);
    }
    if (::fsync(fd) != 0) throw Error(fmt::format("checkpoint: cannot sync '{}': {}", tmp, errno_text()));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw Error(fmt::format("checkpoint: cannot close '{}': {}", tmp, errno_text()));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw Error(fmt::format("checkpoint: cannot rename '{}' to '{}': {}", tmp, path, why));
  }
  fsync_folder(folder);
}

[[noreturn]] void corrupt(const std::string& path, const std::string& problem) {
  throw CheckpointError(fmt::format("checkpoint '{}': {}", path, problem));
}

}  // namespace

const at::Tensor& File::tensor(const std::string& name, const std::string& path) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) corrupt(path, "it has no tensor \"" + name + "\"");
  return it->second;
}

void write_file(const File& file, const std::string& path) {
  std::vector<at::Tensor> data;  // contiguous CPU copies, in the order of the metadata's offsets
  nlohmann::json meta = file.meta;
  nlohmann::json index = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    if (!t.defined()) throw Error("checkpoint: tensor \"" + name + "\" is undefined");
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = c.numel() * c.element_size();
    index[name] = {{"dtype", dtype_name(c.scalar_type())}, {"shape", c.sizes().vec()}, {"offset", offset},
                   {"nbytes", nbytes}};
    offset += nbytes;
    data.push_back(std::move(c));
  }
  meta["tensors"] = std::move(index);
  const std::string json = meta.dump();

  unsigned char json_size[8];
  put_u64(json_size, json.size());
  std::vector<std::pair<const void*, size_t>> payload = {{json_size, 8}, {json.data(), json.size()}};
  for (const auto& t : data) payload.emplace_back(t.data_ptr(), t.numel() * t.element_size());
  uint32_t crc = static_cast<uint32_t>(crc32(0L, Z_NULL, 0));
  uint64_t payload_size = 0;
  for (const auto& [p, n] : payload) {
    crc = crc_update(crc, p, n);
    payload_size += n;
  }
  unsigned char header[kHeaderSize] = {};
  std::memcpy(header, kMagic, 8);
  put_u64(header + 8, payload_size);
  for (int i = 0; i < 4; ++i) header[16 + i] = static_cast<unsigned char>(crc >> (8 * i));
  payload.insert(payload.begin(), {header, kHeaderSize});
  write_pieces(payload, path, kill_in_this_write());
}

File read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) corrupt(path, "cannot open it: " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    corrupt(path, "cannot stat it: " + errno_text());
  }
  std::vector<unsigned char> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  if (got != bytes.size()) corrupt(path, "cannot read it completely");

  if (bytes.size() < kHeaderSize || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    corrupt(path, "not a Tessera checkpoint (bad magic bytes)");
  }
  const uint64_t payload_size = get_u64(bytes.data() + 8);
  if (bytes.size() - kHeaderSize != payload_size) {
    corrupt(path, fmt::format("truncated or padded: the header says {} payload bytes, the file has {}",
                              payload_size, bytes.size() - kHeaderSize));
  }
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= static_cast<uint32_t>(bytes[16 + i]) << (8 * i);
  const unsigned char* payload = bytes.data() + kHeaderSize;
  const uint32_t actual = crc_update(static_cast<uint32_t>(crc32(0L, Z_NULL, 0)), payload, payload_size);
  if (stored != actual) {
    corrupt(path, fmt::format("checksum mismatch (stored {:08x}, computed {:08x}): the file is corrupt", stored,
                              actual));
  }
  if (payload_size < 8) corrupt(path, "the payload is too short");
  const uint64_t json_size = get_u64(payload);
  if (json_size > payload_size - 8) corrupt(path, "the metadata size is out of range");
  File file;
  try {
    file.meta = nlohmann::json::parse(payload + 8, payload + 8 + json_size);
  } catch (const std::exception& e) {
    corrupt(path, std::string("the metadata is not valid JSON: ") + e.what());
  }
  const unsigned char* blob = payload + 8 + json_size;
  const uint64_t blob_size = payload_size - 8 - json_size;
  try {
    for (const auto& [name, entry] : file.meta.at("tensors").items()) {
      const std::string dtype = entry.at("dtype").get<std::string>();
      auto it = std::find_if(dtypes().begin(), dtypes().end(), [&](const auto& d) { return d.first == dtype; });
      if (it == dtypes().end()) corrupt(path, "tensor \"" + name + "\" has an unknown dtype \"" + dtype + "\"");
      // Every number is checked before it is converted (nlohmann converts 1e300 or -1 to an integer type without
      // a check) and the size before anything is allocated: a corrupt index is an error, never a huge allocation.
      const std::string& tensor_name = name;  // (a structured binding cannot be captured in C++17)
      const auto whole = [&](const nlohmann::json& v, const std::string& what) -> uint64_t {
        if (!v.is_number_unsigned())
          corrupt(path, "tensor \"" + tensor_name + "\": its " + what + " " + v.dump() + " is not a whole number >= 0");
        return v.get<uint64_t>();
      };
      const nlohmann::json& shape_json = entry.at("shape");
      if (!shape_json.is_array())
        corrupt(path, "tensor \"" + name + "\": its shape " + shape_json.dump() + " is not a list of sizes");
      std::vector<int64_t> shape;
      const auto element_size = static_cast<uint64_t>(c10::elementSize(it->second));
      uint64_t needed = element_size;  // bytes of the shape, saturated at blob_size + 1
      for (const auto& d : shape_json) {
        const uint64_t size = whole(d, "shape entry");
        if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          corrupt(path, "tensor \"" + name + "\": its shape entry " + d.dump() + " is too large");
        shape.push_back(static_cast<int64_t>(size));
        needed = (size != 0 && needed > (blob_size + 1) / size) ? blob_size + 1 : needed * size;
      }
      const uint64_t offset = whole(entry.at("offset"), "offset");
      const uint64_t nbytes = whole(entry.at("nbytes"), "nbytes");
      if (needed > blob_size || nbytes != needed || offset > blob_size || nbytes > blob_size - offset) {
        corrupt(path, fmt::format("tensor \"{}\" is out of bounds (shape {}, {} bytes at offset {}; the tensor data "
                                  "holds {} bytes)",
                                  name, shape_json.dump(), nbytes, offset, blob_size));
      }
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(it->second));
      if (nbytes) std::memcpy(t.data_ptr(), blob + offset, nbytes);
      file.tensors.emplace(name, std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    corrupt(path, std::string("the tensor index is malformed: ") + e.what());
  }
  file.meta.erase("tensors");
  return file;
}

void write_text_atomically(const std::string& path, const std::string& text) {
  write_pieces({{text.data(), text.size()}}, path);
}

void write_pieces_atomically(const std::vector<std::pair<const void*, size_t>>& pieces, const std::string& path) {
  write_pieces(pieces, path);
}

}  // namespace tessera::checkpoint
