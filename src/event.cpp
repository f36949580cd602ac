#include <tessera/event.h>

#include <cstring>

namespace tessera {
namespace {

constexpr const char* kNames[kNumEvents] = {
    "init", "before_load", "after_load", "fit_start",
    "iteration_start", "epoch_start", "before_dataloader", "after_dataloader", "batch_start",
    "before_train_batch", "before_forward", "after_forward", "before_loss", "after_loss", "before_backward",
    "after_backward", "after_train_batch", "batch_end", "batch_checkpoint", "epoch_end", "epoch_checkpoint",
    "iteration_end", "iteration_checkpoint", "fit_end",
    "eval_before_all", "eval_start", "eval_batch_start", "eval_before_forward", "eval_after_forward",
    "eval_batch_end", "eval_end", "eval_after_all", "eval_standalone_start", "eval_standalone_end",
    "predict_start", "predict_batch_start", "predict_before_forward", "predict_after_forward",
    "predict_batch_end", "predict_end",
};

std::array<Event, kNumEvents> make_all() {
  std::array<Event, kNumEvents> all{};
  for (int i = 0; i < kNumEvents; ++i) all[i] = static_cast<Event>(i);
  return all;
}

}  // namespace

const std::array<Event, kNumEvents>& all_events() {
  static const std::array<Event, kNumEvents> all = make_all();
  return all;
}

const char* event_name(Event event) {
  const int i = static_cast<int>(event);
  return (i >= 0 && i < kNumEvents) ? kNames[i] : "unknown_event";
}

std::optional<Event> event_from_name(std::string_view name) {
  for (int i = 0; i < kNumEvents; ++i) {
    if (name == kNames[i]) return static_cast<Event>(i);
  }
  return std::nullopt;
}

bool is_after_event(Event event) { return std::strncmp(event_name(event), "after_", 6) == 0; }
bool is_eval_event(Event event) { return std::strncmp(event_name(event), "eval_", 5) == 0; }
bool is_predict_event(Event event) { return std::strncmp(event_name(event), "predict_", 8) == 0; }

}  // namespace tessera
