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
///
/// An error about one part of a run (an algorithm, a callback, a schedule, the optimizer, a data source, the
/// model) may name it as its subject; the message as it was before context was put in front of it on the way up
/// ("callback \"x\" at init: ") is kept as its detail. Recipe runs use both to point at the line that built that
/// part (registry.h, make_trainer).
class InputError : public Error {
 public:
  explicit InputError(const std::string& message, const void* subject = nullptr)
      : Error(message), subject_(subject), detail_(message) {}

  /// The part of the run the error is about, or null.
  const void* subject() const noexcept { return subject_; }
  /// The message without the context added since the subject was set (the whole message when there is none).
  const std::string& detail() const noexcept { return detail_; }

  /// The same error with `context + ": "` in front of its message; `subject` becomes its subject when it has
  /// none yet (the detail is then the message before this context).
  InputError with_context(const std::string& context, const void* subject = nullptr) const {
    InputError out(context + ": " + what());
    out.subject_ = subject_ != nullptr ? subject_ : subject;
    out.detail_ = subject_ != nullptr ? detail_ : std::string(what());
    return out;
  }

 private:
  const void* subject_;
  std::string detail_;
};

}  // namespace tessera
