#pragma once
/// YAML recipes: loading, command-line overrides, and reading component Options from them.
///
///     auto recipe = tessera::Recipe::load("recipes/resnet.yaml", {"optimizer.sgd.lr=0.05"});
///     tessera::optim::SGDOptions sgd;
///     tessera::read_options(recipe.root().child("optimizer").child("sgd"), sgd, "optimizer.sgd");
///
/// A recipe maps straight onto each component's Options (their `visit` lists the keys), so there is no
/// second set of configuration classes. Every problem is an InputError that says where it is and what was
/// expected:
///
///     recipes/x.yaml:12:9: optimizer.sgd.lr: -0.1 is out of range; expected a number > 0
///     recipes/x.yaml:13:9: optimizer.sgd.momentom: unknown key "momentom" in optimizer.sgd; did you mean
///         "momentum"? (known keys: lr, momentum, dampening, ...)
///
/// The schema of a whole recipe (model, data, optimizer, ...) is in docs/recipes.md; registry.h builds a
/// run from it.
#include <tessera/error.h>
#include <tessera/options.h>
#include <tessera/microbatching.h>
#include <tessera/time.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace tessera {

/// A node of a recipe: a map, a list, a scalar, an empty value (`key:` with nothing) or an absent key.
/// It knows where it comes from (file and line:column, or which command-line override set it) and its key
/// path ("optimizer.sgd.lr", "schedulers[0].cosine"), so that every error can point at it.
/// Cheap to copy (it shares the recipe's data).
class ConfigNode {
 public:
  /// An absent node with an empty path.
  ConfigNode();
  ~ConfigNode();
  ConfigNode(const ConfigNode&);
  ConfigNode& operator=(const ConfigNode&);

  /// False for an absent key (`child` of a key that is not there).
  bool present() const noexcept;
  /// `key:` with no value, `~` or `null`.
  bool is_null() const;
  bool is_map() const;
  bool is_sequence() const;
  bool is_scalar() const;
  /// Number of entries of a map or list (0 otherwise).
  size_t size() const;

  /// The keys of a map, in file order (empty for anything else).
  std::vector<std::string> keys() const;
  /// Whether a map has `key`.
  bool has(const std::string& key) const;
  /// The value of `key` in a map; an absent node (with the would-be path) when the key is not there.
  ConfigNode child(const std::string& key) const;
  /// The entries of a list (empty for anything else).
  std::vector<ConfigNode> elements() const;

  /// The raw text of a scalar ("" otherwise).
  std::string scalar() const;
  /// A number (InputError "expected a number, got ..." otherwise).
  double as_double() const;
  /// A whole number; "1e4" is accepted, "1.5" and "abc" are not.
  int64_t as_int() const;
  /// true/false (also yes/no, on/off).
  bool as_bool() const;
  /// Any scalar as text; an empty value reads as "".
  std::string as_string() const;
  /// A Time such as "10ep" (Time::parse; its message is part of the error).
  Time as_time() const;
  std::vector<double> as_doubles() const;
  std::vector<int64_t> as_ints() const;
  std::vector<Time> as_times() const;
  std::vector<std::string> as_strings() const;

  /// Key path: "" for the root, "optimizer.sgd.lr", "schedulers[0].cosine.warmup".
  const std::string& path() const;
  /// The recipe's name (its file path, or the name given to Recipe::parse).
  const std::string& file() const;
  /// 1-based line and column of the value (of its key for empty values; of the parent for absent keys).
  int line() const;
  int column() const;
  /// "recipes/x.yaml:12:9", or "<command line> override 2" for values set by an override.
  std::string location() const;
  /// Like location(), but at the key of this value when it has one (for "unknown key" messages).
  std::string key_location() const;
  /// Short description of the value for messages: "\"abc\"", "a map", "a list", "an empty value".
  std::string describe() const;

  /// Throws InputError "<location>: <path>: <problem>; expected <expected>" (no "; expected" part when
  /// `expected` is empty).
  [[noreturn]] void fail(const std::string& problem, const std::string& expected = "") const;
  /// The same at key_location().
  [[noreturn]] void fail_at_key(const std::string& problem, const std::string& expected = "") const;

  /// The node as YAML text (flow style for small values).
  std::string yaml() const;

  /// Implementation detail (keeps yaml-cpp out of public headers).
  struct Impl;
  explicit ConfigNode(std::shared_ptr<const Impl> impl);

 private:
  std::shared_ptr<const Impl> impl_;
};

/// The closest of `known` to `word` by edit distance when it is within max(2, len(word) / 3); "" otherwise.
std::string suggest_name(const std::string& word, const std::vector<std::string>& known);

/// Reads the fields of `options` that `node` (a map) sets, checks each against its Range or Choices, then
/// rejects any key `options` does not declare (with a did-you-mean and the known keys). Absent fields keep
/// their current values; an absent or empty node sets nothing. `where` names the map in messages
/// ("optimizer.sgd"; empty: the node's path). Supported field types: bool, integers, floating point,
/// std::string, Time, std::vector of those, and ConfigNode (the raw sub-node, for sections read later).
template <class Options>
void read_options(const ConfigNode& node, Options& options, const std::string& where);

/// A recipe: a YAML document with command-line overrides applied.
///
/// Overrides are `key.path=value`; the value is YAML (`optimizer.sgd.lr=0.05`, `algorithms=[]`,
/// `model={mlp: {hidden: [64]}}`); list entries are addressed as `schedulers[0]` or `schedulers.0`. A key
/// that does not exist is created only when its parent is a map (and is then validated like any other).
/// Errors in an override's value are reported at "<command line> override N".
class Recipe {
 public:
  /// Reads and parses a file. A missing file or a YAML syntax error (at file:line:col) is an InputError.
  static Recipe load(const std::string& path, const std::vector<std::string>& overrides = {});
  /// Parses recipe text; `name` stands for the file in messages.
  static Recipe parse(const std::string& text, const std::string& name = "<string>",
                      const std::vector<std::string>& overrides = {});

