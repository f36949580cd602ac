#include <tessera/distributed/environment.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <tessera/error.h>

namespace tessera::dist {
namespace {

using Getter = std::function<std::optional<std::string>(const std::string&)>;

std::optional<std::string> from_process(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

/// A whole number in [lo, hi] from variable `name`; InputError otherwise.
int parse_int(const std::string& name, const std::string& value, long lo, long hi, const std::string& expected) {
  size_t used = 0;
  long v = 0;
  try {
    v = std::stol(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || v < lo || v > hi) {
    throw InputError("distributed environment: " + name + "=\"" + value + "\" is not valid; expected " + expected);
  }
  return static_cast<int>(v);
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  if (nodelist.empty()) throw InputError("distributed environment: the SLURM node list is empty");
  // The first entry ends at the first comma outside brackets.
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    const char c = nodelist[end];
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0) break;
    if (c == ',' && depth == 0) break;
  }
  const std::string entry = nodelist.substr(0, end);
  const size_t open = entry.find('[');
  const size_t close = entry.find(']');
  if (depth != 0 || (open == std::string::npos) != (close == std::string::npos) ||
      (open != std::string::npos && close < open) || entry.empty() || open == 0) {
    throw InputError("distributed environment: cannot read the SLURM node list \"" + nodelist +
                     "\"; expected host names or ranges such as node[01-04,07],gpu7 (or set MASTER_ADDR)");
  }
  if (open == std::string::npos) return entry;
  // "prefix[01-04,07]suffix": the first range's first value, zero padding kept.
  std::string inside = entry.substr(open + 1, close - open - 1);
  inside = inside.substr(0, inside.find(','));
  inside = inside.substr(0, inside.find('-'));
  if (inside.empty()) {
    throw InputError("distributed environment: the SLURM node list \"" + nodelist + "\" has an empty range");
  }
  return entry.substr(0, open) + inside + entry.substr(close + 1);
}

Environment read_environment(const Getter& get_in) {
  const Getter get = get_in ? get_in : Getter(from_process);
  Environment env;
  const auto rank = get("RANK"), world = get("WORLD_SIZE");
  const auto slurm_rank = get("SLURM_PROCID"), slurm_tasks = get("SLURM_NTASKS");
  const long kMaxRanks = 1 << 20;
  if (rank || world) {
    if (!rank || !world) {
      throw InputError(std::string("distributed environment: ") + (rank ? "RANK" : "WORLD_SIZE") + " is set but " +
                       (rank ? "WORLD_SIZE" : "RANK") +
                       " is not; a launcher (torchrun, tessera-run --nproc) sets both, or neither for one process");
    }
    env.launcher = "torchrun";
    env.world_size = parse_int("WORLD_SIZE", *world, 1, kMaxRanks, "a number of processes >= 1");
    env.rank = parse_int("RANK", *rank, 0, kMaxRanks, "a rank >= 0");
    const auto local = get("LOCAL_RANK");
    env.local_rank = local ? parse_int("LOCAL_RANK", *local, 0, kMaxRanks, "a local rank >= 0") : env.rank;
    const auto local_world = get("LOCAL_WORLD_SIZE");
    env.local_world_size =
        local_world ? parse_int("LOCAL_WORLD_SIZE", *local_world, 1, kMaxRanks, "a number >= 1") : env.world_size;
    const auto use_agent = get("TORCHELASTIC_USE_AGENT_STORE");
    env.agent_store = use_agent && *use_agent == "True";
    const auto restarts = get("TORCHELASTIC_RESTART_COUNT");
    env.restart_count = restarts ? parse_int("TORCHELASTIC_RESTART_COUNT", *restarts, 0, kMaxRanks, "a count >= 0") : 0;
    if (env.world_size > 1 && !get("MASTER_ADDR")) {
      throw InputError("distributed environment: WORLD_SIZE=" + *world +
                       " but MASTER_ADDR is not set; expected the address of rank 0 (torchrun sets it)");
    }
    if (env.world_size > 1 && !get("MASTER_PORT")) {
      throw InputError("distributed environment: WORLD_SIZE=" + *world +
                       " but MASTER_PORT is not set; expected the port rank 0 listens on (torchrun sets it)");
    }
  } else if (slurm_rank && slurm_tasks) {
    env.launcher = "slurm";
    env.world_size = parse_int("SLURM_NTASKS", *slurm_tasks, 1, kMaxRanks, "a number of tasks >= 1");
    env.rank = parse_int("SLURM_PROCID", *slurm_rank, 0, kMaxRanks, "a rank >= 0");
    const auto local = get("SLURM_LOCALID");
    env.local_rank = local ? parse_int("SLURM_LOCALID", *local, 0, kMaxRanks, "a local rank >= 0") : 0;
    const auto per_node = get("SLURM_NTASKS_PER_NODE");
    env.local_world_size = per_node && per_node->find_first_not_of("0123456789") == std::string::npos
                               ? parse_int("SLURM_NTASKS_PER_NODE", *per_node, 1, kMaxRanks, "a number >= 1")
                               : 1;
    if (!get("MASTER_ADDR")) {
      auto nodes = get("SLURM_STEP_NODELIST");
      if (!nodes) nodes = get("SLURM_JOB_NODELIST");
      if (!nodes && env.world_size > 1) {
        throw InputError("distributed environment: SLURM_NTASKS=" + *slurm_tasks +
                         " but neither MASTER_ADDR nor SLURM_STEP_NODELIST/SLURM_JOB_NODELIST is set; "
                         "expected the address of rank 0");
      }
      if (nodes) env.master_addr = first_slurm_host(*nodes);
    }
  } else {
    return env;  // one process
  }
  if (const auto addr = get("MASTER_ADDR")) env.master_addr = *addr;
  if (const auto port = get("MASTER_PORT")) env.master_port = parse_int("MASTER_PORT", *port, 1, 65535, "a TCP port 1-65535");
  const std::string rank_var = env.launcher == "slurm" ? "SLURM_PROCID" : "RANK";
  const std::string world_var = env.launcher == "slurm" ? "SLURM_NTASKS" : "WORLD_SIZE";
  if (env.rank >= env.world_size) {
    throw InputError("distributed environment: " + rank_var + "=" + std::to_string(env.rank) + " but " + world_var +
                     "=" + std::to_string(env.world_size) + "; expected a rank from 0 to " +
                     std::to_string(env.world_size - 1));
  }
  if (env.local_rank >= env.local_world_size && env.launcher == "torchrun") {
    throw InputError("distributed environment: LOCAL_RANK=" + std::to_string(env.local_rank) +
                     " but LOCAL_WORLD_SIZE=" + std::to_string(env.local_world_size) +
                     "; expected a local rank from 0 to " + std::to_string(env.local_world_size - 1));
  }
  return env;
}

}  // namespace tessera::dist
