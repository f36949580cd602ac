#include "seq_length_warmup.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/models/model.h>

namespace tessera::algorithms {

int64_t warmup_seq_length(int64_t batch, int64_t total_batches, double duration, int64_t min_seq_length,
                          int64_t max_seq_length, int64_t step_size) {
  check_option("warmup_seq_length", "min_seq_length", static_cast<double>(min_seq_length), Range::at_least(1));
  check_option("warmup_seq_length", "step_size", static_cast<double>(step_size), Range::at_least(1));
  check_option("warmup_seq_length", "duration", duration, Range::closed(0, 1));
  if (max_seq_length < min_seq_length) {
    throw InputError(fmt::format("warmup_seq_length: max_seq_length {} is below min_seq_length {}", max_seq_length,
                                 min_seq_length));
  }
  const auto warmup = static_cast<int64_t>(static_cast<double>(total_batches) * duration);
  if (warmup <= 0) return max_seq_length;
  const int64_t steps = std::max<int64_t>(1, (max_seq_length - min_seq_length) / step_size);
  const int64_t every = std::max<int64_t>(1, warmup / steps);
  // Capped before multiplying, so that a long run cannot overflow.
  const int64_t grown = std::min(std::max<int64_t>(batch, 0) / every, max_seq_length / step_size + 1);
  return std::min(max_seq_length, min_seq_length + step_size * grown);
}

SeqLengthWarmup::SeqLengthWarmup(SeqLengthWarmupOptions options) : options_(std::move(options)) {
  validate_options(options_, "seq_length_warmup");
  if (options_.max_seq_length() > 0 && options_.max_seq_length() < options_.min_seq_length()) {
    throw InputError(fmt::format("seq_length_warmup: max_seq_length {} is below min_seq_length {}",
                                 options_.max_seq_length(), options_.min_seq_length()));
  }
  spec_.name = "seq_length_warmup";
  std::vector<Resource> writes{Resource::Inputs, Resource::Targets, Resource::SequenceLength};
  if (!options_.truncate()) writes.push_back(Resource::BatchRows);
  spec_.accesses = {{Event::AfterDataloader, {Resource::Inputs, Resource::Targets}, writes}};
}

void SeqLengthWarmup::check(const State& state) const {
  const Batch example = state.train_dataloader->example_batch();
  if (!example.has(Batch::kInput) || example.input().dim() != 2) {
    throw InputError(fmt::format(
        "seq_length_warmup shortens token sequences and needs inputs [S] per example (a text dataset); the training "
        "data has {}",
        example.has(Batch::kInput) ? "inputs of shape " + c10::str(example.input().sizes().slice(1)) + " per example"
                                   : "no batch part \"input\" (" + state.train_dataloader->describe() + ")"));
  }
  const int64_t s = example.input().size(1);
  if (options_.max_seq_length() > s || options_.min_seq_length() > s) {
    throw InputError(fmt::format("seq_length_warmup: {} {} is longer than the training data's sequences ({} tokens); "
                                 "expected at most {}",
                                 options_.max_seq_length() > s ? "max_seq_length" : "min_seq_length",
                                 std::max(options_.max_seq_length(), options_.min_seq_length()), s, s));
  }
  // The shortest batch of the schedule, through the model now rather than at batch 0.
  const Batch shortest = set_seq_length(example, options_.min_seq_length(), options_.truncate());
  Model& model = *state.model;
  const std::string error = try_on_example(model, shortest, [&](const Batch& b) { model.forward(b); });
  if (!error.empty()) {
    throw InputError(fmt::format("seq_length_warmup: the model cannot take sequences of {} tokens (min_seq_length), "
                                 "the first length of the schedule: its forward fails with \"{}\"",
                                 options_.min_seq_length(), error));
  }
}

void SeqLengthWarmup::apply(Event, State& state, Logger& logger) {
  const int64_t s = state.batch.input().size(1);
  const int64_t max = options_.max_seq_length() > 0 ? options_.max_seq_length() : s;
  const auto length_at = [&](int64_t batch) {
    return warmup_seq_length(batch, static_cast<int64_t>(state.time.total_batches()), options_.duration(),
                             options_.min_seq_length(), max, options_.step_size());
  };
  const int64_t batch = state.timestamp.batch, length = length_at(batch);
  // Logged where the schedule changes it (and at the first batch), from the schedule rather than from what this
  // object saw, so that a resumed run logs what one run in one go does.
  if (batch == 0 || std::min(length_at(batch - 1), s) != std::min(length, s)) {
    logger.log_metrics({{"seq_length_warmup/seq_length", static_cast<double>(std::min(length, s))}}, state.timestamp);
  }
  last_seq_length_ = std::min(length, s);
  if (length < s) state.batch = set_seq_length(state.batch, length, options_.truncate());
}

}  // namespace tessera::algorithms