  /// The document's root map.
  ConfigNode root() const;
  /// The file path (or the name given to parse).
  const std::string& path() const;
  /// The overrides as given.
  const std::vector<std::string>& overrides() const;
  /// The recipe as run, overrides applied, as YAML text (comments are not kept).
  std::string text() const;

  struct Impl;

 private:
  explicit Recipe(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

// -------------------------------------------------------------------------------------------------------
// Implementation of read_options.
namespace detail {

template <class T>
struct IsVector : std::false_type {};
template <class T, class A>
struct IsVector<std::vector<T, A>> : std::true_type {
  using element = T;
};

/// Throws unless `node` is absent, empty or a map.
void expect_options_map(const ConfigNode& node, const std::string& where);
/// Throws at the first key of `node` not in `known`.
void reject_unknown_keys(const ConfigNode& node, const std::vector<std::string>& known,
                         const std::string& where);
/// Throws unless `node` is a list; `what` describes the expected list ("a list of numbers").
void expect_list(const ConfigNode& node, const std::string& what);
/// Range check of a read value (`integral` words the message "a whole number").
void check_range(const ConfigNode& node, double value, const Range& range, bool integral);
/// A whole number beyond 64 bits (1e30, 100000000000000000000) for an option with a range: fails with that
/// range, which is what the user needs, rather than int64's.
void check_huge_whole_number(const ConfigNode& node, const Range& range);
void check_choice(const ConfigNode& node, const std::string& value, const Choices& choices);

template <class T>
std::string list_description() {
  if constexpr (std::is_same_v<T, bool>)
    return "a list of true/false values";
  else if constexpr (std::is_integral_v<T>)
    return "a list of whole numbers";
  else if constexpr (std::is_floating_point_v<T>)
    return "a list of numbers";
  else if constexpr (std::is_same_v<T, Time>)
    return "a list of times such as [10ep, 20ep]";
  else if constexpr (std::is_same_v<T, std::string>)
    return "a list of strings";
  else if constexpr (HasVisit<T>::value)
    return "a list of option maps";
  else
    return "a list";
}

inline void read_value(const ConfigNode& node, ConfigNode& out) { out = node; }
inline void read_value(const ConfigNode& node, std::string& out) { out = node.as_string(); }
inline void read_value(const ConfigNode& node, Time& out) { out = node.as_time(); }
inline void read_value(const ConfigNode& node, MicrobatchSize& out) {
  if (node.is_scalar() && node.scalar() == "auto") {
    out = MicrobatchSize::automatic();
    return;
  }
  if (!node.is_scalar() || node.scalar().find_first_not_of("0123456789") != std::string::npos) {
    node.fail(node.describe() + " is not a microbatch size", "a whole number >= 0 (0 = the whole batch) or auto");
  }
  out = MicrobatchSize(node.as_int());
}

template <class T>
void read_scalar(const ConfigNode& node, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    out = node.as_bool();
  } else if constexpr (std::is_floating_point_v<T>) {
    out = static_cast<T>(node.as_double());
  } else if constexpr (std::is_integral_v<T>) {
    const int64_t v = node.as_int();
    if constexpr (!std::is_same_v<T, int64_t>) {
      check_range(node, static_cast<double>(v),
                  Range::closed(static_cast<double>(std::numeric_limits<T>::min()),
                                static_cast<double>(std::numeric_limits<T>::max())),
                  true);
    }
    out = static_cast<T>(v);
  } else {
    read_value(node, out);
  }
}

template <class T>
void apply_constraint(const ConfigNode& node, const T& value, const Range& range) {
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    check_range(node, static_cast<double>(value), range, std::is_integral_v<T>);
  }
}
inline void apply_constraint(const ConfigNode& node, const std::string& value, const Choices& choices) {
  check_choice(node, value, choices);
}
template <class T>
void apply_constraint(const ConfigNode&, const T&, const Any&) {}

template <class T, class Constraint>
void read_checked(const ConfigNode& node, T& field, const Constraint& constraint) {
  if constexpr (IsVector<T>::value) {
    using E = typename IsVector<T>::element;
    expect_list(node, list_description<E>());
    T result;
    for (const ConfigNode& element : node.elements()) {
      E x{};
      read_checked(element, x, constraint);
      result.push_back(std::move(x));
    }
    field = std::move(result);
  } else {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool> && std::is_same_v<Constraint, Range>) {
      check_huge_whole_number(node, constraint);
    }
    if constexpr (HasVisit<T>::value) {
      read_options(node, field, node.path());  // a nested options struct: its fields, checked where they are
    } else {
      read_scalar(node, field);
      apply_constraint(node, field, constraint);
    }
  }
}

struct OptionReader {
  const ConfigNode& node;
  std::vector<std::string> known;
  template <class T, class Constraint>
  void operator()(const char* name, T& field, const char* /*help*/, const Constraint& constraint) {
    known.emplace_back(name);
    if (!node.is_map() || !node.has(name)) return;
    read_checked(node.child(name), field, constraint);
  }
};

}  // namespace detail

template <class Options>
void read_options(const ConfigNode& node, Options& options, const std::string& where) {
  detail::expect_options_map(node, where);
  detail::OptionReader reader{node, {}};
  options.visit(reader);
  detail::reject_unknown_keys(node, reader.known, where);
}

}  // namespace tessera
