#include <tessera/error.h>
#include <tessera/time.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>

namespace tessera {
namespace {

constexpr const char* kExpectedForms = "expected forms: 10ep, 500ba, 2048sp, 1000tok, 0.25dur";
// 2^63 as a double: integral counts must be strictly below it to fit in int64_t.
constexpr double kInt64Limit = 9223372036854775808.0;

const char* unit_noun(TimeUnit unit) {
  switch (unit) {
    case TimeUnit::Epoch:
      return "epochs";
    case TimeUnit::Batch:
      return "batches";
    case TimeUnit::Sample:
      return "samples";
    case TimeUnit::Token:
      return "tokens";
    case TimeUnit::Duration:
      return "duration";
  }
  return "?";
}

[[noreturn]] void reject(std::string_view text, const std::string& why) {
  throw InputError("invalid time \"" + std::string(text) + "\": " + why + "; " + kExpectedForms);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool iends_with(std::string_view s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i) {
    const char c =
        static_cast<char>(std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])));
    if (c != suffix[i]) return false;
  }
  return true;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string format_double(double x) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), x);
  return std::string(buf, res.ptr);
}

void require_same_unit(const Time& a, const Time& b, const char* op) {
  if (a.unit() != b.unit()) {
    throw Error(std::string("cannot ") + op + " " + a.str() + " and " + b.str() + ": the units differ (" +
                unit_suffix(a.unit()) + " vs " + unit_suffix(b.unit()) +
                "); convert one of them first (TimeContext::to_batches)");
  }
}

// A scaled integral count, truncated toward zero; negative or out-of-range results are errors.
int64_t scaled_count(const Time& t, double scaled, const char* what) {
  if (std::isnan(scaled))
    throw Error(std::string("cannot ") + what + " " + t.str() + ": the result is not a number");
  if (scaled < 0)
    throw Error(std::string("cannot ") + what + " " + t.str() + ": the result (" + format_double(scaled) +
                ") is negative; times are >= 0");
  const double truncated = std::trunc(scaled);
  if (!(truncated < kInt64Limit))
    throw Error(std::string("cannot ") + what + " " + t.str() + ": the result (" + format_double(scaled) +
                ") is too large");
  return static_cast<int64_t>(truncated);
}

Time same_unit(const Time& like, int64_t count, double fraction) {
  return like.unit() == TimeUnit::Duration ? Time::fraction(fraction) : Time(count, like.unit());
}

}  // namespace

const char* unit_suffix(TimeUnit unit) {
  switch (unit) {
    case TimeUnit::Epoch:
      return "ep";
    case TimeUnit::Batch:
      return "ba";
    case TimeUnit::Sample:
      return "sp";
    case TimeUnit::Token:
      return "tok";
    case TimeUnit::Duration:
      return "dur";
  }
  return "?";
}

Time::Time(int64_t value, TimeUnit unit) : unit_(unit), count_(value) {
  if (unit == TimeUnit::Duration)
    throw InputError(
        "Time(" + std::to_string(value) +
        ", Duration): a duration is a fraction of max_duration; build it with Time::fraction(x)");
  if (value < 0)
    throw InputError("Time(" + std::to_string(value) + ", " + unit_noun(unit) + "): times must be >= 0");
}

Time Time::fraction(double value) {
  if (!std::isfinite(value) || value < 0)
    throw InputError("Time::fraction(" + format_double(value) + "): a duration must be a finite number >= 0");
  Time t;
  t.unit_ = TimeUnit::Duration;
  t.fraction_ = value == 0 ? 0.0 : value;  // no -0
  return t;
}

