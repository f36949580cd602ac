#pragma once
// Helpers of the libFuzzer targets (tests/fuzz, docs/hardening.md): a scratch folder of the process's own for the
// readers that take paths, and writing bytes into it.
//
// The contract every target checks: whatever the input, a reader returns or throws tessera::Error (a clear
// message); any other exception escapes the target and libFuzzer reports it as a crash, like a sanitizer report.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace tessera::fuzz {

/// A folder of this process's own (in /dev/shm when there is one, else $TMPDIR or /tmp), removed at exit.
inline const std::string& scratch() {
  struct Folder {
    std::string path;
    Folder() {
      const char* tmp = std::getenv("TMPDIR");
      std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : (tmp && *tmp ? tmp : "/tmp");
      path = base + "/tessera-fuzz-XXXXXX";
      if (::mkdtemp(path.data()) == nullptr) {
        std::perror("tessera fuzz: mkdtemp");
        std::abort();
      }
    }
    ~Folder() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Folder folder;
  return folder.path;
}

/// Writes `size` bytes to `path` (replacing it); aborts on an I/O failure, which is the harness's, not the reader's.
inline void write_bytes(const std::string& path, const void* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(("tessera fuzz: writing " + path).c_str());
    std::abort();
  }
}
inline void write_bytes(const std::string& path, const std::string& bytes) {
  write_bytes(path, bytes.data(), bytes.size());
}

}  // namespace tessera::fuzz
