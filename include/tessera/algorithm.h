#pragma once
/// The Algorithm plugin contract and the spec every algorithm declares.
///
/// An algorithm acts at some events and changes the model, the batch, the loss or the optimizer. It
/// declares what it does in an AlgorithmSpec so the Engine can order it against the others and refuse
/// impossible combinations before step 1 (see engine.h).
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/event.h>
#include <tessera/state.h>
#include <tessera/state_dict.h>

namespace tessera {

class Logger;
namespace data { class BatchTransform; }

/// What an algorithm reads or writes.
enum class Resource {
  ModelStructure,   ///< module tree (surgery)
  Parameters,       ///< parameter values or requires_grad
  OptimizerGroups,  ///< optimizer param groups and state
  Inputs,           ///< batch input values
  Targets,          ///< batch targets
  BatchRows,        ///< which examples are in the batch
  Resolution,       ///< spatial size of the inputs
  Outputs,          ///< model outputs
  Loss,             ///< the loss tensor
  Gradients,        ///< parameter gradients (always unscaled: with a loss scaler, the trainer unscales them
                    ///< before AfterBackward fires, so readers such as clipping see true values)
  LearningRate,     ///< optimizer learning rates
  Buffers,          ///< module buffers that are not parameters (batch-norm running statistics)
  SequenceLength,   ///< length of the token sequences (dimension 1 of sequence inputs)
};
const char* resource_name(Resource r);

/// Reads and writes at one event.
struct Access {
  Event event;
  std::vector<Resource> reads;
  std::vector<Resource> writes;
};

/// Selects algorithms in a rule: by name, or every algorithm that writes a resource (at the rule's event,
/// or at any event when the rule has none).
struct Selector {
  std::string algorithm;             ///< a recipe name, or empty
  std::optional<Resource> writes;    ///< or: writers of this resource

  static Selector named(std::string name) { return {std::move(name), std::nullopt}; }
  static Selector writers_of(Resource r) { return {"", r}; }
  /// "label_smoothing" or "writers of inputs".
  std::string describe() const;
};

/// "Run before/after these algorithms", at one event or at all shared events.
struct OrderRule {
  enum class Relation { Before, After };
  Relation relation = Relation::Before;
  Selector other;
  std::optional<Event> event;  ///< nullopt: every event both act on
  std::string reason;
};

/// A combination that is refused (hard) or warned about (soft).
struct Conflict {
  Selector other;
  bool hard = true;
  std::string reason;
};

/// Everything an algorithm declares about itself.
struct AlgorithmSpec {
  std::string name;                 ///< recipe name, snake_case
  std::vector<Access> accesses;     ///< the events it acts on, with reads/writes at each
  std::vector<OrderRule> order;
  std::vector<Conflict> conflicts;
  bool required_on_load = false;          ///< model surgery: re-applied before weights load on resume
  bool interpolates_loss = false;         ///< replaces the loss by a mix of losses
  bool leaves_parameters_unused = false;  ///< some parameters get no gradient (DDP unused detection)
  /// A training forward may skip whole modules, and skip different ones on each rank (block-mode stochastic depth):
  /// refused with collectives inside modules (distributed.sync_batch_norm), which every rank must enter.
  bool skips_modules = false;
  bool may_repeat = false;                ///< may appear more than once in a recipe
  /// Mixed precision: precisions the algorithm cannot run under (refused before step 1 with
  /// `precision_reason`), and a note on the dtype its kernels or maths use under autocast (empty: none needed).
  std::vector<Precision> refused_precisions;
  std::string precision_reason;
  std::string precision_note;

  /// The events of `accesses`.
  std::vector<Event> events() const;
  bool acts_on(Event e) const;
  bool writes(Resource r, std::optional<Event> at = std::nullopt) const;
  bool reads(Resource r, std::optional<Event> at = std::nullopt) const;
};

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  /// The declared spec (constant for the algorithm's lifetime).
  virtual const AlgorithmSpec& spec() const = 0;
  const std::string& name() const { return spec().name; }

  /// Whether to act at `event` now. Default: the event is one of the spec's. Algorithms with schedules
  /// override it (e.g. selective backprop only between `start` and `end`).
  virtual bool match(Event event, const State& state) const { return spec().acts_on(event); }
  /// Acts at `event`.
  virtual void apply(Event event, State& state, Logger& logger) = 0;
  /// Plan-time check against the run (model, data, options): throw InputError with the reason when the
  /// algorithm cannot work in this run, so that the error comes before step 1.
  virtual void check(const State& state) const {}
  /// A transform the algorithm runs in the data pipeline (on the training DataLoader's threads), or null (the
  /// default). The Trainer sets these on the training data before Init, in the plan's order at
  /// before_dataloader (so such an algorithm declares an access there), and refuses the run before step 1
  /// when the data cannot run transforms (see data::BatchSource::set_algorithm_transforms).
  virtual std::shared_ptr<const data::BatchTransform> data_transform() const { return nullptr; }

  virtual StateDict state_dict() const { return {}; }
  virtual void load_state_dict(const StateDict& state) {}
};

}  // namespace tessera
