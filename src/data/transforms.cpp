#include <ATen/ATen.h>
#include <fmt/format.h>
#include <tessera/data/transforms.h>
#include <tessera/error.h>

#include <algorithm>
#include <cstring>

namespace tessera::data {
namespace {

std::string describe_values(const std::vector<double>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

// Checks an image batch: [N, C, H, W] or more generally [N, ..., H, W].
void require_images(const at::Tensor& input, const char* transform, int64_t min_dim) {
  if (input.dim() < min_dim)
    throw InputError(std::string(transform) +
                     ": expects image inputs of shape [N, C, H, W], got a tensor with " +
                     std::to_string(input.dim()) + " dimension(s)");
}

// True when nobody but this handle can see the tensor's memory (the loader's freshly gathered batches):
// then a transform may work in place and the batch costs no allocation beyond its own.
bool exclusively_owned(const at::Tensor& t) {
  return !t.requires_grad() && t.use_count() == 1 && t.storage().use_count() == 1;
}

// Contiguous CPU memory that can be walked with raw pointers.
bool raw_cpu(const at::Tensor& t) { return t.is_cpu() && t.is_contiguous(); }

template <class T>
void reverse_rows(char* data, int64_t rows, int64_t w) {
  auto* p = reinterpret_cast<T*>(data);
  for (int64_t r = 0; r < rows; ++r) std::reverse(p + r * w, p + (r + 1) * w);
}

// Reverses `rows` rows of `w` elements of `elem` (1, 2, 4 or 8) bytes each, in place.
void reverse_rows(char* data, int64_t rows, int64_t w, int64_t elem) {
  switch (elem) {
    case 1:
      reverse_rows<uint8_t>(data, rows, w);
      break;
    case 2:
      reverse_rows<uint16_t>(data, rows, w);
      break;
    case 4:
      reverse_rows<uint32_t>(data, rows, w);
      break;
    default:
      reverse_rows<uint64_t>(data, rows, w);
      break;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Normalize

Normalize::Normalize(NormalizeOptions options) : options_(std::move(options)) {
  const auto& m = options_.mean();
  const auto& s = options_.std();
  if (m.empty() || s.empty()) throw InputError("normalize: mean and std need at least one value each");
  if (m.size() != s.size() && m.size() != 1 && s.size() != 1)
    throw InputError("normalize: mean has " + std::to_string(m.size()) + " values but std has " +
                     std::to_string(s.size()) +
                     "; give one value per channel (or one value for all channels)");
  for (double x : s)
    if (!(x > 0)) throw InputError("normalize.std: " + describe_values(s) + " must all be > 0");
}

void Normalize::apply(Batch& batch, Rng& /*rng*/) const {
  at::Tensor& input = batch.input();
  const auto& m = options_.mean();
  const auto& s = options_.std();
  const at::ScalarType dtype = input.is_floating_point() ? input.scalar_type() : at::kFloat;
  const bool in_place = input.scalar_type() == dtype && exclusively_owned(input);
  if (m.size() == 1 && s.size() == 1) {
    if (in_place) {
      input.sub_(m[0]).div_(s[0]);
    } else {
      input = at::sub(input.to(dtype), m[0]).div_(s[0]);
    }
    return;
  }
  require_images(input, "normalize", 2);
  const int64_t channels = input.size(1);
  const auto count = static_cast<int64_t>(std::max(m.size(), s.size()));
  if (count != channels)
    throw InputError("normalize: " + std::to_string(count) + " per-channel values (mean " +
                     describe_values(m) + ", std " + describe_values(s) + ") for an input with " +
                     std::to_string(channels) +
                     " channels (shape [N, C, ...], C = " + std::to_string(channels) + ")");
  std::vector<int64_t> shape(static_cast<size_t>(input.dim()), 1);
  shape[1] = channels;
  const auto opts = at::TensorOptions().dtype(dtype).device(input.device());
  at::Tensor mean = at::tensor(at::ArrayRef<double>(m), at::TensorOptions(at::kDouble))
                        .to(opts)
                        .view(m.size() == 1 ? std::vector<int64_t>(shape.size(), 1) : shape);
  at::Tensor std = at::tensor(at::ArrayRef<double>(s), at::TensorOptions(at::kDouble))
                       .to(opts)
                       .view(s.size() == 1 ? std::vector<int64_t>(shape.size(), 1) : shape);
  if (in_place) {
    input.sub_(mean).div_(std);
  } else {
    input = at::sub(input.to(dtype), mean).div_(std);
  }
}

// ---------------------------------------------------------------------------------------------
// RandomCrop

RandomCrop::RandomCrop(RandomCropOptions options) : options_(options) {
  if (options_.padding() < 0)
    throw InputError("random_crop.padding: " + std::to_string(options_.padding()) + " is out of range >= 0");
}

void RandomCrop::apply(Batch& batch, Rng& rng) const {
  const int64_t p = options_.padding();
  if (p == 0) return;
  at::Tensor& input = batch.input();
  require_images(input, "random_crop", 3);
  if (input.numel() == 0) return;
  const int64_t n = input.size(0);
  const int64_t h = input.size(-2);
  const int64_t w = input.size(-1);
  const auto span = static_cast<uint64_t>(2 * p + 1);
  // The crop window of example i, in original coordinates, starts at (sy, sx) in [-p, p]^2: output pixel
  // (r, c) is input pixel (r + sy, c + sx), or zero where that falls in the padding.
  const int64_t planes = input.numel() / (n * h * w);  // images per example (channels...), cropped alike
  const auto elem = static_cast<int64_t>(input.element_size());
  if (raw_cpu(input) && exclusively_owned(input)) {
    // In place: shift the rows with memmove (walking away from the overlap) and zero the exposed border.
    auto* data = static_cast<char*>(input.data_ptr());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t sy = static_cast<int64_t>(rng.below(span)) - p;
      const int64_t sx = static_cast<int64_t>(rng.below(span)) - p;
      const int64_t r0 = std::max<int64_t>(0, -sy), r1 = std::min<int64_t>(h, h - sy);
      const int64_t c0 = std::max<int64_t>(0, -sx), c1 = std::min<int64_t>(w, w - sx);
      for (int64_t c = 0; c < planes; ++c) {
        char* plane = data + (i * planes + c) * h * w * elem;
        if (r1 <= r0 || c1 <= c0) {
          std::memset(plane, 0, static_cast<size_t>(h * w * elem));
          continue;
        }
        const auto bytes = static_cast<size_t>((c1 - c0) * elem);
        const auto move_row = [&](int64_t r) {
          std::memmove(plane + (r * w + c0) * elem, plane + ((r + sy) * w + c0 + sx) * elem, bytes);
          std::memset(plane + r * w * elem, 0, static_cast<size_t>(c0 * elem));
          std::memset(plane + (r * w + c1) * elem, 0, static_cast<size_t>((w - c1) * elem));
        };
        if (sy >= 0) {
          for (int64_t r = r0; r < r1; ++r) move_row(r);
        } else {
          for (int64_t r = r1 - 1; r >= r0; --r) move_row(r);
        }
        std::memset(plane, 0, static_cast<size_t>(r0 * w * elem));
        std::memset(plane + r1 * w * elem, 0, static_cast<size_t>((h - r1) * w * elem));
      }
    }
    return;
  }
  at::Tensor out = at::zeros_like(input, at::MemoryFormat::Contiguous);
  const bool raw = raw_cpu(input);
  const auto* src = raw ? static_cast<const char*>(input.data_ptr()) : nullptr;
  auto* dst = raw ? static_cast<char*>(out.data_ptr()) : nullptr;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t sy = static_cast<int64_t>(rng.below(span)) - p;
    const int64_t sx = static_cast<int64_t>(rng.below(span)) - p;
    const int64_t r0 = std::max<int64_t>(0, -sy), r1 = std::min<int64_t>(h, h - sy);
    const int64_t c0 = std::max<int64_t>(0, -sx), c1 = std::min<int64_t>(w, w - sx);
    if (r1 <= r0 || c1 <= c0) continue;
    if (raw) {
      // Row copies straight between the buffers: a narrow()+copy_() per example costs more than the copy.
      const auto bytes = static_cast<size_t>((c1 - c0) * elem);
      for (int64_t c = 0; c < planes; ++c) {
        const int64_t plane = (i * planes + c) * h * w;
        for (int64_t r = r0; r < r1; ++r)
          std::memcpy(dst + (plane + r * w + c0) * elem, src + (plane + (r + sy) * w + c0 + sx) * elem,
                      bytes);
      }
    } else {
      out[i]
          .narrow(-2, r0, r1 - r0)
          .narrow(-1, c0, c1 - c0)
          .copy_(input[i].narrow(-2, r0 + sy, r1 - r0).narrow(-1, c0 + sx, c1 - c0));
    }
  }
  input = std::move(out);
}

// ---------------------------------------------------------------------------------------------
// HorizontalFlip

HorizontalFlip::HorizontalFlip(HorizontalFlipOptions options) : options_(options) {
  if (!(options_.p() >= 0 && options_.p() <= 1))
    throw InputError("horizontal_flip.p: " + fmt::format("{:g}", options_.p()) + " is out of range [0, 1]");
}

void HorizontalFlip::apply(Batch& batch, Rng& rng) const {
  at::Tensor& input = batch.input();
  require_images(input, "horizontal_flip", 2);
  const int64_t n = input.size(0);
  const double p = options_.p();
  if (p == 0 || input.numel() == 0) return;
  at::Tensor mask = at::empty({n}, at::TensorOptions(at::kBool));
  bool* mp = mask.data_ptr<bool>();
  int64_t flipped = 0;
  for (int64_t i = 0; i < n; ++i) {
    mp[i] = rng.uniform() < p;
    flipped += mp[i];
  }
  if (flipped == 0) return;
  const auto elem = static_cast<int64_t>(input.element_size());
  const bool plain_elem = elem == 1 || elem == 2 || elem == 4 || elem == 8;
  if (plain_elem && raw_cpu(input) && exclusively_owned(input)) {
    // In place, row by row.
    const int64_t w = input.size(-1);
    const int64_t rows = input.numel() / (n * w);  // rows per example
    auto* data = static_cast<char*>(input.data_ptr());
    for (int64_t i = 0; i < n; ++i)
      if (mp[i]) reverse_rows(data + i * rows * w * elem, rows, w, elem);
    return;
  }
  if (flipped == n) {
    input = input.flip({-1});
    return;
  }
  std::vector<int64_t> shape(static_cast<size_t>(input.dim()), 1);
  shape[0] = n;
  input = at::where(mask.to(input.device()).view(shape), input.flip({-1}), input);
}

MaskTokens::MaskTokens(MaskTokensOptions options) : options_(std::move(options)) {
  validate_options(options_, "mask_tokens");
  if (options_.replace_with_mask() + options_.replace_with_random() > 1.0) {
    throw InputError(fmt::format("mask_tokens: replace_with_mask ({}) + replace_with_random ({}) is more than 1; "
                                 "expected shares of the hidden tokens adding up to at most 1",
                                 options_.replace_with_mask(), options_.replace_with_random()));
  }
}

void MaskTokens::apply(Batch& batch, Rng& rng) const {
  at::Tensor& given = batch.input();
  const auto type = given.scalar_type();
  if (given.dim() != 2 || at::isFloatingType(type) || at::isComplexType(type) || type == at::kBool) {
    throw InputError(fmt::format("mask_tokens: input of shape {} and type {}; expected integer token ids [N, S]",
                                 c10::str(given.sizes()), c10::toString(type)));
  }
  const int64_t vocab = options_.vocab_size();
  if (given.numel() > 0) {
    const int64_t lo = given.min().item<int64_t>(), hi = given.max().item<int64_t>();
    if (lo < 0 || hi >= vocab) {
      throw InputError(fmt::format("mask_tokens: the input holds token {}; expected ids in [0, {}) (vocab_size; the "
                                   "mask token is {})",
                                   lo < 0 ? lo : hi, vocab, vocab));
    }
  }
  // The input as int64 on the CPU, written in place when nobody else sees it (the loader's fresh batches).
  const at::Device device = given.device();
  const bool own = type == at::kLong && raw_cpu(given) && exclusively_owned(given);
  at::Tensor input = own ? given : given.to(at::kCPU, at::kLong, /*non_blocking=*/false, /*copy=*/true).contiguous();
  at::Tensor target = at::empty_like(input);
  const int64_t n = input.size(0), s = input.size(1);
  int64_t* in = input.data_ptr<int64_t>();
  int64_t* out = target.data_ptr<int64_t>();
  const double p = options_.probability(), to_mask = options_.replace_with_mask(),
               to_random = to_mask + options_.replace_with_random();
  for (int64_t i = 0; i < n; ++i) {
    Rng example = rng.derive({static_cast<uint64_t>(i)});
    for (int64_t j = i * s; j < (i + 1) * s; ++j) {
      if (example.uniform() >= p) {
        out[j] = kIgnoreTarget;
        continue;
      }
      out[j] = in[j];
      const double u = example.uniform();
      if (u < to_mask) {
        in[j] = vocab;
      } else if (u < to_random) {
        in[j] = static_cast<int64_t>(example.below(static_cast<uint64_t>(vocab)));
      }
    }
  }
  batch.set(Batch::kInput, input.to(device));
  batch.set(Batch::kTarget, target.to(device));
}

}  // namespace tessera::data
