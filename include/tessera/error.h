#pragma once
/// Errors Tessera reports to users. Every message says what was wrong, where, and what was expected.
#include <stdexcept>
#include <string>

namespace tessera {

/// A failure while running (I/O, numerical trouble, a broken invariant). `tessera-run` exits 1.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// Bad input from a user: a recipe, an option value, a missing file, an impossible combination of
/// algorithms. Raised before training starts whenever possible. `tessera-run` exits 2.
class InputError : public Error {
 public:
  explicit InputError(const std::string& message) : Error(message) {}
};

}  // namespace tessera
