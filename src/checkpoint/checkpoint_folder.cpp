// A folder of checkpoints: names, newest first, the newest valid one, pruning; and the stop signals.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <limits>
#include <regex>
#include <tuple>

#include <tessera/checkpoint.h>
#include <tessera/safetensors.h>
#include <tessera/trainer.h>

#include "checkpoint/checkpoint_file.h"
#include "checkpoint/checkpoint_folder.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

/// (batch, epoch) parsed from "ep<E>-ba<B>.ckpt"; nullopt for other names.
std::optional<std::pair<int64_t, int64_t>> parse_name(const std::string& name) {
  static const std::regex pattern(R"(ep(\d{1,18})-ba(\d{1,18})\.ckpt)");
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  return std::make_pair(std::stoll(m[2].str()), std::stoll(m[1].str()));
}

std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  int expected = 0;
  if (!g_stop_signal.compare_exchange_strong(expected, sig)) {
    // Second signal: leave at once. Checkpoints are renamed into place only when complete, so the newest
    // one stays intact; a temporary file may stay behind and is removed by the next run's pruning.
    ::_exit(128 + sig);
  }
}

/// Removes the temporary files (of checkpoints, of `latest`) that writes killed midway left in `folder`; no
/// write of this process is in flight when it runs (one thread saves, and prunes after its write).
void remove_temporary_files(const std::string& folder) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    const size_t at = name.rfind(".tmp-");
    const bool pid = at != std::string::npos && at + 5 < name.size() &&
                     name.find_first_not_of("0123456789", at + 5) == std::string::npos;
    const std::string stem = pid ? name.substr(0, at) : "";
    if (pid && (stem == "latest" || parse_name(stem))) fs::remove(entry.path(), ec);
  }
}

}  // namespace

std::vector<std::string> checkpoint_files(const std::string& folder) {
  std::vector<std::tuple<int64_t, int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return {};
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    if (auto key = parse_name(name)) found.emplace_back(key->first, key->second, entry.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a > b; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::get<2>(f));
  return out;
}

CheckpointInfo inspect_checkpoint(const std::string& path) {
  return checkpoint::describe(checkpoint::read_file(path), path);
}

std::string newest_valid_checkpoint(const std::string& folder, std::vector<std::string>* rejected) {
  const auto found = checkpoint::read_newest_valid(folder, rejected);
  return found ? found->first : std::string();
}

CheckpointOptions resolve_against_run_dir(CheckpointOptions options, const std::string& run_dir) {
  if (!options.folder().empty() && fs::path(options.folder()).is_relative()) {
    options.folder((fs::path(run_dir) / options.folder()).lexically_normal().string());
  }
  return options;
}

namespace checkpoint {

CheckpointInfo describe(const File& file, const std::string& path) {
  CheckpointInfo info;
  info.path = path;
  try {
    const nlohmann::json& m = file.meta;
    // Numbers are checked before they are converted: nlohmann converts 1e300 to an integer type unchecked.
    const auto expect = [&](const nlohmann::json& v, const std::string& what, bool integral) {
      if (integral ? !v.is_number_integer() : !v.is_number())
        throw CheckpointError(fmt::format("checkpoint '{}': the metadata is malformed: {} is {}, expected {}", path,
                                          what, v.dump(), integral ? "a whole number" : "a number"));
    };
    const nlohmann::json& ts = m.at("timestamp");
    for (const char* key : {"iteration", "epoch", "batch", "sample", "token", "epoch_in_iteration", "batch_in_epoch",
                            "sample_in_epoch", "token_in_epoch"})
      expect(ts.at(key), std::string("timestamp.") + key, true);
    for (const char* key : {"total_wct", "epoch_wct", "batch_wct"})
      expect(ts.at(key), std::string("timestamp.") + key, false);
    expect(m.at("seed"), "seed", true);
    const nlohmann::json& world_size = m.at("world_size");
    if (!world_size.is_number_unsigned() || world_size.get<uint64_t>() < 1 ||
        world_size.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int>::max()))
      throw CheckpointError(fmt::format("checkpoint '{}': the metadata is malformed: world_size is {}, expected a "
                                        "whole number >= 1",
                                        path, world_size.dump()));
    info.timestamp = ts.get<Timestamp>();
    info.tessera_version = m.at("tessera_version").get<std::string>();
    info.torch_version = m.at("torch_version").get<std::string>();
    info.recipe = m.at("recipe").get<std::string>();
    info.seed = m.at("seed").get<int64_t>();
    info.world_size = m.at("world_size").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("checkpoint '{}': the metadata is malformed: {}", path, e.what()));
  }
  return info;
}

