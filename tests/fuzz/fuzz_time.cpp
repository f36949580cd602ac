// Fuzz target: Time::parse ("10ep", "0.3dur", "3e4tok", ...) and the arithmetic and printing of what it accepts.
// Input: up to two texts separated by a NUL byte. Contract: tessera::Error or a Time whose str() parses back to it.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <tessera/error.h>
#include <tessera/time.h>

using tessera::Time;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view first = input.substr(0, nul);
  const std::string_view second = nul == std::string_view::npos ? std::string_view("1ba") : input.substr(nul + 1);
  try {
    const Time a = Time::parse(first);
    // What parses prints back to a text that parses to the same time.
    if (!(Time::parse(a.str()) == a)) std::abort();
    const Time b = Time::parse(second);
    // Arithmetic between any two parsed times: a result or an Error (different units, negative results).
    auto attempt = [](auto&& f) {
      try {
        f();
      } catch (const tessera::Error&) {
      }
    };
    attempt([&] { (void)(a + b).str(); });
    attempt([&] { (void)(a - b).str(); });
    attempt([&] { (void)(a % b).str(); });
    attempt([&] { (void)(a / b).str(); });
    attempt([&] { (void)(a * b.as_double()).str(); });
    attempt([&] { (void)(a / b.as_double()).str(); });
    attempt([&] { (void)(a < b); });
    attempt([&] { (void)(a <= b); });
  } catch (const tessera::Error&) {
  }
  return 0;
}
