// choose_blas_kernels(): OpenBLAS runs kernels the processor supports, not its generic fallback, and the
// products stay right.
#include <dlfcn.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include <ATen/ATen.h>

#include <tessera/trainer.h>

namespace tessera {
namespace {

using CoreNameFn = char* (*)();

TEST(BlasKernels, OpenBlasRunsKernelsTheProcessorSupportsAndProductsStayRight) {
  const auto corename = reinterpret_cast<CoreNameFn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (corename == nullptr) GTEST_SKIP() << "LibTorch here does not use OpenBLAS (PyPI's uses MKL)";
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) GTEST_SKIP() << "OPENBLAS_CORETYPE is set: the user's choice";
  const at::Tensor a = at::randn({67, 129}, at::kDouble), b = at::randn({129, 33}, at::kDouble);
  // In double, before any switch: OpenBLAS's dgemm changes kernels too, but double's error is far below the
  // float tolerances below, so this is the reference whichever kernels computed it.
  const at::Tensor expected = at::matmul(a, b);

  const std::string note = choose_blas_kernels();
  EXPECT_EQ(choose_blas_kernels(), note) << "once per process";
  const std::string core = corename();
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512cd");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2 || avx512) {
    for (const char* generic : {"Prescott", "Core2", "Penryn", "Dunnington", "Atom", "Nehalem"}) {
      EXPECT_NE(core, generic) << "OpenBLAS still runs generic kernels on a processor with AVX2; note: " << note;
    }
  }
  if (!note.empty()) EXPECT_THAT(note, ::testing::HasSubstr(core));

  // Products in float through the (possibly switched) kernels against double.
  const at::Tensor got = at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(at::kDouble);
  EXPECT_TRUE(at::allclose(got, expected, 1e-4, 1e-4)) << (got - expected).abs().max().item<double>();
  const at::Tensor x = at::randn({128, 784}), w = at::randn({256, 784}), bias = at::randn({256});
  const at::Tensor y = at::linear(x, w, bias).to(at::kDouble);
  const at::Tensor y_ref = at::linear(x.to(at::kDouble), w.to(at::kDouble), bias.to(at::kDouble));
  EXPECT_TRUE(at::allclose(y, y_ref, 1e-3, 1e-3)) << (y - y_ref).abs().max().item<double>();
}

}  // namespace
}  // namespace tessera
