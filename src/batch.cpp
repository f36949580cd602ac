#include <ATen/ATen.h>
#include <fmt/format.h>
#include <tessera/batch.h>
#include <tessera/error.h>
#include <tessera/options.h>

namespace tessera {
namespace {

std::string key_list(const std::vector<std::pair<std::string, at::Tensor>>& parts) {
  if (parts.empty()) return "(none: the batch is empty)";
  std::string out;
  for (const auto& [k, v] : parts) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

int64_t first_dim(const std::string& key, const at::Tensor& t) {
  if (!t.defined()) throw Error("batch part \"" + key + "\" is an undefined tensor");
  if (t.dim() == 0)
    throw Error("batch part \"" + key + "\" is a scalar; every part needs a sample dimension");
  return t.size(0);
}

}  // namespace

Batch::Batch(at::Tensor input, at::Tensor target) {
  parts_.reserve(2);
  parts_.emplace_back(kInput, std::move(input));
  parts_.emplace_back(kTarget, std::move(target));
}

const at::Tensor& Batch::get(const std::string& key) const {
  for (const auto& part : parts_)
    if (part.first == key) return part.second;
  throw Error("batch has no part \"" + key + "\"; available parts: " + key_list(parts_));
}

at::Tensor& Batch::get(const std::string& key) {
  return const_cast<at::Tensor&>(static_cast<const Batch&>(*this).get(key));
}

void Batch::set(const std::string& key, at::Tensor value) {
  for (auto& part : parts_) {
    if (part.first == key) {
      part.second = std::move(value);
      return;
    }
  }
  parts_.emplace_back(key, std::move(value));
}

bool Batch::has(const std::string& key) const {
  for (const auto& part : parts_)
    if (part.first == key) return true;
  return false;
}

void Batch::erase(const std::string& key) {
  for (auto it = parts_.begin(); it != parts_.end(); ++it) {
    if (it->first == key) {
      parts_.erase(it);
      return;
    }
  }
}

int64_t Batch::size() const {
  if (parts_.empty()) return 0;
  return first_dim(parts_.front().first, parts_.front().second);
}

void Batch::validate() const {
  if (parts_.empty()) return;
  const int64_t n = first_dim(parts_.front().first, parts_.front().second);
  for (size_t i = 1; i < parts_.size(); ++i) {
    const int64_t m = first_dim(parts_[i].first, parts_[i].second);
    if (m != n) {
      throw Error("batch parts disagree on the number of samples: \"" + parts_.front().first + "\" has " +
                  std::to_string(n) + ", \"" + parts_[i].first + "\" has " + std::to_string(m) +
                  " (every part's first dimension must be the sample dimension)");
    }
  }
}

std::vector<Batch> Batch::split(int64_t microbatch_size) const {
  const int64_t n = size();
  if (microbatch_size <= 0 || microbatch_size >= n) return {*this};
  validate();
  const int64_t chunks = (n + microbatch_size - 1) / microbatch_size;
  std::vector<Batch> out(static_cast<size_t>(chunks));
  for (auto& b : out) b.parts_.reserve(parts_.size());
  for (const auto& [key, tensor] : parts_) {
    std::vector<at::Tensor> pieces = tensor.split(microbatch_size, 0);
    for (size_t c = 0; c < pieces.size(); ++c) out[c].parts_.emplace_back(key, std::move(pieces[c]));
  }
  return out;
}

Batch Batch::select(const at::Tensor& index) const {
  validate();
  Batch out;
  out.parts_.reserve(parts_.size());
  for (const auto& [key, tensor] : parts_) {
    const at::Tensor idx = index.device() == tensor.device() ? index : index.to(tensor.device());
    out.parts_.emplace_back(key, tensor.index_select(0, idx));
  }
  return out;
}

Batch Batch::to(c10::Device device, bool non_blocking) const {
  Batch out;
  out.parts_.reserve(parts_.size());
  for (const auto& [key, tensor] : parts_) out.parts_.emplace_back(key, tensor.to(device, non_blocking));
  return out;
}

Batch set_seq_length(const Batch& batch, int64_t length, bool truncate) {
  check_option("set_seq_length", "length", static_cast<double>(length), Range::at_least(1));
  const at::Tensor& x = batch.input();
  if (x.dim() < 2) {
    throw InputError(fmt::format("set_seq_length: the input has shape {}; expected sequences [N, S, ...]",
                                 c10::str(x.sizes())));
  }
  const int64_t n = x.size(0), s = x.size(1);
  if (length >= s) return batch;
  const int64_t rows = n * s / length;
  Batch out;
  for (const auto& [key, t] : batch.parts()) {
    const bool sequence = t.defined() && t.dim() >= 2 && t.size(1) == s;
    if (!sequence) {
      if (!truncate) {
        throw InputError(fmt::format(
            "set_seq_length: batch part \"{}\" of shape {} is not a sequence of the input's length {}, so it cannot "
            "follow the tokens into new examples (truncate: false); use truncate: true",
            key, t.defined() ? c10::str(t.sizes()) : std::string("undefined"), s));
      }
      out.set(key, t);
    } else if (truncate) {
      out.set(key, t.narrow(1, 0, length));
    } else {
      std::vector<int64_t> flat{n * s}, chunks{rows, length};
      for (int64_t d = 2; d < t.dim(); ++d) flat.push_back(t.size(d)), chunks.push_back(t.size(d));
      out.set(key, t.reshape(flat).narrow(0, 0, rows * length).reshape(chunks));
    }
  }
  return out;
}

}  // namespace tessera
