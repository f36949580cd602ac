#pragma once
/// Options structs and their validation.
///
/// Every component (algorithm, model, optimizer, scheduler, dataset, callback, logger, the trainer) has
/// an `<Name>Options` struct with chainable setters and a `visit` member that lists its fields once:
///
///     struct LabelSmoothingOptions {
///       TESSERA_OPTION(double, smoothing) = 0.1;
///       template <class V> void visit(V& v) {
///         v("smoothing", smoothing_, "weight alpha of the uniform distribution", Range::closed_open(0, 1));
///       }
///     };
///
/// That one list drives validation (`validate_options`), recipe reading (`read_options` in recipe.h),
/// the printed defaults in docs and, later, the Python keyword arguments. There is no second set of
/// configuration classes.
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <tessera/error.h>
#include <tessera/time.h>

/// Declares an option field `name_` of type `T` with a chainable setter `name(value)` and a getter `name()`.
#define TESSERA_OPTION(T, name)                          \
 public:                                                \
  auto& name(const T& new_value) {                      \
    this->name##_ = new_value;                          \
    return *this;                                       \
  }                                                     \
  const T& name() const noexcept { return this->name##_; } \
  T& name() noexcept { return this->name##_; }          \
  T name##_

namespace tessera {

/// Allowed numeric range of an option, with open or closed ends.
struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_closed = true;
  bool hi_closed = true;

  static Range any() { return {}; }
  static Range closed(double lo, double hi) { return {lo, hi, true, true}; }
  static Range closed_open(double lo, double hi) { return {lo, hi, true, false}; }
  static Range open_closed(double lo, double hi) { return {lo, hi, false, true}; }
  static Range open(double lo, double hi) { return {lo, hi, false, false}; }
  static Range at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), true, false}; }
  static Range positive() { return {0, std::numeric_limits<double>::infinity(), false, false}; }

  bool contains(double x) const;
  /// "[0, 1)", "> 0", ">= 1", "any number".
  std::string describe() const;
};

/// The allowed values of a string option.
struct Choices {
  std::vector<std::string> values;
  bool contains(const std::string& s) const;
  /// "one of: resize, crop".
  std::string describe() const;
};

/// No constraint beyond the type.
struct Any {};

/// Checks one value; throws InputError "<where>.<name>: <value> is out of range <range>" on failure.
void check_option(const std::string& where, const char* name, double value, const Range& range);
void check_option(const std::string& where, const char* name, const std::string& value, const Choices& choices);

namespace detail {
/// True for an options struct (a type with a `visit` member): such structs nest, alone or in a std::vector
/// (StreamingOptions::streams), and are read, validated and located field by field like the outer one.
struct VisitProbe {
  template <class T, class C>
  void operator()(const char*, T&, const char*, const C&) {}
};
template <class T, class = void>
struct HasVisit : std::false_type {};
template <class T>
struct HasVisit<T, std::void_t<decltype(std::declval<T&>().visit(std::declval<VisitProbe&>()))>> : std::true_type {};

struct Validator {
  std::string where;
  template <class T>
  void operator()(const char* name, T& value, const char* /*help*/, const Range& range) {
    if constexpr (std::is_arithmetic_v<T>) {
      check_option(where, name, static_cast<double>(value), range);
    } else if constexpr (std::is_same_v<T, std::vector<double>> || std::is_same_v<T, std::vector<int64_t>>) {
      for (auto x : value) check_option(where, name, static_cast<double>(x), range);
    }
  }
  void operator()(const char* name, std::string& value, const char* /*help*/, const Choices& choices) {
    check_option(where, name, value, choices);
  }
  template <class T>
  void operator()(const char* name, T& value, const char*, const Any&) {
    if constexpr (HasVisit<T>::value) {
      Validator inner{where + "." + name};
      value.visit(inner);
    }
  }
  template <class T>
  void operator()(const char* name, std::vector<T>& value, const char*, const Any&) {
    if constexpr (HasVisit<T>::value) {
      for (size_t i = 0; i < value.size(); ++i) {
        Validator inner{where + "." + name + "[" + std::to_string(i) + "]"};
        value[i].visit(inner);
      }
    }
  }
};

/// Checks one value against the constraint of the field called `name` (ignores the other fields).
template <class Value>
struct OneOption {
  const std::string& where;
  const char* name;
  const Value& value;
  bool found = false;
  template <class T, class C>
  void operator()(const char* field, T&, const char*, const C& constraint) {
    if (std::string(field) != name) return;
    found = true;
    if constexpr (std::is_same_v<C, Range> && std::is_arithmetic_v<Value>) {
      check_option(where, name, static_cast<double>(value), constraint);
    } else if constexpr (std::is_same_v<C, Choices> && std::is_convertible_v<Value, std::string>) {
      check_option(where, name, std::string(value), constraint);
    }
  }
};
}  // namespace detail

/// Validates every field of an options struct against the ranges its `visit` declares.
/// `where` names the component in messages ("label_smoothing", "optimizer").
template <class Options>
void validate_options(Options& options, const std::string& where) {
  detail::Validator v{where};
  options.visit(v);
}

/// Validates one value as the option `name` of `Options` would be (same ranges, choices and wording), for the
/// functional forms that take an algorithm's options one by one:
///
///     check_option_as<ProgressiveResizingOptions>("resize_batch", "mode", mode);
///     // InputError: resize_batch.mode: "zoom" is not allowed; expected one of: resize, crop
template <class Options, class Value>
void check_option_as(const std::string& where, const char* name, const Value& value) {
  detail::OneOption<Value> v{where, name, value};
  Options options;
  options.visit(v);
  if (!v.found) throw Error(where + ": internal error: no option \"" + name + "\" to validate against");
}

}  // namespace tessera
