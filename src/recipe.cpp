#include <fmt/format.h>
#include <tessera/recipe.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

namespace tessera {
namespace {

constexpr const char* kCommandLine = "<command line>";

/// Where the nodes of a recipe come from: the file name, and which key paths were set by overrides.
struct Source {
  std::string name;
  /// (canonical key path, 1-based override number), in the order the overrides were applied.
  std::vector<std::pair<std::string, int>> overrides;

  /// The override that last replaced `path` or one of its ancestors (0: none, the value is from the file).
  int override_for(const std::string& path) const {
    for (auto it = overrides.rbegin(); it != overrides.rend(); ++it) {
      const std::string& prefix = it->first;
      if (path.compare(0, prefix.size(), prefix) != 0) continue;
      if (path.size() == prefix.size() || path[prefix.size()] == '.' || path[prefix.size()] == '[') {
        return it->second;
      }
    }
    return 0;
  }
};

std::string join_key(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}
std::string join_index(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }

std::string format_number(double x) {
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (std::isnan(x)) return "nan";
  return fmt::format("{}", x);
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

/// "a number > 0", "a whole number in [1, 64]".
std::string describe_range(const Range& r, bool integral) {
  const std::string what = integral ? "a whole number" : "a number";
  const bool no_lo = std::isinf(r.lo) && r.lo < 0;
  const bool no_hi = std::isinf(r.hi) && r.hi > 0;
  if (no_lo && no_hi) return "a finite number";
  if (no_hi) return what + (r.lo_closed ? " >= " : " > ") + format_number(r.lo);
  if (no_lo) return what + (r.hi_closed ? " <= " : " < ") + format_number(r.hi);
  return what + " in " + (r.lo_closed ? "[" : "(") + format_number(r.lo) + ", " + format_number(r.hi) +
         (r.hi_closed ? "]" : ")");
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  // Optimal string alignment: insertions, deletions, substitutions and swaps of neighbours ("mpl" -> "mlp") cost 1.
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

std::string mark_text(const std::string& name, const YAML::Mark& mark) {
  if (mark.is_null()) return name;
  return fmt::format("{}:{}:{}", name, mark.line + 1, mark.column + 1);
}

// ---- YAML emission that keeps quoted strings quoted and flow collections in flow style.
void emit(YAML::Emitter& out, const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      out << YAML::Null;
      break;
    case YAML::NodeType::Scalar:
      if (n.Tag() == "!" || n.Scalar().empty()) {
        out << YAML::DoubleQuoted << n.Scalar();
      } else {
        out << n.Scalar();
      }
      break;
    case YAML::NodeType::Sequence:
      if (n.Style() == YAML::EmitterStyle::Flow) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const auto& e : n) emit(out, e);
      out << YAML::EndSeq;
      break;
    case YAML::NodeType::Map:
      if (n.Style() == YAML::EmitterStyle::Flow) out << YAML::Flow;
      out << YAML::BeginMap;
      for (const auto& kv : n) {
        out << YAML::Key;
        emit(out, kv.first);
        out << YAML::Value;
        emit(out, kv.second);
      }
      out << YAML::EndMap;
      break;
  }
}

std::string to_yaml(const YAML::Node& n) {
  YAML::Emitter out;
  emit(out, n);
  return out.c_str();
}

/// The most values a recipe may hold, aliases expanded: far above any real recipe, far below an alias bomb
/// (each level of `b: &b [*a, *a, ...]` multiplies the values), which would otherwise take minutes to read.
constexpr size_t kMaxRecipeValues = 100000;

/// Walks the tree (aliases expanded) for check_keys: the nodes open above the current one, and the count so
/// far.
struct KeyWalk {
  std::function<std::string(const YAML::Mark&)> where;
  std::vector<YAML::Node> open;
  size_t values = 0;
};

void check_keys(const YAML::Node& n, const std::string& path, KeyWalk& walk) {
  const std::string at = path.empty() ? "" : path + ": ";
  for (const YAML::Node& above : walk.open) {
    if (above.is(n)) {  // yaml-cpp links an alias to its anchor's node: `a: &a {b: *a}` is a cycle
      throw InputError(
          walk.where(n.Mark()) + ": " + at +
          "an alias inside the value of its own anchor, which never ends; expected a tree of values");
    }
  }
  if (++walk.values > kMaxRecipeValues) {
    throw InputError(walk.where(n.Mark()) + ": " + at + "the recipe holds more than " +
                     std::to_string(kMaxRecipeValues) +
                     " values once its aliases are expanded; expected a recipe "
                     "(aliases of aliases multiply)");
  }
  walk.open.push_back(n);
  if (n.IsMap()) {
    std::map<std::string, YAML::Mark> seen;
    for (const auto& kv : n) {
      if (!kv.first.IsScalar()) {
        throw InputError(walk.where(kv.first.Mark()) + ": " + at +
                         "a key must be a plain name; expected key: value");
      }
      const std::string key = kv.first.Scalar();
      const std::string key_path = join_key(path, key);
      auto [it, inserted] = seen.emplace(key, kv.first.Mark());
      if (!inserted) {
        throw InputError(walk.where(kv.first.Mark()) + ": " + key_path + ": duplicate key \"" + key +
                         "\" (first given at line " + std::to_string(it->second.line + 1) +
                         "); expected each key once");
      }
      check_keys(kv.second, key_path, walk);
    }
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) check_keys(n[i], join_index(path, i), walk);
  }
  walk.open.pop_back();
}

/// Rejects duplicate keys (yaml-cpp keeps both silently), keys that are not plain scalars, aliases inside
/// their own anchor's value, and alias bombs.
void check_keys(const YAML::Node& n, const std::string& path,
                const std::function<std::string(const YAML::Mark&)>& where) {
  KeyWalk walk{where, {}, 0};
  check_keys(n, path, walk);
}

}  // namespace