std::optional<std::pair<std::string, File>> read_newest_valid(const std::string& folder,
                                                              std::vector<std::string>* rejected) {
  const std::vector<std::string> files = checkpoint_files(folder);
  std::vector<std::string> problems;
  std::optional<std::pair<std::string, File>> found;
  for (const auto& path : files) {
    try {
      File file = read_file(path);
      describe(file, path);
      found.emplace(path, std::move(file));
      break;
    } catch (const CheckpointError& e) {
      problems.push_back(e.what());
    }
  }
  if (rejected) rejected->insert(rejected->end(), problems.begin(), problems.end());
  if (!found && !files.empty()) {
    throw CheckpointError(fmt::format("no valid checkpoint in '{}': {} file(s), all invalid; newest: {}", folder,
                                      files.size(), problems.front()));
  }
  return found;
}

std::pair<std::string, File> read_file_or_newest(const std::string& path, const std::string& option,
                                                 std::vector<std::string>* rejected) {
  std::error_code ec;
  if (fs::path(path).extension() == ".safetensors") {  // weights alone (safetensors.h), as model/<name>
    Safetensors weights = load_safetensors(path);
    File file;
    file.meta["safetensors"] = weights.metadata;
    for (auto& [name, t] : weights.tensors) file.tensors.emplace("model/" + name, std::move(t));
    return {path, std::move(file)};
  }
  if (!fs::is_directory(path, ec)) return {path, read_file(path)};
  auto newest = read_newest_valid(path, rejected);
  if (!newest) {
    throw CheckpointError(fmt::format("{}: folder '{}' holds no checkpoint; give a checkpoint file or the checkpoint "
                                      "folder of a run",
                                      option, path));
  }
  return std::move(*newest);
}

std::string file_name(const Timestamp& ts) { return fmt::format("ep{}-ba{}.ckpt", ts.epoch, ts.batch); }

std::vector<std::string> prune(const std::string& folder, int64_t keep, const std::string& newest) {
  std::vector<std::string> removed;
  int64_t kept = 0;
  std::error_code ec;
  for (const auto& path : checkpoint_files(folder)) {
    if (path == newest || kept < keep - 1) {
      kept += path == newest ? 0 : 1;
      continue;
    }
    if (fs::remove(path, ec)) removed.push_back(path);
  }
  remove_temporary_files(folder);
  return removed;
}

std::string move_earlier_run_aside(const std::string& folder) {
  std::error_code ec;
  remove_temporary_files(folder);
  std::vector<fs::path> earlier;
  for (const auto& path : checkpoint_files(folder)) earlier.emplace_back(path);
  if (earlier.empty()) return "";
  if (fs::exists(fs::path(folder) / "latest", ec)) earlier.push_back(fs::path(folder) / "latest");
  fs::path aside;
  for (int n = 1; aside.empty() || fs::exists(aside, ec); ++n)
    aside = fs::path(folder) / fmt::format("earlier-{}", n);
  fs::create_directory(aside, ec);
  if (ec)
    throw Error(fmt::format("checkpoint: cannot create '{}' to keep an earlier run's checkpoints: {}",
                            aside.string(), ec.message()));
  for (const auto& path : earlier) {
    fs::rename(path, aside / path.filename(), ec);
    if (ec)
      throw Error(fmt::format("checkpoint: cannot move '{}' into '{}': {}", path.string(), aside.string(),
                              ec.message()));
  }
  return aside.string();
}

}  // namespace checkpoint

namespace {
/// Installs on_stop_signal for `sig`, storing the handler found in `previous` when given.
void install_stop_handler(int sig, struct sigaction* previous) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (::sigaction(sig, &sa, previous) != 0) {
    throw Error(std::string("cannot install a handler for signal ") + std::to_string(sig) + ": " + std::strerror(errno));
  }
}
}  // namespace

void install_stop_signal_handlers() {
  install_stop_handler(SIGTERM, nullptr);
  install_stop_handler(SIGINT, nullptr);
}

int stop_signal() noexcept { return g_stop_signal.load(); }
void clear_stop_signal() noexcept { g_stop_signal.store(0); }

struct StopSignalScope::Saved {
  int sig;
  struct sigaction previous;
};

StopSignalScope::StopSignalScope(const std::vector<int>& signals) {
  clear_stop_signal();
  for (int sig : signals) {
    auto saved = std::make_unique<Saved>();
    saved->sig = sig;
    install_stop_handler(sig, &saved->previous);
    saved_.push_back(std::move(saved));
  }
}

StopSignalScope::~StopSignalScope() {
  for (const auto& saved : saved_) ::sigaction(saved->sig, &saved->previous, nullptr);
  clear_stop_signal();
}

}  // namespace tessera
