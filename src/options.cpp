#include <tessera/options.h>

#include <cmath>
#include <sstream>

namespace tessera {
namespace {

std::string number(double x) {
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  std::ostringstream out;
  out << x;
  return out.str();
}

}  // namespace

bool Range::contains(double x) const {
  if (!std::isfinite(x)) return false;  // every option takes finite numbers (one of any() too)
  const bool lo_ok = lo_closed ? x >= lo : x > lo;
  const bool hi_ok = hi_closed ? x <= hi : x < hi;
  return lo_ok && hi_ok;
}

std::string Range::describe() const {
  const bool no_lo = std::isinf(lo) && lo < 0;
  const bool no_hi = std::isinf(hi) && hi > 0;
  if (no_lo && no_hi) return "that is finite";
  if (no_hi) return std::string(lo_closed ? ">= " : "> ") + number(lo);
  if (no_lo) return std::string(hi_closed ? "<= " : "< ") + number(hi);
  return std::string(lo_closed ? "[" : "(") + number(lo) + ", " + number(hi) + (hi_closed ? "]" : ")");
}

bool Choices::contains(const std::string& s) const {
  for (const auto& v : values) {
    if (v == s) return true;
  }
  return false;
}

std::string Choices::describe() const {
  std::string out = "one of: ";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + values[i];
  return out;
}

void check_option(const std::string& where, const char* name, double value, const Range& range) {
  if (!range.contains(value)) {
    throw InputError(where + "." + name + ": " + number(value) + " is out of range; expected a number " +
                     range.describe());
  }
}

void check_option(const std::string& where, const char* name, const std::string& value, const Choices& choices) {
  if (!choices.contains(value)) {
    throw InputError(where + "." + name + ": \"" + value + "\" is not allowed; expected " + choices.describe());
  }
}

}  // namespace tessera