Time Time::parse(std::string_view original) {
  std::string_view text = trim(original);
  if (text.empty()) reject(original, "the text is empty");

  // Longest suffixes first, although none is a suffix of another.
  static constexpr std::pair<const char*, TimeUnit> kUnits[] = {
      {"dur", TimeUnit::Duration}, {"tok", TimeUnit::Token}, {"ep", TimeUnit::Epoch},
      {"ba", TimeUnit::Batch},     {"sp", TimeUnit::Sample},
  };
  const std::pair<const char*, TimeUnit>* found = nullptr;
  for (const auto& u : kUnits) {
    if (iends_with(text, u.first)) {
      found = &u;
      break;
    }
  }
  if (found == nullptr) {
    size_t start = text.size();
    while (start > 0 && std::isalpha(static_cast<unsigned char>(text[start - 1]))) --start;
    const std::string unit = lower(text.substr(start));
    if (unit.empty()) reject(original, "the unit is missing");
    if (unit == "sec" || unit == "iter")
      reject(original, "the unit \"" + unit + "\" is not supported (use ep, ba, sp, tok or dur)");
    reject(original, "unknown unit \"" + std::string(text.substr(start)) + "\"");
  }
  const TimeUnit unit = found->second;
  std::string_view number = trim(text.substr(0, text.size() - std::char_traits<char>::length(found->first)));
  if (number.empty()) reject(original, std::string("the number before \"") + found->first + "\" is missing");
  if (number.front() == '+') number.remove_prefix(1);

  double value = 0;
  const auto res = std::from_chars(number.data(), number.data() + number.size(), value);
  if (res.ec == std::errc::result_out_of_range) reject(original, "the number is out of range");
  if (res.ec != std::errc() || res.ptr != number.data() + number.size())
    reject(original, "\"" + std::string(number) + "\" is not a number");
  if (!std::isfinite(value)) reject(original, "the number must be finite");
  if (value < 0 || std::signbit(value))
    reject(original, std::string(unit_noun(unit)) + " must not be negative");

  if (unit == TimeUnit::Duration) return Time::fraction(value);
  if (std::floor(value) != value) reject(original, std::string(unit_noun(unit)) + " must be a whole number");
  if (!(value < kInt64Limit)) reject(original, "the number is too large");
  return Time(static_cast<int64_t>(value), unit);
}

std::string Time::str() const {
  if (unit_ == TimeUnit::Duration) return format_double(fraction_) + "dur";
  return std::to_string(count_) + unit_suffix(unit_);
}

Time Time::operator+(const Time& other) const {
  require_same_unit(*this, other, "add");
  if (unit_ == TimeUnit::Duration) return fraction(fraction_ + other.fraction_);
  int64_t sum = 0;
  if (__builtin_add_overflow(count_, other.count_, &sum))
    throw Error("cannot add " + str() + " and " + other.str() + ": overflow");
  return Time(sum, unit_);
}

Time Time::operator-(const Time& other) const {
  require_same_unit(*this, other, "subtract");
  if (other > *this)
    throw Error("cannot subtract " + other.str() + " from " + str() + ": the result would be negative");
  if (unit_ == TimeUnit::Duration) return fraction(fraction_ - other.fraction_);
  return Time(count_ - other.count_, unit_);
}

Time Time::operator%(const Time& other) const {
  require_same_unit(*this, other, "take the remainder of");
  if (other.as_double() == 0)
    throw Error("cannot take " + str() + " modulo " + other.str() + ": division by zero");
  if (unit_ == TimeUnit::Duration) return fraction(std::fmod(fraction_, other.fraction_));
  return Time(count_ % other.count_, unit_);
}

Time Time::operator*(double factor) const {
  if (!std::isfinite(factor))
    throw Error("cannot multiply " + str() + " by " + format_double(factor) + ": not finite");
  if (unit_ == TimeUnit::Duration) {
    const double r = fraction_ * factor;
    if (r < 0)
      throw Error("cannot multiply " + str() + " by " + format_double(factor) + ": the result is negative");
    return fraction(r);
  }
  return same_unit(*this, scaled_count(*this, static_cast<double>(count_) * factor, "scale"), 0.0);
}

