// index.json: parsed with every field checked (errors name the file, the shard and the key), written atomically in
// Streaming's exact layout.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/mds/detail.h"

namespace tessera::data::mds {

// ---------------------------------------------------------------------------------------------------------
// index.json

namespace {

using nlohmann::json;

struct IndexParser {
  std::string path;
  std::string where(int64_t shard) const { return path + ": shard " + std::to_string(shard); }
  [[noreturn]] void fail(int64_t shard, const std::string& what) const { throw InputError(where(shard) + ": " + what); }

  const json& key(const json& obj, const char* name, int64_t shard, const std::string& prefix = "") const {
    auto it = obj.find(name);
    if (it == obj.end()) fail(shard, "key \"" + prefix + name + "\" is missing");
    return *it;
  }
  int64_t integer(const json& obj, const char* name, int64_t shard, const std::string& prefix = "") const {
    const json& v = key(obj, name, shard, prefix);
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
      fail(shard, "\"" + prefix + name + "\" must be a non-negative integer, got " + v.dump());
    return v.get<int64_t>();
  }
  std::string string(const json& obj, const char* name, int64_t shard, const std::string& prefix = "") const {
    const json& v = key(obj, name, shard, prefix);
    if (!v.is_string()) fail(shard, "\"" + prefix + name + "\" must be a string, got " + v.dump());
    return v.get<std::string>();
  }
  std::vector<std::string> strings(const json& obj, const char* name, int64_t shard) const {
    const json& v = key(obj, name, shard);
    if (!v.is_array()) fail(shard, std::string("\"") + name + "\" must be a list of strings, got " + v.dump());
    std::vector<std::string> out;
    for (const auto& s : v) {
      if (!s.is_string()) fail(shard, std::string("\"") + name + "\" must be a list of strings, got " + v.dump());
      out.push_back(s.get<std::string>());
    }
    return out;
  }
  FileInfo file(const json& v, const char* name, int64_t shard) const {
    const std::string prefix = std::string(name) + ".";
    if (!v.is_object()) fail(shard, std::string("\"") + name + "\" must be an object, got " + v.dump());
    FileInfo f;
    f.basename = string(v, "basename", shard, prefix);
    const std::filesystem::path base(f.basename);
    if (f.basename.empty() || base.is_absolute() || f.basename.find("..") != std::string::npos)
      fail(shard, "\"" + prefix + "basename\" \"" + f.basename + "\" must be a relative path inside the dataset");
    f.bytes = integer(v, "bytes", shard, prefix);
    if (auto it = v.find("hashes"); it != v.end()) {
      if (!it->is_object()) fail(shard, "\"" + prefix + "hashes\" must be an object, got " + it->dump());
      for (const auto& [algo, digest] : it->items()) {
        if (!digest.is_string()) fail(shard, "\"" + prefix + "hashes." + algo + "\" must be a hex string");
        f.hashes[algo] = digest.get<std::string>();
      }
    }
    return f;
  }

