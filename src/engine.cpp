#include <tessera/engine.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <set>
#include <sstream>
#include <optional>
#include <typeinfo>

#include <c10/util/Exception.h>

#include "profiler.h"
#include <tessera/checkpoint.h>
#include <tessera/error.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>

namespace tessera {
namespace {

/// Does `candidate` satisfy a selector at event `at` (any event when nullopt)?
bool selects(const Selector& sel, const Algorithm& candidate, std::optional<Event> at) {
  if (!sel.algorithm.empty()) return candidate.name() == sel.algorithm;
  if (sel.writes) return candidate.spec().writes(*sel.writes, at);
  return false;
}

struct Edge {
  size_t from, to;  // `from` runs before `to`
  std::string reason;
};

/// Orders the algorithms acting on one event: default order (recipe order, reversed on after_* events),
/// then the declared rules as edges, stable topological sort preferring the default position.
std::vector<PlanEntry> order_event(Event event, const std::vector<Algorithm*>& algorithms) {
  std::vector<Algorithm*> nodes;
  for (Algorithm* a : algorithms) {
    if (a->spec().acts_on(event)) nodes.push_back(a);
  }
  if (is_after_event(event)) std::reverse(nodes.begin(), nodes.end());
  const size_t n = nodes.size();
  if (n == 0) return {};

  std::vector<Edge> edges;
  for (size_t i = 0; i < n; ++i) {
    for (const OrderRule& rule : nodes[i]->spec().order) {
      if (rule.event && *rule.event != event) continue;
      for (size_t j = 0; j < n; ++j) {
        if (j == i || !selects(rule.other, *nodes[j], event)) continue;
        std::string why = nodes[i]->name() + (rule.relation == OrderRule::Relation::Before ? " before " : " after ") +
                          rule.other.describe() + ": " + rule.reason;
        if (rule.relation == OrderRule::Relation::Before) {
          edges.push_back({i, j, why});
        } else {
          edges.push_back({j, i, why});
        }
      }
    }
  }

  std::vector<int> indegree(n, 0);
  for (const Edge& e : edges) ++indegree[e.to];
  std::vector<bool> placed(n, false);
  std::vector<PlanEntry> out;
  for (size_t step = 0; step < n; ++step) {
    size_t pick = n;
    for (size_t i = 0; i < n; ++i) {
      if (!placed[i] && indegree[i] == 0) {
        pick = i;
        break;
      }
    }
    if (pick == n) {
      // A cycle among the unplaced nodes: walk predecessors until a node repeats.
      size_t start = 0;
      while (placed[start]) ++start;
      std::vector<size_t> path{start};
      std::vector<std::string> reasons;
      for (;;) {
        const Edge* back = nullptr;
        for (const Edge& e : edges) {
          if (e.to == path.back() && !placed[e.from]) {
            back = &e;
            break;
          }
        }
        reasons.push_back(back->reason);
        const size_t seen = static_cast<size_t>(std::find(path.begin(), path.end(), back->from) - path.begin());
        path.push_back(back->from);
        if (seen + 1 < path.size()) {
          std::vector<size_t> cycle(path.begin() + static_cast<std::ptrdiff_t>(seen), path.end());
          std::reverse(cycle.begin(), cycle.end());
          std::ostringstream msg;
          msg << "ordering cycle at " << event_name(event) << ": ";
          for (size_t k = 0; k < cycle.size(); ++k) msg << (k ? " -> " : "") << nodes[cycle[k]]->name();
          msg << " (rules:";
          for (size_t k = reasons.size() - (cycle.size() - 1); k < reasons.size(); ++k) msg << " [" << reasons[k] << "]";
          msg << ")";
          throw InputError(msg.str());
        }
      }
    }
    placed[pick] = true;
    PlanEntry entry{nodes[pick], {}};
    for (const Edge& e : edges) {
      if (e.to == pick || e.from == pick) {
        if (std::find(entry.reasons.begin(), entry.reasons.end(), e.reason) == entry.reasons.end()) {
          entry.reasons.push_back(e.reason);
        }
      }
      if (e.from == pick) --indegree[e.to];
    }
    out.push_back(std::move(entry));
  }
  return out;
}

/// "before selective_backprop at after_dataloader".
std::string describe_rule(const OrderRule& rule) {
  std::string out = std::string(rule.relation == OrderRule::Relation::Before ? "before " : "after ") +
                    rule.other.describe();
  if (rule.event) out += std::string(" at ") + event_name(*rule.event);
  return out;
}

std::string event_list(const std::vector<Event>& events) {
  std::string out;
  for (Event e : events) out += (out.empty() ? "" : ", ") + std::string(event_name(e));
  return out.empty() ? "no event" : out;
}

bool is_registered(const std::string& name) {
  const std::vector<std::string> known = registered_names("algorithms");
  return std::find(known.begin(), known.end(), name) != known.end();
}

/// "; did you mean \"x\"?" when `name` is neither an algorithm of the run nor a registered one, and one of
/// those is near it (a misspelling); "" otherwise.
std::string did_you_mean(const std::string& name, const Algorithm& self, const std::vector<Algorithm*>& algorithms) {
  std::vector<std::string> known = registered_names("algorithms");
  for (const Algorithm* a : algorithms) known.push_back(a->name());
  if (std::find(known.begin(), known.end(), name) != known.end()) return "";
  known.erase(std::remove(known.begin(), known.end(), self.name()), known.end());
  const std::string guess = suggest_name(name, known);
  return guess.empty() ? "" : "; did you mean \"" + guess + "\"?";
}

/// Checks the rules an algorithm declares against the run: an ordering rule at an event its algorithm never
/// acts on is an error (it could never apply); a rule naming an algorithm that is in the run but shares no event
/// with it, or a rule or conflict naming no known algorithm (misspelt), is a warning (with a did-you-mean). A rule
/// naming a known algorithm that is simply not in this run is silent: it orders the pair when both are used.
void check_rules(const Algorithm& a, const std::vector<Algorithm*>& algorithms, std::vector<std::string>& errors,
                 std::vector<std::string>& warnings) {
  const AlgorithmSpec& spec = a.spec();
  for (const OrderRule& rule : spec.order) {
    if (rule.event && !spec.acts_on(*rule.event)) {
      errors.push_back(a.name() + ": the ordering rule \"" + describe_rule(rule) + "\" is at " +
                       event_name(*rule.event) + ", an event " + a.name() + " does not act on (its events: " +
                       event_list(spec.events()) + "); give one of those, or no event");
      continue;
    }
    if (rule.other.algorithm.empty()) continue;  // "writers of X": a class of algorithms, often empty
    bool named_in_run = false, matched = false;
    for (const Algorithm* b : algorithms) {
      if (b == &a || b->name() != rule.other.algorithm) continue;
      named_in_run = true;
      for (Event e : spec.events()) {
        if ((!rule.event || *rule.event == e) && b->spec().acts_on(e)) matched = true;
      }
    }
    if (matched) continue;
    if (!named_in_run && is_registered(rule.other.algorithm)) continue;  // a known partner, absent from this run
    std::string text = a.name() + ": the ordering rule \"" + describe_rule(rule) + "\" matches no algorithm of this run";
    if (named_in_run) {
      text += " (" + rule.other.algorithm + " is in it, but acts at none of " +
              (rule.event ? std::string(event_name(*rule.event)) : "the events of " + a.name()) + ")";
    } else {
      text += did_you_mean(rule.other.algorithm, a, algorithms);
    }
    warnings.push_back(text);
  }
  for (const Conflict& c : spec.conflicts) {
    if (c.other.algorithm.empty()) continue;
    const std::string guess = did_you_mean(c.other.algorithm, a, algorithms);
    if (!guess.empty()) {
      warnings.push_back(a.name() + ": the conflict with \"" + c.other.algorithm + "\" names no known algorithm" +
                         guess);
    }
  }
}

/// Inside a catch block: rethrows the exception being handled with `where` ("algorithm \"x\" at after_loss")
/// in its message, keeping its type (Tessera's errors get a prefix, torch's errors a context line). Other
/// exceptions (a Python exception from a Python plugin, std::bad_alloc) pass through unchanged. An InputError gets
/// `subject` (the plugin) as its subject, unless it names one already.
[[noreturn]] void rethrow_with_context(const std::string& where, const void* subject) {
  try {
    throw;
  } catch (const CheckpointError& e) {
    throw CheckpointError(where + ": " + e.what());
  } catch (const InputError& e) {
    if (typeid(e) != typeid(InputError)) throw;
    throw e.with_context(where, subject);
  } catch (const Error& e) {
    if (typeid(e) != typeid(Error)) throw;
    throw Error(where + ": " + e.what());
  } catch (c10::Error& e) {
    e.add_context("in " + where);
    throw;
  }
}

/// The dtype of the batch's inputs, when it has any.
std::optional<at::ScalarType> input_dtype(const State& state) {
  if (!state.batch.has(Batch::kInput)) return std::nullopt;
  const at::Tensor& x = state.batch.input();
  return x.defined() ? std::optional<at::ScalarType>(x.scalar_type()) : std::nullopt;
}

/// An algorithm that turns floating inputs into another floating type than the model's parameters makes the
/// forward fail later with "expected scalar type Double but found Float", naming nobody: refused here, where
/// the caller adds the algorithm and the event.
void check_input_dtype(const State& state, at::ScalarType before, at::ScalarType after) {
  if (before == after || !at::isFloatingType(before) || !at::isFloatingType(after) || !state.model) return;
  for (const at::Tensor& p : state.model->parameters()) {
    if (!at::isFloatingType(p.scalar_type())) continue;
    if (p.scalar_type() == after) return;
    throw InputError(std::string("the inputs were ") + c10::toString(before) + " and are now " + c10::toString(after) +
                     ", but the model's parameters are " + c10::toString(p.scalar_type()) +
                     " (its forward would fail); keep the inputs' dtype (x.to(" + c10::toString(before) + "))");
  }
}

}  // namespace

std::vector<std::string> cross_event_dependencies(const AlgorithmSpec& a, const AlgorithmSpec& b) {
  // Events where `s` reads (or writes) `r`.
  auto events_of = [](const AlgorithmSpec& s, Resource r, bool writes) {
    std::vector<Event> out;
    for (const Access& x : s.accesses) {
      const auto& rs = writes ? x.writes : x.reads;
      if (std::find(rs.begin(), rs.end(), r) != rs.end()) out.push_back(x.event);
    }
    return out;
  };
  // The events of `from` that reach an event of `to` (another one, and not init, which precedes every other).
  auto reaching = [](const std::vector<Event>& from, const std::vector<Event>& to) {
    std::vector<Event> out;
    for (Event e : from) {
      for (Event t : to) {
        if (t != e && t != Event::Init) {
          out.push_back(e);
          break;
        }
      }
    }
    return out;
  };
  // The events of `to` that an event of `from` reaches.
  auto reached = [](const std::vector<Event>& to, const std::vector<Event>& from) {
    std::vector<Event> out;
    for (Event t : to) {
      if (t == Event::Init) continue;
      if (std::any_of(from.begin(), from.end(), [t](Event e) { return e != t; })) out.push_back(t);
    }
    return out;
  };
  auto list = [](const std::vector<Event>& events) {
    std::string out;
    for (Event e : events) out += (out.empty() ? "" : ", ") + std::string(event_name(e));
    return out;
  };
  std::vector<Resource> resources;
  for (const AlgorithmSpec* s : {&a, &b}) {
    for (const Access& x : s->accesses) {
      for (Resource r : x.writes) {
        if (std::find(resources.begin(), resources.end(), r) == resources.end()) resources.push_back(r);
      }
    }
  }
  std::vector<std::string> out;
  for (Resource r : resources) {
    for (const auto& [w, o] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
      const std::vector<Event> reads = events_of(*o, r, false);
      const std::vector<Event> from = reaching(events_of(*w, r, true), reads);
      if (from.empty()) continue;
      out.push_back(w->name + " writes " + resource_name(r) + " at " + list(from) + "; " + o->name + " reads it at " +
                    list(reached(reads, from)));
    }
    // Two writers of it, neither reading it anywhere: the later event's value stands.
    if (events_of(a, r, false).empty() && events_of(b, r, false).empty()) {
      const std::vector<Event> writes_b = events_of(b, r, true);
      const std::vector<Event> from = reaching(events_of(a, r, true), writes_b);
      if (!from.empty()) {
        out.push_back(a.name + " writes " + resource_name(r) + " at " + list(from) + "; " + b.name +
                      " writes it too at " + list(reached(writes_b, from)));
      }
    }
  }
  return out;
}

Plan compile_plan(const std::vector<Algorithm*>& algorithms, const State* state) {
  Plan plan;
  std::vector<std::string> errors;
  // The algorithm the first error is about (the error's subject: a recipe run points at its line).
  const Algorithm* subject = nullptr;
  const auto blame = [&](const Algorithm* a) {
    if (subject == nullptr) subject = a;
  };

  // A blank name would print as a blank line of the plan and could not be matched in traces or checkpoints.
  for (size_t i = 0; i < algorithms.size(); ++i) {
    if (algorithms[i]->name().empty()) {
      throw InputError("an algorithm has an empty name in its spec (algorithm " + std::to_string(i + 1) +
                       " of the list); set AlgorithmSpec::name to its recipe name (snake_case)");
    }
  }

  // A data-pipeline transform takes its place in the pipeline from its algorithm's place at before_dataloader
  // (detail::install_data_transforms); without an access there it would be left out without a word.
  for (Algorithm* a : algorithms) {
    if (a->data_transform() != nullptr && !a->spec().acts_on(Event::BeforeDataloader)) {
      errors.push_back(a->name() + ": it has a data-pipeline transform (data_transform()) but declares no access at "
                       "before_dataloader, where the engine orders such transforms; add one to its spec, e.g. "
                       "accesses = {{Event::BeforeDataloader, {}, {Resource::Inputs}}}");
      blame(a);
    }
  }

  // The same algorithm twice.
  std::map<std::string, std::vector<size_t>> positions;
  for (size_t i = 0; i < algorithms.size(); ++i) positions[algorithms[i]->name()].push_back(i);
  for (const auto& [name, where] : positions) {
    if (where.size() < 2) continue;
    if (algorithms[where[0]]->spec().may_repeat) continue;
    std::ostringstream msg;
    msg << name << " appears " << where.size() << " times (positions";
    for (size_t p : where) msg << " " << p + 1;
    msg << " in the algorithm list); it acts on shared state and may appear only once";
    errors.push_back(msg.str());
    blame(algorithms[where[1]]);
  }

  // Declared conflicts: each unordered pair reported once.
  std::set<std::pair<std::string, std::string>> reported;
  for (Algorithm* a : algorithms) {
    for (const Conflict& c : a->spec().conflicts) {
      for (Algorithm* b : algorithms) {
        if (a == b || !selects(c.other, *b, std::nullopt)) continue;
        auto key = std::minmax(a->name(), b->name());
        if (!reported.insert({key.first + (c.hard ? "!" : "?"), key.second}).second) continue;
        std::string text = a->name() + " and " + b->name() + (c.hard ? " cannot be combined: " : " may not compose well: ") +
                           c.reason;
        (c.hard ? errors : plan.warnings_).push_back(text);
        if (c.hard) {  // the later of the two in the list
          const auto first =
              std::find_if(algorithms.begin(), algorithms.end(), [&](Algorithm* x) { return x == a || x == b; });
          blame(*first == a ? b : a);
        }
      }
    }
  }

  for (Algorithm* a : algorithms) {
    const size_t before = errors.size();
    check_rules(*a, algorithms, errors, plan.warnings_);
    if (errors.size() > before) blame(a);
  }

  std::vector<std::string> interpolators;
  for (Algorithm* a : algorithms) {
    if (a->spec().interpolates_loss) interpolators.push_back(a->name());
  }
  if (interpolators.size() > 1) {
    std::string names;
    for (const auto& n : interpolators) names += (names.empty() ? "" : ", ") + n;
    plan.warnings_.push_back("several algorithms interpolate the loss (" + names +
                             "); their mixes compound and the result is rarely what was intended");
  }

  for (Event e : all_events()) {
    try {
      plan.per_event_[static_cast<int>(e)] = order_event(e, algorithms);
    } catch (const InputError& err) {
      errors.push_back(err.what());
    }
  }

  if (state != nullptr) {
    for (Algorithm* a : algorithms) {
      const auto& refused = a->spec().refused_precisions;
      if (std::find(refused.begin(), refused.end(), state->precision) != refused.end()) {
        errors.push_back(a->name() + ": cannot run under precision " + precision_name(state->precision) + ": " +
                         a->spec().precision_reason + "; use another precision or leave " + a->name() + " out");
        blame(a);
      }
      try {
        a->check(*state);
      } catch (const InputError& err) {
        errors.push_back(a->name() + ": " + err.what());
        blame(a);
      }
    }
  }

  if (!errors.empty()) {
    std::string msg = "the algorithms of this run cannot run together:";
    for (const auto& e : errors) msg += "\n  - " + e;
    throw InputError(msg, subject);
  }
  return plan;
}

std::string Plan::table() const {
  std::ostringstream out;
  size_t width = 0;
  for (Event e : all_events()) {
    if (!at(e).empty()) width = std::max(width, std::string(event_name(e)).size());
  }
  out << "plan: algorithms per event, in run order\n";
  bool any = false;
  for (Event e : all_events()) {
    const auto& entries = at(e);
    if (entries.empty()) continue;
    any = true;
    std::string label = event_name(e);
    for (size_t i = 0; i < entries.size(); ++i) {
      out << "  " << (i == 0 ? label : "") << std::string(width - (i == 0 ? label.size() : 0) + 2, ' ') << i + 1
          << ". " << entries[i].algorithm->name();
      if (i == 0 && is_after_event(e) && entries.size() > 1) out << "   (after_* event: reverse recipe order)";
      out << "\n";
      for (const auto& r : entries[i].reasons) out << "  " << std::string(width + 2, ' ') << "     why: " << r << "\n";
    }
  }
  if (!any) out << "  (no algorithms)\n";
  if (!warnings_.empty()) {
    out << "warnings:\n";
    for (const auto& w : warnings_) out << "  - " << w << "\n";
  }
  return out.str();
}

std::string Plan::to_json() const {
  std::ostringstream out;
  out << "{";
  bool first = true;
  for (Event e : all_events()) {
    const auto& entries = at(e);
    if (entries.empty()) continue;
    out << (first ? "" : ", ") << "\"" << event_name(e) << "\": [";
    first = false;
    for (size_t i = 0; i < entries.size(); ++i) out << (i ? ", " : "") << "\"" << entries[i].algorithm->name() << "\"";
    out << "]";
  }
  out << "}";
  return out.str();
}

Engine::Engine(std::vector<std::shared_ptr<Algorithm>> algorithms, std::vector<std::shared_ptr<Callback>> callbacks)
    : algorithms_(std::move(algorithms)), callbacks_(std::move(callbacks)) {
  std::vector<LoggerDestination*> destinations;
  for (const auto& cb : callbacks_) {
    if (!cb) throw InputError("a callback is null");
    if (cb->is_logger()) {
      loggers_.push_back(cb.get());
      if (auto* d = dynamic_cast<LoggerDestination*>(cb.get())) destinations.push_back(d);
    } else {
      plain_callbacks_.push_back(cb.get());
    }
  }
  for (const auto& a : algorithms_) {
    if (!a) throw InputError("an algorithm is null");
  }
  logger_ = Logger(std::move(destinations));
}

const Plan& Engine::compile(const State& state) {
  std::vector<Algorithm*> raw;
  for (const auto& a : algorithms_) raw.push_back(a.get());
  plan_ = compile_plan(raw, &state);
  trace_slots_.assign(kNumEvents, {});
  for (Event e : all_events()) {
    for (const PlanEntry& entry : plan_.at(e)) {
      trace_slots_[static_cast<int>(e)].push_back(&trace_[entry.algorithm->name() + "/" + event_name(e)]);
    }
  }
  for (const auto& w : plan_.warnings()) logger_.warn(w);
  return plan_;
}

void Engine::run_event(Event event, State& state) {
  if (closed_) throw Error(std::string("engine is closed; cannot run ") + event_name(event));
  Profiler* const profiler = profiler_ != nullptr && profiler_->recording() ? profiler_ : nullptr;
  const double event_begin = profiler != nullptr ? profiler->now() : 0.0;
  if (profiler != nullptr) profiler->event_begins(event, event_begin);
  auto run_algorithms = [&] {
    const auto& entries = plan_.at(event);
    if (entries.empty()) return;
    auto& slots = trace_slots_[static_cast<int>(event)];
    for (size_t i = 0; i < entries.size(); ++i) {
      Algorithm* a = entries[i].algorithm;
      try {
        if (!a->match(event, state)) continue;
        const std::optional<at::ScalarType> before = input_dtype(state);
        const auto t0 = std::chrono::steady_clock::now();
        const double begin = profiler != nullptr ? profiler->now() : 0.0;
        a->apply(event, state, logger_);
        slots[i]->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (profiler != nullptr) profiler->span("algorithm/" + a->name(), "algorithm", begin, profiler->now(), event_name(event));
        if (before) {
          if (const std::optional<at::ScalarType> after = input_dtype(state)) check_input_dtype(state, *before, *after);
        }
      } catch (...) {
        rethrow_with_context("algorithm \"" + a->name() + "\" at " + event_name(event), a);
      }
      TraceRecord& rec = *slots[i];
      if (rec.count++ == 0) rec.first_batch = state.timestamp.batch;
      rec.last_batch = state.timestamp.batch;
    }
  };
  auto run_callbacks = [&](const std::vector<Callback*>& callbacks) {
    for (Callback* cb : callbacks) {
      try {
        const double begin = profiler != nullptr ? profiler->now() : 0.0;
        cb->run_event(event, state, logger_);
        if (profiler != nullptr) profiler->span("callback/" + cb->name(), "callback", begin, profiler->now(), event_name(event));
      } catch (...) {
        rethrow_with_context("callback \"" + cb->name() + "\" at " + event_name(event), cb);
      }
    }
  };
  if (event == Event::Init) {
    run_callbacks(loggers_);
    run_callbacks(plain_callbacks_);
    run_algorithms();
  } else {
    run_algorithms();
    run_callbacks(plain_callbacks_);
    run_callbacks(loggers_);
  }
  for (size_t i = 0; i < state.schedulers.size(); ++i) {  // a schedule that follows a metric takes it here
    try {
      state.schedulers[i]->run_event(event, state, logger_);
    } catch (...) {
      rethrow_with_context("schedulers[" + std::to_string(i) + "] (" + state.schedulers[i]->name() + ") at " +
                               event_name(event),
                           state.schedulers[i].get());
    }
  }
  if (profiler != nullptr) profiler->event_ends(event, event_begin, profiler->now());
}

void Engine::close() {
  if (closed_) return;
  closed_ = true;
  std::exception_ptr first;  // every callback is closed; the first failure is thrown after
  for (const auto& cb : callbacks_) {
    try {
      cb->close();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace tessera
