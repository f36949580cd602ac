#pragma once
// Small POSIX file helpers shared by the checkpoint writer, the MDS writer, the shard cache and the readers of the
// kernel's files (cores.cpp, the system monitor) (private).
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace tessera::posix {

/// The whole text of a small file (a /proc or /sys file, whose size stat does not tell); nullopt when it cannot be
/// opened or read.
inline std::optional<std::string> read_small_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

/// strerror(errno), for messages.
inline std::string errno_text() { return std::strerror(errno); }

/// Writes all of [data, data + size) to `fd` at its current offset, retrying short writes and EINTR. False on
/// an error, with errno set.
inline bool write_all(int fd, const void* data, size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace tessera::posix
