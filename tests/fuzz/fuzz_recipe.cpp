// Fuzz target: recipes (YAML) with command-line overrides, and reading Options from them.
// Input: the recipe text, then NUL-separated overrides ("optimizer.sgd.lr=0.05"). Every node of the result is read
// in every way (numbers, times, lists, YAML text), and the root is read into an Options struct with a field of each
// supported type. Contract: tessera::Error (InputError with file:line:col or "<command line> override N"), never
// another exception, crash or sanitizer report.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <tessera/recipe.h>

namespace {

using namespace tessera;

struct FuzzOptions {
  TESSERA_OPTION(int64_t, steps) = 1;
  TESSERA_OPTION(int32_t, depth) = 20;
  TESSERA_OPTION(uint8_t, small) = 0;
  TESSERA_OPTION(double, lr) = 0.1;
  TESSERA_OPTION(float, momentum) = 0.9f;
  TESSERA_OPTION(bool, nesterov) = false;
  TESSERA_OPTION(std::string, mode) = "train";
  TESSERA_OPTION(std::string, name) = "";
  TESSERA_OPTION(Time, max_duration) = Time(1, TimeUnit::Epoch);
  TESSERA_OPTION(std::vector<int64_t>, shape);
  TESSERA_OPTION(std::vector<double>, weights);
  TESSERA_OPTION(std::vector<Time>, milestones);
  TESSERA_OPTION(std::vector<std::string>, columns);
  TESSERA_OPTION(ConfigNode, model);
  template <class V>
  void visit(V& v) {
    v("steps", steps_, "", Range::at_least(1));
    v("depth", depth_, "", Range::closed(1, 200));
    v("small", small_, "", Any{});
    v("lr", lr_, "", Range::positive());
    v("momentum", momentum_, "", Range::closed_open(0, 1));
    v("nesterov", nesterov_, "", Any{});
    v("mode", mode_, "", Choices{{"train", "eval"}});
    v("name", name_, "", Any{});
    v("max_duration", max_duration_, "", Any{});
    v("shape", shape_, "", Range::at_least(1));
    v("weights", weights_, "", Range::any());
    v("milestones", milestones_, "", Any{});
    v("columns", columns_, "", Any{});
    v("model", model_, "", Any{});
  }
};

template <class F>
void attempt(F&& f) {
  try {
    f();
  } catch (const tessera::Error&) {
  }
}

// Reads the first nodes of the recipe (depth first) every way: a budget keeps the executions fast (each failed
// conversion throws), the mutations still reach every kind of value.
void walk(const ConfigNode& node, int& budget) {
  if (--budget < 0) return;
  (void)node.location();
  (void)node.key_location();
  (void)node.describe();
  (void)node.path();
  if (node.is_scalar()) {
    attempt([&] { (void)node.as_double(); });
    attempt([&] { (void)node.as_int(); });
    attempt([&] { (void)node.as_bool(); });
    attempt([&] { (void)node.as_time(); });
    (void)node.as_string();
  }
  if (node.is_sequence()) {
    attempt([&] { (void)node.as_doubles(); });
    attempt([&] { (void)node.as_ints(); });
    attempt([&] { (void)node.as_times(); });
    attempt([&] { (void)node.as_strings(); });
  }
  for (const std::string& key : node.keys()) walk(node.child(key), budget);
  for (const ConfigNode& element : node.elements()) walk(element, budget);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nul = input.find('\0');
  const std::string text(input.substr(0, nul));
  std::vector<std::string> overrides;
  while (nul != std::string_view::npos) {
    const size_t next = input.find('\0', nul + 1);
    overrides.emplace_back(input.substr(nul + 1, next == std::string_view::npos ? next : next - nul - 1));
    nul = next;
  }
  try {
    const Recipe recipe = Recipe::parse(text, "fuzz.yaml", overrides);
    (void)recipe.text();
    const ConfigNode root = recipe.root();
    (void)root.yaml();
    int budget = 24;
    walk(root, budget);
    attempt([&] { root.child("absent").fail_at_key("fuzz", "nothing"); });
    (void)suggest_name("optimizr", root.keys());
    FuzzOptions options;
    attempt([&] { read_options(root, options, ""); });
    if (root.is_map())
      for (const std::string& key : root.keys()) attempt([&] { read_options(root.child(key), options, key); });
  } catch (const tessera::Error&) {
  }
  return 0;
}