Time Time::operator/(double divisor) const {
  if (divisor == 0 || std::isnan(divisor))
    throw Error("cannot divide " + str() + " by " + format_double(divisor));
  if (unit_ == TimeUnit::Duration) {
    const double r = fraction_ / divisor;
    if (r < 0)
      throw Error("cannot divide " + str() + " by " + format_double(divisor) + ": the result is negative");
    return fraction(r);
  }
  return same_unit(*this, scaled_count(*this, static_cast<double>(count_) / divisor, "divide"), 0.0);
}

Time Time::operator/(const Time& other) const {
  require_same_unit(*this, other, "divide");
  if (other.as_double() == 0)
    throw Error("cannot divide " + str() + " by " + other.str() + ": division by zero");
  return fraction(as_double() / other.as_double());
}

bool Time::operator==(const Time& other) const {
  require_same_unit(*this, other, "compare");
  return unit_ == TimeUnit::Duration ? fraction_ == other.fraction_ : count_ == other.count_;
}

bool Time::operator<(const Time& other) const {
  require_same_unit(*this, other, "compare");
  return unit_ == TimeUnit::Duration ? fraction_ < other.fraction_ : count_ < other.count_;
}

bool Time::operator<=(const Time& other) const {
  require_same_unit(*this, other, "compare");
  return unit_ == TimeUnit::Duration ? fraction_ <= other.fraction_ : count_ <= other.count_;
}

// ---------------------------------------------------------------------------------------------
// Timestamp

int64_t Timestamp::get(TimeUnit unit) const {
  switch (unit) {
    case TimeUnit::Epoch:
      return epoch;
    case TimeUnit::Batch:
      return batch;
    case TimeUnit::Sample:
      return sample;
    case TimeUnit::Token:
      return token;
    case TimeUnit::Duration:
      break;
  }
  throw Error("Timestamp::get(dur): a timestamp has no duration counter; use TimeContext::elapsed_fraction");
}

Timestamp Timestamp::to_next_batch(int64_t samples, int64_t tokens, double seconds) const {
  if (samples < 0 || tokens < 0)
    throw Error("Timestamp::to_next_batch: negative sample or token count (" + std::to_string(samples) +
                ", " + std::to_string(tokens) + ")");
  Timestamp next = *this;
  next.batch += 1;
  next.batch_in_epoch += 1;
  next.sample += samples;
  next.sample_in_epoch += samples;
  next.token += tokens;
  next.token_in_epoch += tokens;
  next.total_wct += seconds;
  next.epoch_wct += seconds;
  next.batch_wct = seconds;
  return next;
}

Timestamp Timestamp::to_next_epoch() const {
  Timestamp next = *this;
  next.epoch += 1;
  next.epoch_in_iteration += 1;
  next.batch_in_epoch = 0;
  next.sample_in_epoch = 0;
  next.token_in_epoch = 0;
  next.epoch_wct = 0.0;
  next.batch_wct = 0.0;
  return next;
}

bool Timestamp::operator==(const Timestamp& o) const {
  return iteration == o.iteration && epoch == o.epoch && batch == o.batch && sample == o.sample &&
         token == o.token && epoch_in_iteration == o.epoch_in_iteration &&
         batch_in_epoch == o.batch_in_epoch && sample_in_epoch == o.sample_in_epoch &&
         token_in_epoch == o.token_in_epoch && total_wct == o.total_wct && epoch_wct == o.epoch_wct &&
         batch_wct == o.batch_wct;
}

namespace {
int64_t counter_for(const Timestamp& ts, const Time& t) {
  if (t.unit() == TimeUnit::Duration)
    throw Error("cannot compare a timestamp with " + t.str() +
                " directly: convert the duration with TimeContext (reached / to_batches) first");
  return ts.get(t.unit());
}
}  // namespace

bool operator<(const Timestamp& ts, const Time& t) { return counter_for(ts, t) < t.value(); }
bool operator<=(const Timestamp& ts, const Time& t) { return counter_for(ts, t) <= t.value(); }
bool operator>(const Timestamp& ts, const Time& t) { return counter_for(ts, t) > t.value(); }
bool operator>=(const Timestamp& ts, const Time& t) { return counter_for(ts, t) >= t.value(); }

