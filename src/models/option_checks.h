#pragma once
// Checks shared by the registry's models (private to the library).
#include <cstdint>

#include <fmt/format.h>

#include <tessera/error.h>

namespace tessera {

/// An InputError when an option the registry fills in from the data (in_channels, num_classes, vocab_size, ...) is
/// still 0 when the model is built directly.
inline void require_positive(int64_t value, const char* name) {
  if (value <= 0) {
    throw InputError(fmt::format(
        "model.{}: {} must be > 0 when the model is constructed (a recipe fills it in from the data; set it "
        "when building the model directly)",
        name, value));
  }
}

}  // namespace tessera
