#pragma once
// Plan-time checks shared by the algorithms (private to the library).
#include <string>

#include <c10/util/Exception.h>

#include <tessera/batch.h>
#include <tessera/data/batch_source.h>
#include <tessera/error.h>
#include <tessera/state.h>

namespace tessera {

/// The training data's example batch, when its input is images [N, C, H, W]. Otherwise an InputError that starts
/// with what the algorithm does (`does`, e.g. "cutout zeroes square holes of"): `<does> the batch part "input"; the
/// training batches have none (<data>)`, or `<does> images and needs image inputs [C, H, W] per example; the training
/// data has inputs of shape <shape> per example`.
inline Batch example_image_batch(const State& state, const std::string& does) {
  Batch example = state.train_dataloader->example_batch();
  if (!example.has(Batch::kInput)) {
    throw InputError(does + " the batch part \"input\"; the training batches have none (" +
                     state.train_dataloader->describe() + ")");
  }
  const at::Tensor& x = example.input();
  if (x.dim() != 4) {
    throw InputError(does + " images and needs image inputs [C, H, W] per example; the training data has inputs of "
                     "shape " + c10::str(x.sizes().slice(1)) + " per example");
  }
  return example;
}

}  // namespace tessera
