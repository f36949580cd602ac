#include <tessera/distributed/launcher.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include <fmt/format.h>

#include <tessera/error.h>

namespace tessera::dist {
namespace {

std::atomic<int> forwarded_signal{0};
extern "C" void remember_signal(int sig) { forwarded_signal = sig; }

struct Rank {
  pid_t pid = -1;
  int out = -1, err = -1;             ///< read ends of its stdout and stderr
  std::string out_partial, err_partial;  ///< text after the last newline
  bool running = true;
  int exit_code = 0;
};

/// Writes the complete lines of `buffer` with the rank prefix; keeps the rest.
void flush_lines(std::string& buffer, int rank, FILE* to, bool all) {
  size_t start = 0;
  for (size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::fprintf(to, "[rank %d] %.*s\n", rank, static_cast<int>(nl - start), buffer.data() + start);
  }
  buffer.erase(0, start);
  if (all && !buffer.empty()) {
    std::fprintf(to, "[rank %d] %s\n", rank, buffer.c_str());
    buffer.clear();
  }
  std::fflush(to);
}

/// Reads what is available on `fd` into `buffer`; closes it at end of file.
void drain(int& fd, std::string& buffer, int rank, FILE* to) {
  char chunk[4096];
  const ssize_t n = ::read(fd, chunk, sizeof chunk);
  if (n > 0) {
    buffer.append(chunk, static_cast<size_t>(n));
    flush_lines(buffer, rank, to, false);
  } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
    ::close(fd);
    fd = -1;
    flush_lines(buffer, rank, to, true);
  }
}

[[noreturn]] void exec_rank(int rank, int nproc, int port, const std::string& program,
                            const std::vector<std::string>& args, int out, int err, pid_t launcher) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // the launcher died: so do we
  if (::getppid() != launcher) ::_exit(137);
  ::dup2(out, STDOUT_FILENO);
  ::dup2(err, STDERR_FILENO);
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
  ::setenv("RANK", std::to_string(rank).c_str(), 1);
  ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
  ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
  ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
  ::setenv("OMP_NUM_THREADS", "1", 0);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(program.c_str(), argv.data());
  std::fprintf(stderr, "tessera-run: cannot start %s: %s\n", program.c_str(), std::strerror(errno));
  ::_exit(127);
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

std::string describe_rank_failure(int rank, int nproc, int exit_code, int signal) {
  if (signal == 0) {
    return fmt::format("rank {0} of {1} failed with exit code {2} (its error is above, prefixed [rank {0}])", rank,
                       nproc, exit_code);
  }
  std::string meaning;
  switch (signal) {
    case SIGKILL:
      meaning = "killed from outside the run, or by the kernel's out-of-memory killer (dmesg names it)";
      break;
    case SIGABRT:
      meaning = "aborted by an error it could not report (a C++ exception outside the training loop, a failed check "
                "in a library; under NCCL, its watchdog aborts a rank whose collective did not finish within "
                "distributed.timeout)";
      break;
    case SIGSEGV:
    case SIGBUS:
    case SIGILL:
    case SIGFPE:
      meaning = "crashed in native code";
      break;
    default:
      meaning = "a signal it did not handle";
  }
  const char* name = sigabbrev_np(signal);
  return fmt::format("rank {0} of {1} was ended by signal {2} (SIG{3}), exit code {4}: {5}; its last output is "
                     "above, prefixed [rank {0}]",
                     rank, nproc, signal, name != nullptr ? name : "?", exit_code, meaning);
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(std::string("launcher: cannot open a socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    throw Error("launcher: cannot find a free port on 127.0.0.1: " + why);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

LaunchResult launch_local(int nproc, const std::string& program, const std::vector<std::string>& args,
                          double grace_seconds) {
  if (nproc < 1) throw InputError("--nproc: expected a number of ranks >= 1, got " + std::to_string(nproc));
  int port = 0;
  if (const char* given = std::getenv("MASTER_PORT"); given != nullptr && *given != '\0') {
    port = std::atoi(given);
  } else {
    port = free_port();
  }
  struct sigaction action {}, old_int{}, old_term{};
  action.sa_handler = remember_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, &old_int);
  ::sigaction(SIGTERM, &action, &old_term);
  forwarded_signal = 0;

  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t self = ::getpid();
  std::vector<Rank> ranks(static_cast<size_t>(nproc));
  for (int r = 0; r < nproc; ++r) {
    int out[2], err[2];
    if (::pipe(out) != 0 || ::pipe(err) != 0) throw Error(std::string("launcher: pipe: ") + std::strerror(errno));
    const pid_t pid = ::fork();
    if (pid < 0) throw Error(std::string("launcher: fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::close(out[0]);
      ::close(err[0]);
      for (int k = 0; k < r; ++k) {  // the other ranks' pipes are not this one's business
        if (ranks[k].out >= 0) ::close(ranks[k].out);
        if (ranks[k].err >= 0) ::close(ranks[k].err);
      }
      exec_rank(r, nproc, port, program, args, out[1], err[1], self);
    }
    ::close(out[1]);
    ::close(err[1]);
    ranks[r].pid = pid;
    ranks[r].out = out[0];
    ranks[r].err = err[0];
  }

  LaunchResult result;
  using Clock = std::chrono::steady_clock;
  Clock::time_point stop_sent{};
  bool stopping = false, killed = false, first_by_signal = false;
  auto signal_all = [&](int sig) {
    for (auto& rk : ranks) {
      if (rk.running) ::kill(rk.pid, sig);
    }
  };
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<std::pair<int, bool>> owner;  // (rank, is_err)
    for (int r = 0; r < nproc; ++r) {
      if (ranks[r].out >= 0) fds.push_back({ranks[r].out, POLLIN, 0}), owner.emplace_back(r, false);
      if (ranks[r].err >= 0) fds.push_back({ranks[r].err, POLLIN, 0}), owner.emplace_back(r, true);
    }
    if (fds.empty()) {
      ::usleep(20 * 1000);
    } else {
      ::poll(fds.data(), fds.size(), 20);
    }
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      Rank& rk = ranks[owner[i].first];
      if (owner[i].second) {
        drain(rk.err, rk.err_partial, owner[i].first, stderr);
      } else {
        drain(rk.out, rk.out_partial, owner[i].first, stdout);
      }
    }
    if (const int sig = forwarded_signal.exchange(0); sig != 0) signal_all(sig);
    bool any_running = false;
    for (int r = 0; r < nproc; ++r) {
      Rank& rk = ranks[r];
      if (!rk.running) continue;
      int status = 0;
      const pid_t done = ::waitpid(rk.pid, &status, WNOHANG);
      if (done == rk.pid) {
        rk.running = false;
        rk.exit_code = exit_code_of(status);
        // The first failure is the cause. Ranks found dead in the same sweep: one that a signal ended (killed,
        // crashed) is the likelier cause than one whose collective failed because of it (exit code 1).
        const bool by_signal = WIFSIGNALED(status);
        if (rk.exit_code != 0 && (result.failed_rank < 0 || (!stopping && by_signal && !first_by_signal))) {
          result.failed_rank = r;
          result.exit_code = rk.exit_code;
          result.signal = by_signal ? WTERMSIG(status) : 0;
          first_by_signal = by_signal;
        }
      } else {
        any_running = true;
      }
    }
    if (result.failed_rank >= 0 && !stopping && any_running) {
      std::fprintf(stderr, "tessera-run: rank %d failed (exit code %d); stopping the other ranks\n", result.failed_rank,
                   result.exit_code);
      std::fflush(stderr);
      signal_all(SIGTERM);
      stopping = true;
      stop_sent = Clock::now();
    }
    if (stopping && !killed && std::chrono::duration<double>(Clock::now() - stop_sent).count() > grace_seconds) {
      signal_all(SIGKILL);
      killed = true;
    }
    bool pipes_open = false;
    for (const auto& rk : ranks) pipes_open = pipes_open || rk.out >= 0 || rk.err >= 0;
    if (!any_running && !pipes_open) break;
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  if (result.failed_rank >= 0) {
    std::fprintf(stderr, "tessera-run: %s\n",
                 describe_rank_failure(result.failed_rank, nproc, result.exit_code, result.signal).c_str());
  }
  return result;
}

}  // namespace tessera::dist
