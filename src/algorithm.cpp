#include <tessera/algorithm.h>

#include <algorithm>

namespace tessera {

const char* resource_name(Resource r) {
  switch (r) {
    case Resource::ModelStructure: return "model structure";
    case Resource::Parameters: return "parameters";
    case Resource::OptimizerGroups: return "optimizer groups";
    case Resource::Inputs: return "inputs";
    case Resource::Targets: return "targets";
    case Resource::BatchRows: return "batch rows";
    case Resource::Resolution: return "resolution";
    case Resource::Outputs: return "outputs";
    case Resource::Loss: return "loss";
    case Resource::Gradients: return "gradients";
    case Resource::LearningRate: return "learning rate";
    case Resource::Buffers: return "buffers";
    case Resource::SequenceLength: return "sequence length";
  }
  return "unknown resource";
}

std::string Selector::describe() const {
  if (!algorithm.empty()) return algorithm;
  if (writes) return std::string("writers of ") + resource_name(*writes);
  return "nothing";
}

std::vector<Event> AlgorithmSpec::events() const {
  std::vector<Event> out;
  for (const auto& a : accesses) {
    if (std::find(out.begin(), out.end(), a.event) == out.end()) out.push_back(a.event);
  }
  return out;
}

bool AlgorithmSpec::acts_on(Event e) const {
  return std::any_of(accesses.begin(), accesses.end(), [e](const Access& a) { return a.event == e; });
}

namespace {
bool touches(const std::vector<Access>& accesses, Resource r, std::optional<Event> at, bool write) {
  for (const auto& a : accesses) {
    if (at && a.event != *at) continue;
    const auto& list = write ? a.writes : a.reads;
    if (std::find(list.begin(), list.end(), r) != list.end()) return true;
  }
  return false;
}
}  // namespace

bool AlgorithmSpec::writes(Resource r, std::optional<Event> at) const { return touches(accesses, r, at, true); }
bool AlgorithmSpec::reads(Resource r, std::optional<Event> at) const { return touches(accesses, r, at, false); }

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::Fp32: return "fp32";
    case Precision::AmpBf16: return "amp_bf16";
    case Precision::AmpFp16: return "amp_fp16";
  }
  return "unknown";
}

}  // namespace tessera