  ShardInfo shard(const json& s, int64_t k) const {
    if (!s.is_object()) fail(k, "must be an object, got " + s.dump().substr(0, 80));
    ShardInfo info;
    const std::string format = string(s, "format", k);
    if (format != "mds")
      fail(k, "format \"" + format + "\" is not supported (Tessera reads MDS shards only, not jsonl/csv/tsv)");
    const json& version = key(s, "version", k);
    if (version != 2) fail(k, "version " + version.dump() + " is not supported (MDS version 2 expected)");
    info.column_names = strings(s, "column_names", k);
    info.column_encodings = strings(s, "column_encodings", k);
    const json& sizes = key(s, "column_sizes", k);
    if (!sizes.is_array()) fail(k, "\"column_sizes\" must be a list, got " + sizes.dump());
    for (const auto& v : sizes) {
      if (v.is_null()) info.column_sizes.push_back(std::nullopt);
      else if (v.is_number_integer() && v.get<int64_t>() > 0) info.column_sizes.push_back(v.get<int64_t>());
      else fail(k, "\"column_sizes\" entries must be positive integers or null, got " + v.dump());
    }
    if (info.column_names.empty()) fail(k, "\"column_names\" is empty");
    if (info.column_encodings.size() != info.column_names.size() ||
        info.column_sizes.size() != info.column_names.size())
      fail(k, "\"column_names\", \"column_encodings\" and \"column_sizes\" have different lengths (" +
                  std::to_string(info.column_names.size()) + ", " + std::to_string(info.column_encodings.size()) +
                  ", " + std::to_string(info.column_sizes.size()) + ")");
    for (size_t c = 0; c < info.column_names.size(); ++c) {
      const Encoding e = Encoding::parse(info.column_encodings[c], where(k) + ": column \"" + info.column_names[c] + "\"");
      if (e.fixed_size() != info.column_sizes[c])
        fail(k, "column \"" + info.column_names[c] + "\" (" + e.name + ") has column_sizes " +
                    (info.column_sizes[c] ? std::to_string(*info.column_sizes[c]) : "null") + ", expected " +
                    (e.fixed_size() ? std::to_string(*e.fixed_size()) : "null"));
    }
    if (auto it = s.find("compression"); it != s.end() && !it->is_null()) {
      if (!it->is_string()) fail(k, "\"compression\" must be a string or null, got " + it->dump());
      info.compression = it->get<std::string>();
    }
    detail::parse_compression(info.compression, where(k));
    if (auto it = s.find("hashes"); it != s.end()) info.hashes = strings(s, "hashes", k);
    if (auto it = s.find("size_limit"); it != s.end() && !it->is_null()) info.size_limit = integer(s, "size_limit", k);
    info.samples = integer(s, "samples", k);
    if (info.samples > int64_t{UINT32_MAX})  // the shard header's count is a u32; also bounds the dataset's total
      fail(k, "\"samples\" is " + std::to_string(info.samples) + ", more than a shard can hold (at most " +
                  std::to_string(UINT32_MAX) + ")");
    info.raw_data = file(key(s, "raw_data", k), "raw_data", k);
    if (auto it = s.find("zip_data"); it != s.end() && !it->is_null()) info.zip_data = file(*it, "zip_data", k);
    if (!info.compression.empty() && !info.zip_data)
      fail(k, "compression is \"" + info.compression + "\" but \"zip_data\" is null");
    return info;
  }
};

}  // namespace

Index read_index(const std::string& dir, bool allow_empty) {
  const std::string path = (std::filesystem::path(dir) / "index.json").string();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw InputError("MDS dataset " + dir + ": " + path +
                     (std::filesystem::exists(dir) ? " not found (is this an MDS dataset folder?)"
                                                   : " not found: the folder does not exist"));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  json doc;
  try {
    doc = json::parse(buf.str());
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number too large for a double
    throw InputError(path + ": not valid JSON: " + e.what());
  }
  if (!doc.is_object()) throw InputError(path + ": the top level must be an object with \"version\" and \"shards\"");
  auto version = doc.find("version");
  if (version == doc.end() || *version != 2)
    throw InputError(path + ": \"version\" must be 2 (MDS index version 2), got " +
                     (version == doc.end() ? std::string("nothing") : version->dump()));
  auto shards = doc.find("shards");
  if (shards == doc.end() || !shards->is_array())
    throw InputError(path + ": \"shards\" must be a list of shard entries");
  if (shards->empty() && !allow_empty)
    throw InputError(path + ": \"shards\" is empty: the dataset has no shards (its writer got no samples)");
  IndexParser parser{path};
  Index index;
  for (size_t k = 0; k < shards->size(); ++k) index.shards.push_back(parser.shard((*shards)[k], static_cast<int64_t>(k)));
  if (index.shards.empty()) return index;
  const ShardInfo& first = index.shards.front();
  for (size_t k = 1; k < index.shards.size(); ++k) {
    const ShardInfo& s = index.shards[k];
    if (s.column_names != first.column_names || s.column_encodings != first.column_encodings)
      parser.fail(static_cast<int64_t>(k), "its columns differ from shard 0's (all shards of a dataset must agree)");
  }
  return index;
}

void write_index(const std::string& dir, const Index& index) {
  json shards = json::array();
  for (const ShardInfo& s : index.shards) {
    json entry = detail::shard_config(s);
    auto file = [](const FileInfo& f) {
      json hashes = json::object();
      for (const auto& [algo, digest] : f.hashes) hashes[algo] = digest;
      return json{{"basename", f.basename}, {"bytes", f.bytes}, {"hashes", hashes}};
    };
    entry["raw_data"] = file(s.raw_data);
    entry["samples"] = s.samples;
    entry["zip_data"] = s.zip_data ? file(*s.zip_data) : json(nullptr);
    shards.push_back(entry);
  }
  detail::write_file_atomic((std::filesystem::path(dir) / "index.json").string(),
                            detail::python_json(json{{"shards", shards}, {"version", 2}}));
}

// ---------------------------------------------------------------------------------------------------------
// merge_index

namespace {

/// Orders paths as a person would: runs of digits by their value ("part-2" before "part-10").
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      std::string x = a.substr(i, i2 - i), y = b.substr(j, j2 - j);
      x.erase(0, std::min(x.find_first_not_of('0'), x.size()));
      y.erase(0, std::min(y.find_first_not_of('0'), y.size()));
      if (x.size() != y.size()) return x.size() < y.size();
      if (x != y) return x < y;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

/// The folders under `dir` that hold an index.json (not looking inside them), relative to `root`, in natural order.
void find_parts(const std::filesystem::path& root, const std::filesystem::path& dir, std::vector<std::string>& out) {
  std::vector<std::string> children;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.is_directory()) children.push_back(entry.path().filename().string());
  std::sort(children.begin(), children.end(), natural_less);
  for (const std::string& child : children) {
    const std::filesystem::path path = dir / child;
    if (std::filesystem::exists(path / "index.json")) out.push_back(std::filesystem::relative(path, root).generic_string());
    else find_parts(root, path, out);
  }
}

}  // namespace

