#pragma once
/// The events a Trainer fires, in the order of the Python original (reference §1.1).
///
/// Forward, loss and backward events fire once per microbatch; BeforeTrainBatch/AfterTrainBatch once per
/// batch; AfterDataloader on the full batch before it is split into microbatches.
#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace tessera {

enum class Event : int {
  // setup
  Init, BeforeLoad, AfterLoad, FitStart,
  // training loop
  IterationStart, EpochStart, BeforeDataloader, AfterDataloader, BatchStart, BeforeTrainBatch,
  BeforeForward, AfterForward, BeforeLoss, AfterLoss, BeforeBackward, AfterBackward, AfterTrainBatch,
  BatchEnd, BatchCheckpoint, EpochEnd, EpochCheckpoint, IterationEnd, IterationCheckpoint, FitEnd,
  // evaluation
  EvalBeforeAll, EvalStart, EvalBatchStart, EvalBeforeForward, EvalAfterForward, EvalBatchEnd, EvalEnd,
  EvalAfterAll, EvalStandaloneStart, EvalStandaloneEnd,
  // prediction
  PredictStart, PredictBatchStart, PredictBeforeForward, PredictAfterForward, PredictBatchEnd, PredictEnd,
};

/// Number of events (the enum is dense, starting at 0).
inline constexpr int kNumEvents = static_cast<int>(Event::PredictEnd) + 1;

/// All events in enum order.
const std::array<Event, kNumEvents>& all_events();

/// The snake_case name used in logs, traces and recipes: `Event::AfterDataloader` -> "after_dataloader".
const char* event_name(Event event);

/// Parses a snake_case event name; std::nullopt when unknown.
std::optional<Event> event_from_name(std::string_view name);

/// True for the events whose name starts with `after_` (after_load, after_dataloader, after_forward,
/// after_loss, after_backward, after_train_batch). On these the default algorithm order is reversed so
/// paired before/after changes undo in reverse (FILO). Not *_end and not eval_after_*.
bool is_after_event(Event event);

/// True for eval_* events.
bool is_eval_event(Event event);

/// True for predict_* events.
bool is_predict_event(Event event);

}  // namespace tessera
