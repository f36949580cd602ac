// A small text file for tests that train language models on text (the `text` dataset's `path`).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace tessera::testing {

/// A text file of 4 KB (a pattern of lowercase words) under the temp folder, written once per test binary.
inline const std::string& small_text_file() {
  static const std::string path = [] {
    const auto p =
        std::filesystem::temp_directory_path() / ("tessera_small_text_" + std::to_string(::getpid()) + ".txt");
    std::ofstream out(p);
    for (int i = 0; out.tellp() < 4096; ++i) out << "the quick brown fox " << (i % 7 == 0 ? "jumps\n" : "runs ");
    return p.string();
  }();
  return path;
}

}  // namespace tessera::testing
