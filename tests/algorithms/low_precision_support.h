#pragma once
// Shared by the tests of the low-precision normalisations (LayerNorm, GroupNorm): algorithms that act only under
// mixed precision, and only on a model that has their layers.
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support.h"

namespace tessera::testing {

/// Runs `surgery(model)` (a low-precision normalisation's), which must replace `replaced` layers and keep every
/// parameter: the very same tensors under the same names in the same order; the model's outputs on `batch` are
/// bitwise the same (autocast is off); a second surgery replaces nothing.
inline void expect_surgery_keeps_the_tensors_and_the_outputs(Model& model, const Batch& batch,
                                                              const std::function<int64_t(Model&)>& surgery,
                                                              int64_t replaced) {
  const at::Tensor before = model.forward(batch);
  std::vector<at::Tensor> tensors;
  std::vector<std::string> keys;
  for (const auto& p : model.named_parameters()) keys.push_back(p.key()), tensors.push_back(p.value());
  EXPECT_EQ(surgery(model), replaced);
  size_t i = 0;
  for (const auto& p : model.named_parameters()) {
    ASSERT_LT(i, keys.size());
    EXPECT_EQ(p.key(), keys[i]);
    EXPECT_TRUE(p.value().is_same(tensors[i++]));
  }
  EXPECT_EQ(i, keys.size());
  EXPECT_TRUE(at::equal(model.forward(batch), before));
  EXPECT_EQ(surgery(model), 0);
}

/// `with_it()` (components holding the algorithm) trains 2 batches under amp_bf16 to a finite loss and is refused under
/// fp32 ("without mixed precision it changes nothing"); tiny_components() plus `make()` (a model without the layers)
/// is refused under amp_bf16 with a message containing `no_layers`.
inline void expect_trains_under_amp_only(const std::function<Components()>& with_it,
                                         const std::function<std::shared_ptr<Algorithm>()>& make,
                                         const std::string& no_layers) {
  Trainer trainer(TrainerOptions().precision("amp_bf16").max_duration(Time::parse("2ba")).threads(1), with_it());
  trainer.fit();
  EXPECT_TRUE(std::isfinite(trainer.state().loss.item<double>()));
  const std::string fp32 = input_error_of([&] { Trainer t(TrainerOptions().threads(1), with_it()); });
  EXPECT_NE(fp32.find("without mixed precision it changes nothing"), std::string::npos) << fp32;
  const std::string refused = input_error_of([&] {
    Components c = tiny_components();
    c.algorithms.push_back(make());
    Trainer t(TrainerOptions().precision("amp_bf16").threads(1), std::move(c));
  });
  EXPECT_NE(refused.find(no_layers), std::string::npos) << refused;
}

}  // namespace tessera::testing
