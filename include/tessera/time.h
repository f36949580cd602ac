#pragma once
/// Training time: `Time` (an amount in a unit) and `Timestamp` (where a run is).
///
///     Time t = Time::parse("10ep");      // 10 epochs
///     Time d = Time::parse("0.3dur");    // 30% of max_duration
///     if (state.timestamp >= t) ...
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera {

/// Units of time. `Duration` is a fraction of the run's max_duration (0 = start, 1 = end).
enum class TimeUnit { Epoch, Batch, Sample, Token, Duration };

/// "ep", "ba", "sp", "tok", "dur".
const char* unit_suffix(TimeUnit unit);

/// An amount of training time. Integral for every unit except `Duration` (a fraction).
///
/// Arithmetic follows the Python original (reference §4.1): `+`, `-`, `%` and comparisons need the same
/// unit (an Error otherwise); `Time * number` scales (truncating for integral units); `Time / Time` of one
/// unit gives a Duration.
class Time {
 public:
  /// 0 epochs.
  Time() = default;
  /// An integral amount: `Time(500, TimeUnit::Batch)`. Negative values are rejected (InputError); a
  /// `Duration` must be built with `Time::fraction`.
  Time(int64_t value, TimeUnit unit);
  /// A fraction of max_duration, >= 0.
  static Time fraction(double value);

  /// Parses "10ep", "500ba", "2048sp", "3e4tok", "0.3dur". Rejects (InputError, with the text and the
  /// expected form) non-integral counts ("1.5ba"), a missing number ("ep"), negative values ("-1ep"),
  /// unknown or missing units ("10min", "10").
  static Time parse(std::string_view text);

  TimeUnit unit() const noexcept { return unit_; }
  /// The integral count (0 for Duration; use `as_double`).
  int64_t value() const noexcept { return count_; }
  /// The value as a double (the fraction for Duration, the count otherwise).
  double as_double() const noexcept { return unit_ == TimeUnit::Duration ? fraction_ : static_cast<double>(count_); }

  /// "10ep", "0.3dur".
  std::string str() const;

  Time operator+(const Time& other) const;
  Time operator-(const Time& other) const;
  Time operator%(const Time& other) const;
  Time operator*(double factor) const;
  Time operator/(double divisor) const;
  /// Same unit only; the result is a Duration.
  Time operator/(const Time& other) const;

  bool operator==(const Time& other) const;
  bool operator!=(const Time& other) const { return !(*this == other); }
  bool operator<(const Time& other) const;
  bool operator<=(const Time& other) const;
  bool operator>(const Time& other) const { return other < *this; }
  bool operator>=(const Time& other) const { return other <= *this; }

 private:
  TimeUnit unit_ = TimeUnit::Epoch;
  int64_t count_ = 0;
  double fraction_ = 0.0;
};

/// Where a run is: counters of epochs, batches, samples and tokens (totals and within the epoch) and
/// wall-clock seconds. Immutable in spirit: the trainer replaces it with `to_next_batch`/`to_next_epoch`.
struct Timestamp {
  int64_t iteration = 0;
  int64_t epoch = 0;
  int64_t batch = 0;
  int64_t sample = 0;
  int64_t token = 0;
  int64_t epoch_in_iteration = 0;
  int64_t batch_in_epoch = 0;
  int64_t sample_in_epoch = 0;
  int64_t token_in_epoch = 0;
  double total_wct = 0.0;  ///< seconds of training so far
  double epoch_wct = 0.0;  ///< seconds in the current epoch
  double batch_wct = 0.0;  ///< seconds the last batch took

  /// The counter for a unit (Epoch, Batch, Sample or Token); Duration is an Error (use
  /// `TimeContext::elapsed_fraction`).
  int64_t get(TimeUnit unit) const;

  /// After a batch of `samples` samples and `tokens` tokens that took `seconds`.
  Timestamp to_next_batch(int64_t samples, int64_t tokens, double seconds) const;
  /// At the end of an epoch: increments `epoch`, resets the in-epoch counters.
  Timestamp to_next_epoch() const;

  bool operator==(const Timestamp& other) const;
};

/// Comparisons of a timestamp with a Time compare the counter of the Time's unit (a Duration is an Error
/// here: convert it with TimeContext first).
bool operator<(const Timestamp& ts, const Time& t);
bool operator<=(const Timestamp& ts, const Time& t);
bool operator>(const Timestamp& ts, const Time& t);
bool operator>=(const Timestamp& ts, const Time& t);

/// What is needed to convert between units during a run: the run's max_duration, the number of batches
/// and samples per epoch of the training data, and its tokens per sample (sequence data).
struct TimeContext {
  Time max_duration = Time(1, TimeUnit::Epoch);
  int64_t batches_per_epoch = 1;
  int64_t samples_per_epoch = 1;
  /// Tokens per sample (0: the data is not token sequences, and `tok` times cannot be converted).
  int64_t tokens_per_sample = 0;
  /// The trainer's scale_schedule_ratio: max_duration is already scaled by it; the schedulers' ep, ba, sp and tok
  /// times (not their warmups) are scaled by it through `schedule_to_batches`.
  double schedule_ratio = 1.0;

  /// A time in batches (fractional for sample counts that do not fill batches): ep -> ep·batches_per_epoch,
  /// sp -> sp/batch size, tok -> tok/tokens_per_sample samples, dur -> fraction of max_duration in batches.
  /// Tokens without tokens_per_sample are an Error.
  double to_batches(const Time& t) const;
  /// max_duration in batches.
  double total_batches() const { return to_batches(max_duration); }
  /// A scheduler's time in batches with the schedule scaled: `to_batches(t)`, times schedule_ratio unless t is a
  /// fraction of max_duration (dur), which follows the scaled max_duration already (Composer's scale schedule).
  double schedule_to_batches(const Time& t) const {
    return t.unit() == TimeUnit::Duration ? to_batches(t) : to_batches(t) * schedule_ratio;
  }
  /// Elapsed fraction of max_duration at `ts`, in max_duration's unit (can exceed 1 only past the end).
  double elapsed_fraction(const Timestamp& ts) const;
  /// True when `ts` has reached `t` (any unit, Duration included).
  bool reached(const Timestamp& ts, const Time& t) const;
};

/// Whether a batch from `before` to `now` crossed a multiple of `every` (a ba, sp or dur interval): what the
/// trainer's evaluation and checkpoint intervals, and callbacks with intervals, test at each batch end. An Error for
/// ep and tok (epoch intervals are tested at epoch ends, on the epoch counter).
bool interval_crossed(const Time& every, const Timestamp& before, const Timestamp& now, const TimeContext& time);

}  // namespace tessera
