// choose_blas_kernels(): OpenBLAS's own kernels for the processor it runs on, when its detection fell back to
// generic ones (see the declaration in include/tessera/trainer.h).
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include <tessera/trainer.h>

namespace tessera {
namespace {

// OpenBLAS's exported C API (DYNAMIC_ARCH builds): the kernel set in use, and the two calls that pick it
// (gotoblas_dynamic_init reads OPENBLAS_CORETYPE, else detects the processor).
using CoreNameFn = char* (*)();
using InitFn = void (*)();

/// How capable an OpenBLAS kernel set is on x86-64: 0 = generic SSE2/SSE3 (what OpenBLAS falls back to for a
/// processor model it does not know), 1 = SSE4 era, 2 = AVX, 3 = AVX2 + FMA, 4 = AVX-512.
int kernel_level(const std::string& core) {
  static const std::pair<const char*, int> levels[] = {
      {"prescott", 0}, {"core2", 0}, {"penryn", 0}, {"dunnington", 0}, {"atom", 0}, {"barcelona", 0},
      {"nehalem", 1},  {"nano", 1},  {"sandybridge", 2}, {"bulldozer", 2}, {"piledriver", 2},
      {"steamroller", 2}, {"excavator", 2}, {"haswell", 3}, {"zen", 3}, {"skylakex", 4},
      {"cooperlake", 4}, {"sapphirerapids", 4}};
  std::string lower;
  for (char c : core) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  for (const auto& [name, level] : levels) {
    if (lower == name) return level;
  }
  return -1;  // unknown name (another architecture, a newer OpenBLAS): leave its choice alone
}

/// The best kernel set this processor (and the OS, which must save its registers) can run, and its level.
std::pair<const char*, int> best_kernels() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512cd")) {
    return {"SkylakeX", 4};
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {"Haswell", 3};
#endif
  return {nullptr, -1};
}

std::string choose() {
  const auto corename = reinterpret_cast<CoreNameFn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const auto init = reinterpret_cast<InitFn>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  const auto quit = reinterpret_cast<InitFn>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  if (corename == nullptr || init == nullptr || quit == nullptr) return "";  // no OpenBLAS with DYNAMIC_ARCH
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return "";                 // the user chose
  const std::string fallback = corename();
  const int level = kernel_level(fallback);
  const auto [best, best_level] = best_kernels();
  // Only a fallback to generic kernels is overruled: a level OpenBLAS chose on purpose (say Zen's AVX2 kernels
  // on a processor that has AVX-512) stays.
  if (best == nullptr || level < 0 || level > 1 || best_level <= level) return "";
  // gotoblas_dynamic_init reads OPENBLAS_CORETYPE; it is unset again afterwards, so that child processes detect
  // for themselves (and a Trainer there chooses the same).
  ::setenv("OPENBLAS_CORETYPE", best, 1);
  quit();
  init();
  ::unsetenv("OPENBLAS_CORETYPE");
  const std::string now = corename();
  if (kernel_level(now) != best_level) {  // this OpenBLAS lacks that kernel set: back to its own choice
    quit();
    init();
    return "";
  }
  return fmt::format(
      "OpenBLAS chose its generic {} kernels for this processor (a model it does not know); Tessera switched it to "
      "its {} kernels, which the processor supports (set OPENBLAS_CORETYPE to choose yourself)",
      fallback, now);
}

}  // namespace

std::string choose_blas_kernels() {
  static std::once_flag once;
  static std::string note;
  std::call_once(once, [] { note = choose(); });
  return note;
}

}  // namespace tessera