// =======================================================================================================
// ConfigNode

struct ConfigNode::Impl {
  YAML::Node node;  // meaningful only when present
  bool present = false;
  std::string path;
  YAML::Mark key_mark = YAML::Mark::null_mark();
  YAML::Mark parent_mark = YAML::Mark::null_mark();
  std::shared_ptr<const Source> source;

  /// The best position for the value: its own mark, its key's for empty values, the parent's when absent.
  YAML::Mark mark() const {
    if (present && !node.IsNull() && !node.Mark().is_null()) return node.Mark();
    if (!key_mark.is_null()) return key_mark;
    if (present && !node.Mark().is_null()) return node.Mark();
    return parent_mark;
  }
};

namespace {
std::shared_ptr<const ConfigNode::Impl> empty_impl() {
  static const auto impl = [] {
    auto i = std::make_shared<ConfigNode::Impl>();
    i->source = std::make_shared<Source>();
    return std::shared_ptr<const ConfigNode::Impl>(i);
  }();
  return impl;
}
}  // namespace

ConfigNode::ConfigNode() : impl_(empty_impl()) {}
ConfigNode::ConfigNode(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
ConfigNode::~ConfigNode() = default;
ConfigNode::ConfigNode(const ConfigNode&) = default;
ConfigNode& ConfigNode::operator=(const ConfigNode&) = default;

bool ConfigNode::present() const noexcept { return impl_->present; }
bool ConfigNode::is_null() const { return impl_->present && impl_->node.IsNull(); }
bool ConfigNode::is_map() const { return impl_->present && impl_->node.IsMap(); }
bool ConfigNode::is_sequence() const { return impl_->present && impl_->node.IsSequence(); }
bool ConfigNode::is_scalar() const { return impl_->present && impl_->node.IsScalar(); }
size_t ConfigNode::size() const { return is_map() || is_sequence() ? impl_->node.size() : 0; }

std::vector<std::string> ConfigNode::keys() const {
  std::vector<std::string> out;
  if (!is_map()) return out;
  for (const auto& kv : impl_->node) out.push_back(kv.first.Scalar());
  return out;
}

bool ConfigNode::has(const std::string& key) const {
  if (!is_map()) return false;
  for (const auto& kv : impl_->node) {
    if (kv.first.Scalar() == key) return true;
  }
  return false;
}

ConfigNode ConfigNode::child(const std::string& key) const {
  auto impl = std::make_shared<Impl>();
  impl->path = join_key(impl_->path, key);
  impl->source = impl_->source;
  impl->parent_mark = impl_->mark();
  if (is_map()) {
    for (const auto& kv : impl_->node) {
      if (kv.first.Scalar() == key) {
        impl->node = kv.second;
        impl->present = true;
        impl->key_mark = kv.first.Mark();
        break;
      }
    }
  }
  return ConfigNode(std::move(impl));
}

std::vector<ConfigNode> ConfigNode::elements() const {
  std::vector<ConfigNode> out;
  if (!is_sequence()) return out;
  const YAML::Mark parent = impl_->mark();
  size_t i = 0;
  for (const auto& e : impl_->node) {
    auto impl = std::make_shared<Impl>();
    impl->node = static_cast<const YAML::Node&>(e);
    impl->present = true;
    impl->path = join_index(impl_->path, i++);
    impl->source = impl_->source;
    impl->parent_mark = parent;
    out.emplace_back(std::move(impl));
  }
  return out;
}

std::string ConfigNode::scalar() const { return is_scalar() ? impl_->node.Scalar() : std::string(); }

double ConfigNode::as_double() const {
  if (is_scalar()) {
    try {
      return impl_->node.as<double>();
    } catch (const YAML::Exception&) {
    }
  }
  fail("expected a number, got " + describe());
}

int64_t ConfigNode::as_int() const {
  if (is_scalar()) {
    const std::string text = trim(scalar());
    const char* begin = text.data() + (!text.empty() && text[0] == '+' ? 1 : 0);
    const char* end = text.data() + text.size();
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(begin, end, v);
    if (ec == std::errc() && ptr == end && begin != end) return v;
    const std::string int64_range = "a whole number in [" +
                                    std::to_string(std::numeric_limits<int64_t>::min()) + ", " +
                                    std::to_string(std::numeric_limits<int64_t>::max()) + "]";
    if (ec == std::errc::result_out_of_range) fail(text + " is out of range", int64_range);
    // "1e4" is a whole number too.
    double d = std::nan("");
    try {
      d = impl_->node.as<double>();
    } catch (const YAML::Exception&) {
    }
    if (std::isfinite(d) && std::floor(d) == d) {
      // 2^63 is the first double outside int64_t.
      if (std::fabs(d) >= 9223372036854775808.0) fail(text + " is out of range", int64_range);
      return static_cast<int64_t>(d);
    }
  }
  fail("expected a whole number, got " + describe());
}

bool ConfigNode::as_bool() const {
  if (is_scalar()) {
    try {
      return impl_->node.as<bool>();
    } catch (const YAML::Exception&) {
    }
  }
  fail("expected true or false, got " + describe());
}

std::string ConfigNode::as_string() const {
  if (is_null()) return "";
  if (is_scalar()) return scalar();
  fail("expected a string, got " + describe());
}

Time ConfigNode::as_time() const {
  if (!is_scalar()) fail("expected a time such as 10ep, 500ba, 2048sp or 0.25dur, got " + describe());
  try {
    return Time::parse(trim(scalar()));
  } catch (const InputError& e) {
    fail(e.what());
  }
}

namespace {
template <class T, class Read>
std::vector<T> read_list(const ConfigNode& node, const std::string& what, Read read) {
  detail::expect_list(node, what);
  std::vector<T> out;
  for (const auto& e : node.elements()) out.push_back(read(e));
  return out;
}
}  // namespace

std::vector<double> ConfigNode::as_doubles() const {
  return read_list<double>(*this, "a list of numbers", [](const ConfigNode& e) { return e.as_double(); });
}
std::vector<int64_t> ConfigNode::as_ints() const {
  return read_list<int64_t>(*this, "a list of whole numbers", [](const ConfigNode& e) { return e.as_int(); });
}
std::vector<Time> ConfigNode::as_times() const {
  return read_list<Time>(*this, "a list of times such as [10ep, 20ep]",
                         [](const ConfigNode& e) { return e.as_time(); });
}
std::vector<std::string> ConfigNode::as_strings() const {
  return read_list<std::string>(*this, "a list of strings",
                                [](const ConfigNode& e) { return e.as_string(); });
}

const std::string& ConfigNode::path() const { return impl_->path; }
const std::string& ConfigNode::file() const { return impl_->source->name; }

int ConfigNode::line() const {
  const YAML::Mark m = impl_->mark();
  return m.is_null() ? 0 : m.line + 1;
}
int ConfigNode::column() const {
  const YAML::Mark m = impl_->mark();
  return m.is_null() ? 0 : m.column + 1;
}

std::string ConfigNode::location() const {
  if (int n = impl_->source->override_for(impl_->path))
    return std::string(kCommandLine) + " override " + std::to_string(n);
  return mark_text(impl_->source->name, impl_->mark());
}

std::string ConfigNode::key_location() const {
  if (int n = impl_->source->override_for(impl_->path))
    return std::string(kCommandLine) + " override " + std::to_string(n);
  if (impl_->present && !impl_->key_mark.is_null()) return mark_text(impl_->source->name, impl_->key_mark);
  return location();
}

std::string ConfigNode::describe() const {
  if (!impl_->present) return "nothing";
  switch (impl_->node.Type()) {
    case YAML::NodeType::Null:
      return "an empty value";
    case YAML::NodeType::Scalar:
      return "\"" + impl_->node.Scalar() + "\"";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "nothing";
  }
}

namespace {
std::string message(const std::string& location, const std::string& path, const std::string& problem,
                    const std::string& expected) {
  std::string out = location.empty() ? "" : location + ": ";
  if (!path.empty()) out += path + ": ";
  out += problem;
  if (!expected.empty()) out += "; expected " + expected;
  return out;
}
}  // namespace

void ConfigNode::fail(const std::string& problem, const std::string& expected) const {
  throw InputError(message(location(), impl_->path, problem, expected));
}

void ConfigNode::fail_at_key(const std::string& problem, const std::string& expected) const {
  throw InputError(message(key_location(), impl_->path, problem, expected));
}

std::string ConfigNode::yaml() const { return impl_->present ? to_yaml(impl_->node) : std::string(); }

std::string suggest_name(const std::string& word, const std::vector<std::string>& known) {
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  std::string best;
  size_t best_distance = limit + 1;
  for (const auto& k : known) {
    const size_t d = edit_distance(word, k);
    // Never suggest a name that shares nothing with the word ("x" -> "lr").
    if (d <= limit && d < best_distance && d < std::max(word.size(), k.size())) {
      best = k;
      best_distance = d;
    }
  }
  if (!best.empty()) return best;
  // Otherwise a name that starts the word or that the word starts ("training" -> "train").
  for (const auto& k : known) {
    const std::string& shorter = k.size() < word.size() ? k : word;
    const std::string& longer = k.size() < word.size() ? word : k;
    if (shorter.size() >= 3 && longer.compare(0, shorter.size(), shorter) == 0) return k;
  }
  return best;
}

// =======================================================================================================
// read_options helpers

namespace detail {

void expect_options_map(const ConfigNode& node, const std::string& where) {
  if (!node.present() || node.is_null() || node.is_map()) return;
  node.fail("expected a map of options such as {name: value}, got " + node.describe());
}

void reject_unknown_keys(const ConfigNode& node, const std::vector<std::string>& known,
                         const std::string& where) {
  if (!node.is_map()) return;
  for (const auto& key : node.keys()) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    const std::string in = !where.empty() ? where : (!node.path().empty() ? node.path() : "the recipe");
    std::string problem = "unknown key \"" + key + "\" in " + in;
    const std::string guess = suggest_name(key, known);
    if (!guess.empty()) problem += "; did you mean \"" + guess + "\"?";
    problem += known.empty() ? " (it takes no options)" : " (known keys: " + join_names(known) + ")";
    node.child(key).fail_at_key(problem);
  }
}

void expect_list(const ConfigNode& node, const std::string& what) {
  if (!node.is_sequence()) node.fail("expected " + what + ", got " + node.describe());
}

void check_range(const ConfigNode& node, double value, const Range& range, bool integral) {
  if (range.contains(value)) return;
  const std::string text = node.is_scalar() ? trim(node.scalar()) : format_number(value);
  node.fail(text + " is out of range", describe_range(range, integral));
}

void check_huge_whole_number(const ConfigNode& node, const Range& range) {
  if (!node.is_scalar()) return;
  const std::string text = trim(node.scalar());
  char* end = nullptr;
  const double d = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !std::isfinite(d) || std::fabs(d) < 9223372036854775808.0) return;
  check_range(node, d, range, true);  // outside the option's own range: says that range
  const int64_t limit = d > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  node.fail(text + " is out of range",
            describe_range(range, true) + " (" + (d > 0 ? "at most " : "at least ") + std::to_string(limit) + ")");
}

