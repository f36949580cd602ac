#pragma once
// Shared by the tests of the low-precision normalisations (LayerNorm, GroupNorm): algorithms that act only under
// mixed precision, and only on a model that has their layers.
#include <cmath>
#include <functional>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "support.h"

namespace tessera::testing {

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
