#pragma once
/// The state plugins keep in checkpoints (algorithms, callbacks, schedules that follow a metric).
#include <map>
#include <string>

#include <ATen/Tensor.h>

namespace tessera {

/// Named tensors (scalars as 0-d tensors).
using StateDict = std::map<std::string, at::Tensor>;

}  // namespace tessera
