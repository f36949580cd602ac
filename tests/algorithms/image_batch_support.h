#pragma once
// Shared by the tests of the algorithms that change image batches (CutOut, ColOut, CutMix, RandAugment, SWA).
#include <string>
#include <utility>
#include <vector>

#include <tessera/tessera.h>

#include "support.h"

namespace tessera::testing {

/// Records the batch's input and target at after_dataloader. Where it sits in the recipe decides what it sees:
/// after_* events run in reverse recipe order, so placed last it runs before the algorithm under test, first after.
class BatchProbe : public Algorithm {
 public:
  explicit BatchProbe(std::string name) { spec_ = spec_on(std::move(name), {Event::AfterDataloader}); }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& s, Logger&) override {
    inputs.push_back(s.batch.input().clone());
    targets.push_back(s.batch.target().clone());
  }
  std::vector<at::Tensor> inputs, targets;

 private:
  AlgorithmSpec spec_;
};

/// A CNN of width 4 (seeded) on 32 synthetic 1x16x16 images of 4 classes in batches of 8, with SGD at lr 0.05.
inline Components small_cnn_components() {
  Components c;
  at::manual_seed(0);
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(4).width(4));
  c.train_dataloader = loader(
      data::make_synthetic(data::SyntheticOptions().size(32).input_shape({1, 16, 16}).num_classes(4)), 8);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.05));
  return c;
}

}  // namespace tessera::testing
