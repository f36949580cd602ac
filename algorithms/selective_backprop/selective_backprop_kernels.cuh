#pragma once
// Launchers of the selective-backprop kernels (plain CUDA C++, no ATen; selective_backprop_kernels.cu).
#include <cstdint>

#include <cuda_runtime_api.h>

namespace tessera::algorithms::cuda {

/// The Efraimidis–Spirakis keys of the rank-weighted draw: for the example i at rank r (order[r] = i, ascending
/// loss), keys[i] = log(u_i) / w_r with w_r = ((r + 0.5)/n)^exponent / weight_sum and u_i the i-th uniform of the
/// tessera::Rng stream at (key, counter): the same numbers, in the same order, as the CPU path draws.
cudaError_t launch_selection_keys(const int64_t* order, int64_t n, double exponent, double weight_sum, uint64_t key,
                                  uint64_t counter, double* keys, cudaStream_t stream);

/// One tensor of a row gather: `rows` rows of `row_bytes` bytes, dense.
struct RowGather {
  const void* src;
  void* dst;
  int64_t rows;
  int64_t row_bytes;
};

/// dst[j] = src[index[j]] for j < kept, for every tensor, in one launch per 32 tensors (a block per (row,
/// tensor), 16-byte copies where the alignment allows). An index outside [0, rows) of a tensor stops the kernel with
/// a device-side assertion (the launch fails; the error surfaces at the next synchronising call), like index_select.
cudaError_t launch_gather_rows(const RowGather* tensors, int count, const int64_t* index, int64_t kept,
                               cudaStream_t stream);

}  // namespace tessera::algorithms::cuda