void check_choice(const ConfigNode& node, const std::string& value, const Choices& choices) {
  if (std::find(choices.values.begin(), choices.values.end(), value) != choices.values.end()) return;
  std::string expected = "one of: " + join_names(choices.values);
  const std::string guess = suggest_name(value, choices.values);
  if (!guess.empty()) expected += " (did you mean \"" + guess + "\"?)";
  node.fail("\"" + value + "\" is not allowed", expected);
}

}  // namespace detail

// =======================================================================================================
// Recipe

struct Recipe::Impl {
  std::string path;
  std::vector<std::string> overrides;
  YAML::Node root;
  std::shared_ptr<const Source> source;
};

namespace {

/// One step of an override's key path: a map key or a list index.
struct PathToken {
  std::string key;
  bool is_index = false;
  size_t index = 0;
};

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

[[noreturn]] void bad_override_syntax(const std::string& arg, const std::string& why = "") {
  throw InputError("override \"" + arg + "\": " + (why.empty() ? "" : why + "; ") +
                   "expected key.path=value");
}

/// A list index of an override (all digits); more than 9 digits is more entries than any recipe list has (and
/// could overflow): an InputError, not std::stoul's out_of_range.
size_t list_index(const std::string& arg, const std::string& digits) {
  if (digits.size() > 9) bad_override_syntax(arg, "list index " + digits + " is too large");
  return std::stoul(digits);
}

/// "optimizer.sgd.lr" -> [optimizer, sgd, lr]; "schedulers[0].cosine" -> [schedulers, #0, cosine].
std::vector<PathToken> parse_key_path(const std::string& arg, const std::string& text) {
  std::vector<PathToken> tokens;
  size_t i = 0;
  const size_t n = text.size();
  bool expect_key = true;
  while (i < n) {
    if (expect_key) {
      size_t j = i;
      while (j < n && text[j] != '.' && text[j] != '[') ++j;
      const std::string key = text.substr(i, j - i);
      if (key.empty()) bad_override_syntax(arg, "empty key in \"" + text + "\"");
      PathToken t;
      t.key = key;
      tokens.push_back(t);
      i = j;
      expect_key = false;
    } else if (text[i] == '.') {
      ++i;
      if (i == n) bad_override_syntax(arg, "key path \"" + text + "\" ends with '.'");
      expect_key = true;
    } else if (text[i] == '[') {
      const size_t close = text.find(']', i);
      if (close == std::string::npos) bad_override_syntax(arg, "missing ']' in \"" + text + "\"");
      const std::string digits = text.substr(i + 1, close - i - 1);
      if (!all_digits(digits)) bad_override_syntax(arg, "list index \"" + digits + "\" is not a number");
      PathToken t;
      t.is_index = true;
      t.index = list_index(arg, digits);
      tokens.push_back(t);
      i = close + 1;
    } else {
      bad_override_syntax(arg, "unexpected '" + std::string(1, text[i]) + "' in \"" + text + "\"");
    }
  }
  if (tokens.empty()) bad_override_syntax(arg);
  return tokens;
}

/// Finds `key` in map `map` (without yaml-cpp's insert-on-lookup).
std::optional<YAML::Node> find_key(const YAML::Node& map, const std::string& key) {
  for (const auto& kv : map) {
    if (kv.first.Scalar() == key) return kv.second;
  }
  return std::nullopt;
}

std::vector<std::string> map_keys(const YAML::Node& map) {
  std::vector<std::string> out;
  for (const auto& kv : map) out.push_back(kv.first.Scalar());
  return out;
}

/// Applies override number `number` (1-based) to `root`; returns the canonical key path it replaced (the first
/// section it created, when it created one: all of that section comes from the override).
std::string apply_override(YAML::Node& root, const std::string& arg, int number) {
  const size_t eq = arg.find('=');
  if (eq == std::string::npos) bad_override_syntax(arg);
  const std::string key_text = trim(arg.substr(0, eq));
  if (key_text.empty()) bad_override_syntax(arg, "the key path is empty");
  const std::string value_text = arg.substr(eq + 1);
  const std::vector<PathToken> tokens = parse_key_path(arg, key_text);
  const std::string where = std::string(kCommandLine) + " override " + std::to_string(number);

  auto fail = [&](const std::string& why) -> void { throw InputError("override \"" + arg + "\": " + why); };

  YAML::Node cur;
  cur.reset(root);
  std::string path, created;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const bool last = t + 1 == tokens.size();
    PathToken tok = tokens[t];
    if (!tok.is_index && cur.IsSequence() && all_digits(tok.key)) {
      tok.is_index = true;
      tok.index = list_index(arg, tok.key);
    }
    const std::string here = path.empty() ? "the recipe's top level" : path;
    if (tok.is_index) {
      if (!cur.IsSequence()) fail(here + " is not a list, so it has no entry " + std::to_string(tok.index));
      const size_t size = cur.size();
      const std::string next_path = join_index(path, tok.index);
      if (last) {
        if (tok.index > size) {
          fail(path + " has " + std::to_string(size) + " entries; expected an index up to " +
               std::to_string(size) + " (" + std::to_string(size) + " appends)");
        }
        YAML::Node value;
        try {
          value = trim(value_text).empty() ? YAML::Node(std::string()) : YAML::Load(value_text);
        } catch (const YAML::ParserException& e) {
          throw InputError(where + ": " + next_path + ": invalid YAML value \"" + value_text +
                           "\": " + e.msg);
        }
        check_keys(value, next_path, [&](const YAML::Mark&) { return where; });
        if (tok.index == size) {
          cur.push_back(value);
        } else {
          YAML::Node slot = cur[tok.index];
          slot = value;
        }
        return next_path;
      }
      if (tok.index >= size) {
        fail(path + " has " + std::to_string(size) + " entries; expected an index below " +
             std::to_string(size));
      }
      YAML::Node next = cur[tok.index];
      cur.reset(next);
      path = next_path;
      continue;
    }
    const std::string next_path = join_key(path, tok.key);
    if (last) {
      if (!cur.IsMap() && !cur.IsNull()) fail(here + " is not a map, so it has no key \"" + tok.key + "\"");
      YAML::Node value;
      try {
        value = trim(value_text).empty() ? YAML::Node(std::string()) : YAML::Load(value_text);
      } catch (const YAML::ParserException& e) {
        throw InputError(where + ": " + next_path + ": invalid YAML value \"" + value_text + "\": " + e.msg);
      }
      check_keys(value, next_path, [&](const YAML::Mark&) { return where; });
      if (auto existing = find_key(cur, tok.key)) {
        YAML::Node slot = *existing;
        slot = value;
      } else {
        cur[tok.key] = value;
      }
      return created.empty() ? next_path : created;
    }
    if (!cur.IsMap()) fail(here + " is not a map, so it has no key \"" + tok.key + "\"");
    auto found = find_key(cur, tok.key);
    if (!found) {
      // A new section (checkpoint.folder=x on a recipe without checkpoint:) is created; a near miss of an
      // existing key is taken for a typo. Unknown keys are caught later by the components' options.
      const auto keys = map_keys(cur);
      const std::string guess = suggest_name(tok.key, keys);
      if (!guess.empty()) {
        fail(next_path + " does not exist; did you mean \"" + join_key(path, guess) + "\"? (keys of " + here +
             ": " + join_names(keys) + ")");
      }
      cur[tok.key] = YAML::Node(YAML::NodeType::Map);
      found = find_key(cur, tok.key);
      if (created.empty()) created = next_path;
    }
    cur.reset(*found);
    path = next_path;
  }
  return path;  // not reached
}

}  // namespace