Merged merge_index(const std::string& root) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(root))
    throw InputError("merge_index: " + root + (fs::exists(root) ? " is not a folder" : " does not exist") +
                     ": expected the folder that holds the parts (one data set per subfolder)");
  const fs::path own = fs::path(root) / "index.json";
  if (fs::exists(own)) {  // an earlier merge is replaced; a data set of the folder's own is not
    Index earlier;
    try {
      earlier = read_index(root, true);
    } catch (const InputError& e) {
      throw InputError("merge_index: " + own.string() + " exists and is not an index this tool can replace (" +
                       e.what() + "); move it away to merge the subfolders into " + root);
    }
    for (const ShardInfo& s : earlier.shards)
      if (s.raw_data.basename.find('/') == std::string::npos)
        throw InputError("merge_index: " + root + " holds a data set of its own (its index.json lists " +
                         s.raw_data.basename + " in the folder itself): merge the parts into a folder that holds "
                         "only parts");
  }
  Merged merged;
  std::vector<std::string> parts;
  find_parts(fs::path(root), fs::path(root), parts);
  if (parts.empty())
    throw InputError("merge_index: no subfolder of " + root + " holds an index.json: expected the parts that "
                     "parallel writers wrote, one data set per subfolder");
  std::string first_part;
  for (const std::string& part : parts) {
    const fs::path dir = fs::path(root) / part;
    Index index = read_index(dir.string(), true);
    if (index.shards.empty()) {
      merged.empty_parts.push_back(part);
      continue;
    }
    const ShardInfo& head = index.shards.front();
    if (!first_part.empty()) {
      const ShardInfo& want = merged.index.shards.front();
      if (head.column_names != want.column_names || head.column_encodings != want.column_encodings) {
        auto columns = [](const ShardInfo& s) {
          std::string out;
          for (size_t c = 0; c < s.column_names.size(); ++c)
            out += (c ? ", " : "") + s.column_names[c] + ": " + s.column_encodings[c];
          return out;
        };
        throw InputError("merge_index: part " + part + " has columns {" + columns(head) + "}, part " + first_part +
                         " has {" + columns(want) + "}: the parts of one data set must have the same columns");
      }
    }
    for (ShardInfo& s : index.shards) {
      const bool present = fs::exists(dir / s.raw_data.basename) || (s.zip_data && fs::exists(dir / s.zip_data->basename));
      if (!present)
        throw InputError("merge_index: part " + part + ": shard file " + (dir / (s.zip_data ? s.zip_data->basename : s.raw_data.basename)).string() +
                         " is missing (is the part's writer still running?)");
      s.raw_data.basename = part + "/" + s.raw_data.basename;
      if (s.zip_data) s.zip_data->basename = part + "/" + s.zip_data->basename;
      merged.index.shards.push_back(std::move(s));
    }
    if (first_part.empty()) first_part = part;
    merged.parts.push_back(part);
  }
  if (merged.index.shards.empty())
    throw InputError("merge_index: every part under " + root + " is empty (their writers got no samples)");
  write_index(root, merged.index);
  return merged;
}

}  // namespace tessera::data::mds