// ---------------------------------------------------------------------------------------------
// TimeContext

double TimeContext::to_batches(const Time& t) const {
  switch (t.unit()) {
    case TimeUnit::Epoch:
      if (batches_per_epoch <= 0)
        throw Error("cannot convert " + t.str() + " to batches: batches_per_epoch is " +
                    std::to_string(batches_per_epoch) + " (the training data is empty?)");
      return static_cast<double>(t.value()) * static_cast<double>(batches_per_epoch);
    case TimeUnit::Batch:
      return static_cast<double>(t.value());
    case TimeUnit::Sample:
      if (batches_per_epoch <= 0 || samples_per_epoch <= 0)
        throw Error("cannot convert " + t.str() +
                    " to batches: batches_per_epoch = " + std::to_string(batches_per_epoch) +
                    ", samples_per_epoch = " + std::to_string(samples_per_epoch));
      // In batches of the epoch's average batch size.
      return static_cast<double>(t.value()) * static_cast<double>(batches_per_epoch) /
             static_cast<double>(samples_per_epoch);
    case TimeUnit::Token:
      if (tokens_per_sample <= 0)
        throw Error("cannot convert " + t.str() +
                    " to batches: the training data is not token sequences (no tokens per sample); use ep, ba, sp "
                    "or dur");
      // As samples (fractional), in batches of the epoch's average batch size.
      return to_batches(Time(1, TimeUnit::Sample)) * static_cast<double>(t.value()) /
             static_cast<double>(tokens_per_sample);
    case TimeUnit::Duration:
      if (max_duration.unit() == TimeUnit::Duration)
        throw Error("max_duration cannot be a duration (" + max_duration.str() + ")");
      return t.as_double() * to_batches(max_duration);
  }
  throw Error("unknown time unit");
}

bool interval_crossed(const Time& every, const Timestamp& before, const Timestamp& now, const TimeContext& time) {
  double a = 0, b = 0;
  switch (every.unit()) {
    case TimeUnit::Batch: a = static_cast<double>(before.batch); b = static_cast<double>(now.batch); break;
    case TimeUnit::Sample: a = static_cast<double>(before.sample); b = static_cast<double>(now.sample); break;
    case TimeUnit::Duration:
      a = time.elapsed_fraction(before);
      b = time.elapsed_fraction(now);
      break;
    default: throw Error("interval " + every.str() + " is not supported; use ep, ba, sp or dur");
  }
  const double step = every.as_double();
  return std::floor(a / step + 1e-9) != std::floor(b / step + 1e-9);
}

double TimeContext::elapsed_fraction(const Timestamp& ts) const {
  const double max = max_duration.as_double();
  double elapsed = 0;
  switch (max_duration.unit()) {
    case TimeUnit::Epoch:
      elapsed = static_cast<double>(ts.epoch);
      if (batches_per_epoch > 0)
        elapsed += static_cast<double>(ts.batch_in_epoch) / static_cast<double>(batches_per_epoch);
      break;
    case TimeUnit::Batch:
      elapsed = static_cast<double>(ts.batch);
      break;
    case TimeUnit::Sample:
      elapsed = static_cast<double>(ts.sample);
      break;
    case TimeUnit::Token:
      elapsed = static_cast<double>(ts.token);
      break;
    case TimeUnit::Duration:
      throw Error("max_duration cannot be a duration (" + max_duration.str() + ")");
  }
  if (max <= 0) return 1.0;  // a run of length zero is over before it starts
  return elapsed / max;
}

bool TimeContext::reached(const Timestamp& ts, const Time& t) const {
  if (t.unit() == TimeUnit::Duration) {
    // The fraction is computed in floating point (e.g. (epoch + b/B) / E); allow for the last-bit error
    // so that 0.3dur is reached at exactly epoch 3 of 10.
    return elapsed_fraction(ts) >= t.as_double() - 1e-12;
  }
  return ts.get(t.unit()) >= t.value();
}

}  // namespace tessera