Recipe::Recipe(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Recipe Recipe::load(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw InputError("recipe file \"" + path + "\" not found");
  if (std::filesystem::is_directory(path, ec)) {
    throw InputError("recipe file \"" + path + "\" is a directory; expected a YAML file");
  }
  if (!std::filesystem::is_regular_file(path, ec)) {  // a device or a pipe could be read forever
    throw InputError("recipe file \"" + path + "\" is not a regular file; expected a YAML file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("recipe file \"" + path + "\" cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path, overrides);
}

Recipe Recipe::parse(const std::string& text, const std::string& name,
                     const std::vector<std::string>& overrides) {
  auto impl = std::make_shared<Impl>();
  impl->path = name;
  impl->overrides = overrides;
  try {
    std::vector<YAML::Node> documents = YAML::LoadAll(text);
    if (documents.size() > 1) {  // `---` or `...` then more: the rest would be dropped without a word
      throw InputError(
          mark_text(name, documents[1].Mark()) +
          ": a second YAML document (after --- or ...); a recipe is one document: merge them or remove "
          "the marker");
    }
    if (!documents.empty()) impl->root = documents.front();
  } catch (const YAML::DeepRecursion& e) {
    throw InputError(mark_text(name, e.mark) +
                     ": values nested too deeply for the YAML reader; expected a recipe");
  } catch (const YAML::ParserException& e) {
    throw InputError(mark_text(name, e.mark) + ": YAML syntax error: " + e.msg);
  }
  if (!impl->root.IsDefined() || impl->root.IsNull()) impl->root = YAML::Node(YAML::NodeType::Map);
  if (!impl->root.IsMap()) {
    throw InputError(mark_text(name, impl->root.Mark()) +
                     ": a recipe must be a map of keys (model:, data:, ...), got " +
                     (impl->root.IsSequence() ? std::string("a list") : "\"" + impl->root.Scalar() + "\""));
  }
  check_keys(impl->root, "", [&](const YAML::Mark& m) { return mark_text(name, m); });

  auto source = std::make_shared<Source>();
  source->name = name;
  for (size_t i = 0; i < overrides.size(); ++i) {
    const int number = static_cast<int>(i) + 1;
    source->overrides.emplace_back(apply_override(impl->root, overrides[i], number), number);
  }
  impl->source = source;
  return Recipe(std::move(impl));
}

ConfigNode Recipe::root() const {
  auto impl = std::make_shared<ConfigNode::Impl>();
  impl->node = impl_->root;
  impl->present = true;
  impl->source = impl_->source;
  return ConfigNode(std::move(impl));
}

const std::string& Recipe::path() const { return impl_->path; }
const std::vector<std::string>& Recipe::overrides() const { return impl_->overrides; }
std::string Recipe::text() const { return to_yaml(impl_->root) + "\n"; }

}  // namespace tessera
