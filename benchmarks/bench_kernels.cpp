// The fused ops against the stock torch formulations they replace, side by side in one process: forward and
// forward+backward, interleaved repetitions after warm-up, medians, and the ratio stock/fused (> 1: the fused
// op is faster). The CPU cases always run; the CUDA cases run when the library has the CUDA kernels and a
// device is present (CUDA events on the current stream, achieved GB/s against the device's peak, peak memory).
//
//   bench_kernels [--cpu-only] [--gpu-only] [--threads N] [--reps N] [--peak-gbs X] [--quick] [--filter TEXT]
//
// On the CPU, glibc is told to keep freed blocks (see main) so that page faults of fresh allocations do not
// dominate. Prints markdown tables (docs/kernels.md keeps the figures). Bytes moved are the minimum traffic of the op
// (each input read once, each output written once), so GB/s is comparable with the copy bandwidth.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/selective_backprop.h>
#include <tessera/models/generate.h>
#include <tessera/models/gpt.h>
#include <tessera/ops/dropout.h>
#include <tessera/ops/kernels.h>
#include <tessera/ops/multi_tensor.h>
#include <tessera/rng.h>

#include "../algorithms/blurpool/blurpool_ops.h"
#include "../algorithms/label_smoothing/label_smoothing_ops.h"
#include "../algorithms/selective_backprop/selective_backprop_ops.h"

#ifdef TESSERA_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ta = tessera::algorithms;
using S2 = std::array<int64_t, 2>;

namespace {

struct Settings {
  bool cpu = true, gpu = true, quick = false;
  int threads = 0;  // 0: torch's default
  int reps = 0;     // 0: adaptive
  double peak_gbs = 0;
  std::string filter;  ///< only the cases whose name contains this
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

struct Timing {
  double stock_ms, fused_ms;
};

/// Interleaved stock/fused timing on the CPU with a steady clock: `warm` rounds, then rounds until about
/// `budget_s` seconds have passed (at least 5, at most 50), medians.
Timing time_cpu(const std::function<void()>& stock, const std::function<void()>& fused, const Settings& s,
                double budget_s = 1.5) {
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  for (int i = 0; i < 2; ++i) {
    stock();
    fused();
  }
  std::vector<double> a, b;
  const auto start = clock::now();
  const int max_reps = s.reps > 0 ? s.reps : 50;
  for (int r = 0; r < max_reps; ++r) {
    auto t0 = clock::now();
    stock();
    auto t1 = clock::now();
    fused();
    auto t2 = clock::now();
    a.push_back(ms(t1 - t0));
    b.push_back(ms(t2 - t1));
    if (s.reps == 0 && r >= 4 && std::chrono::duration<double>(clock::now() - start).count() > budget_s) break;
  }
  return {median(a), median(b)};
}

void header(const char* title, bool gpu) {
  std::printf("\n### %s\n\n", title);
  if (gpu) {
    std::printf("| case | stock ms | fused ms | speedup | fused GB/s | %% of peak |\n|---|---:|---:|---:|---:|---:|\n");
  } else {
    std::printf("| case | stock ms | fused ms | speedup |\n|---|---:|---:|---:|\n");
  }
}

void row(const std::string& name, Timing t, double bytes = 0, double peak_gbs = 0, bool gpu = false) {
  if (!gpu) {
    std::printf("| %s | %.3f | %.3f | %.2fx |\n", name.c_str(), t.stock_ms, t.fused_ms, t.stock_ms / t.fused_ms);
    return;
  }
  const double gbs = bytes / (t.fused_ms * 1e-3) / 1e9;
  std::printf("| %s | %.3f | %.3f | %.2fx | %.0f | %s |\n", name.c_str(), t.stock_ms, t.fused_ms,
              t.stock_ms / t.fused_ms, gbs, peak_gbs > 0 ? std::to_string(static_cast<int>(100 * gbs / peak_gbs)).c_str() : "-");
  std::fflush(stdout);
}

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(s[i]);  // appended separately: GCC 12 -O3 warns (falsely) on "," + to_string
  }
  return out + "]";
}

// ----------------------------------------------------------------------------------------------------------
// The cases, device-agnostic: each returns the (stock, fused) closures for one configuration.

struct Case {
  std::string name;
  std::function<void()> stock, fused;
  double bytes;  ///< minimum traffic of the fused op
};

Case blur_case(const at::Tensor& x, S2 s, bool backward) {
  const double elt = static_cast<double>(x.element_size());
  const at::Tensor probe = ta::fused_blur2d(x, s);
  const double out = static_cast<double>(probe.numel());
  const std::string name = "blur " + shape_str(x.sizes()) + " s" + std::to_string(s[0]) +
                           (x.is_contiguous() ? "" : " NHWC") + " " + std::string(c10::toString(x.scalar_type())) +
                           (backward ? " fwd+bwd" : " fwd");
  if (!backward) {
    return {name, [=] { (void)ta::reference_blur2d(x, s); }, [=] { (void)ta::fused_blur2d(x, s); },
            (static_cast<double>(x.numel()) + out) * elt};
  }
  const at::Tensor xg = x.detach().clone().requires_grad_(true);
  const at::Tensor g = at::randn_like(probe);
  auto run = [=](bool fused) {
    at::Tensor y = fused ? ta::fused_blur2d(xg, s) : ta::reference_blur2d(xg, s);
    y.backward(g);
    xg.mutable_grad() = at::Tensor();
  };
  // forward reads x and writes y; backward reads g and writes grad x
  return {name, [=] { run(false); }, [=] { run(true); }, 2 * (static_cast<double>(x.numel()) + out) * elt};
}

Case maxblur_case(const at::Tensor& x, S2 k, S2 s, S2 p, bool backward) {
  const S2 d = {1, 1};
  const double elt = static_cast<double>(x.element_size());
  const at::Tensor probe = ta::fused_blur_maxpool2d(x, k, s, p, d);
  const double out = static_cast<double>(probe.numel());
  const std::string name = "maxpool+blur " + shape_str(x.sizes()) + " k" + std::to_string(k[0]) + " s" +
                           std::to_string(s[0]) + (x.is_contiguous() ? "" : " NHWC") + " " +
                           std::string(c10::toString(x.scalar_type())) + (backward ? " fwd+bwd" : " fwd");
  if (!backward) {
    return {name, [=] { (void)ta::reference_blur_maxpool2d(x, k, s, p, d); },
            [=] { (void)ta::fused_blur_maxpool2d(x, k, s, p, d); }, (static_cast<double>(x.numel()) + out) * elt};
  }
  const at::Tensor xg = x.detach().clone().requires_grad_(true);
  const at::Tensor g = at::randn_like(probe);
  auto run = [=](bool fused) {
    at::Tensor y = fused ? ta::fused_blur_maxpool2d(xg, k, s, p, d) : ta::reference_blur_maxpool2d(xg, k, s, p, d);
    y.backward(g);
    xg.mutable_grad() = at::Tensor();
  };
  // + one argmax byte per pooled value written and read
  const double pooled = static_cast<double>(x.numel());
  return {name, [=] { run(false); }, [=] { run(true); }, 2 * (static_cast<double>(x.numel()) + out) * elt + 2 * pooled};
}

/// The stock formulation on the GPU is torch's own cross_entropy with label_smoothing (what Composer calls);
/// on the CPU the reference formula the functional form used before (log_softmax, gather, mean).
Case ce_case(const at::Tensor& logits, bool backward, bool torch_ce) {
  const double alpha = 0.1;
  const int64_t n = logits.size(0), c = logits.size(1);
  const at::Tensor labels = at::randint(0, c, {n}, logits.options().dtype(at::kLong));
  const double elt = static_cast<double>(logits.element_size());
  const std::string name = "CE " + shape_str(logits.sizes()) + " " + std::string(c10::toString(logits.scalar_type())) +
                           (backward ? " fwd+bwd" : " fwd");
  auto stock_loss = [=](const at::Tensor& x) {
    if (torch_ce) return at::cross_entropy_loss(x, labels, {}, at::Reduction::Mean, -100, alpha);
    return ta::reference_smoothed_cross_entropy(x, labels, alpha).mean();
  };
  if (!backward) {
    return {name, [=] { (void)stock_loss(logits); },
            [=] { (void)ta::fused_smoothed_cross_entropy(logits, labels, alpha); },
            static_cast<double>(n * c) * elt};
  }
  const at::Tensor xg = logits.detach().clone().requires_grad_(true);
  auto run = [=](bool fused) {
    at::Tensor loss = fused ? ta::fused_smoothed_cross_entropy(xg, labels, alpha).first : stock_loss(xg);
    loss.backward();
    xg.mutable_grad() = at::Tensor();
  };
  return {name, [=] { run(false); }, [=] { run(true); }, 3 * static_cast<double>(n * c) * elt};
}

/// ResNet-50's parameter and buffer shapes (161 + 265 tensors, 25.6M values), in the given options.
std::vector<at::Tensor> resnet50_like(const at::TensorOptions& o) {
  std::vector<at::Tensor> t;
  auto bn = [&](int64_t c) {
    for (int i = 0; i < 4; ++i) t.push_back(at::randn({c}, o));
  };
  t.push_back(at::randn({64, 3, 7, 7}, o));
  bn(64);
  const int blocks[4] = {3, 4, 6, 3};
  int64_t in = 64;
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t w = 64 << stage, out = w * 4;
    for (int b = 0; b < blocks[stage]; ++b) {
      t.push_back(at::randn({w, in, 1, 1}, o));
      bn(w);
      t.push_back(at::randn({w, w, 3, 3}, o));
      bn(w);
      t.push_back(at::randn({out, w, 1, 1}, o));
      bn(out);
      if (b == 0) {
        t.push_back(at::randn({out, in, 1, 1}, o));
        bn(out);
      }
      in = out;
    }
  }
  t.push_back(at::randn({1000, 2048}, o));
  t.push_back(at::randn({1000}, o));
  return t;
}

Case ema_case(const at::TensorOptions& o) {
  const auto avg = std::make_shared<std::vector<at::Tensor>>(resnet50_like(o));
  const auto src = std::make_shared<std::vector<at::Tensor>>();
  double values = 0;
  for (const at::Tensor& a : *avg) {
    src->push_back(at::randn_like(a));
    values += static_cast<double>(a.numel());
  }
  const double s = 0.999;
  const std::string name = "EMA ResNet-50 (" + std::to_string(avg->size()) + " tensors, " +
                           std::to_string(static_cast<int64_t>(values / 1e6)) + "M) " +
                           std::string(c10::toString(o.dtype().toScalarType())) + " vs _foreach";
  return {name,
          [=] {
            at::_foreach_mul_(*avg, s);
            at::_foreach_add_(*avg, *src, 1.0 - s);
          },
          [=] { tessera::ops::ema_update_(*avg, *src, s); }, 3 * values * static_cast<double>(avg->front().element_size())};
}

/// The causal self-attention of a GPT block (the fortunes GPT's: d_model 128, 4 heads) on x [N, S, 128], forward and
/// backward to x and the weights. Stock: the formulation SelfAttention used at first (q·kᵀ, then a scaling
/// pass, ALiBi's biases, a masked fill, the softmax). Fused: SelfAttention::forward (LibTorch 2.x: PyTorch's
/// fused attention; 1.13: the scale and the mask folded into one product).
Case attention_case(const at::Tensor& x, bool alibi) {
  const int64_t n = x.size(0), s = x.size(1), d = x.size(2), h = 4;
  auto attention = std::make_shared<tessera::SelfAttention>(d, h);
  attention->to(x.device(), x.scalar_type());
  attention->set_alibi(alibi);
  const auto params = attention->named_parameters();
  const at::Tensor xg = x.detach().clone().requires_grad_(true);
  auto stock = [=]() {
    const at::Tensor qkv =
        at::linear(xg, params["qkv.weight"], params["qkv.bias"]).view({n, s, 3, h, d / h}).permute({2, 0, 3, 1, 4});
    at::Tensor scores = at::matmul(qkv[0], qkv[1].transpose(-2, -1)).mul_(1.0 / std::sqrt(static_cast<double>(d / h)));
    if (alibi) scores.add_(tessera::alibi_bias(h, s, scores.options()));
    scores.masked_fill_(at::ones({s, s}, x.options().dtype(at::kBool)).triu_(1), -INFINITY);
    const at::Tensor y = at::matmul(at::softmax(scores, -1), qkv[2]).transpose(1, 2).reshape({n, s, d});
    return at::linear(y, params["proj.weight"], params["proj.bias"]);
  };
  auto run = [=](bool fused) {
    (fused ? attention->forward(xg) : stock()).sum().backward();
    xg.mutable_grad() = at::Tensor();
    for (auto& p : attention->parameters()) p.mutable_grad() = at::Tensor();
  };
  const std::string name = "causal attention " + shape_str(x.sizes()) + " 4 heads" + (alibi ? " ALiBi " : " ") +
                           std::string(c10::toString(x.scalar_type())) + " fwd+bwd";
  // forward reads x and writes the output; backward the same in reverse (the [N, H, S, S] scores not counted)
  return {name, [=] { run(false); }, [=] { run(true); }, 4 * static_cast<double>(x.numel() * x.element_size())};
}

/// Dropout with p 0.1 of x (the fortunes GPT's residual stream: 32 x 128 tokens of 128 features), forward and
/// backward. Stock: torch's dropout (a Bernoulli draw per element, the mask stored for the backward); fused: the
/// counter-based dropout (a hash per element, recomputed in the backward).
Case dropout_case(const at::Tensor& x) {
  const at::Tensor xg = x.detach().clone().requires_grad_(true);
  auto run = [=](bool fused) {
    (fused ? tessera::ops::counter_dropout(xg, 0.1, 1234) : at::dropout(xg, 0.1, true)).sum().backward();
    xg.mutable_grad() = at::Tensor();
  };
  return {"dropout p 0.1 " + shape_str(x.sizes()) + " " + std::string(c10::toString(x.scalar_type())) + " fwd+bwd",
          [=] { run(false); }, [=] { run(true); }, 4 * static_cast<double>(x.numel() * x.element_size())};
}

/// Greedy generation with the fortunes GPT (4 blocks, d_model 128, 4 heads, vocabulary 256, context 128): 8 rows
/// continuing a one-token prompt by 127 tokens. Stock: the whole sequence again each step (kv_cache: false); fused:
/// the key/value cache (each step the new token only).
Case generate_case(const at::Device& device) {
  at::manual_seed(0);
  auto gpt = std::make_shared<tessera::GPT>(
      tessera::GPTOptions().vocab_size(256).max_seq_length(128).d_model(128).n_layers(4).n_heads(4));
  gpt->to(device);
  const at::Tensor prompt = at::zeros({8, 1}, at::TensorOptions(device).dtype(at::kLong));
  const auto o = tessera::GenerateOptions().max_new_tokens(127).temperature(0);
  return {"generate 8 x 127 tokens, GPT 4 x 128 (stock: the whole sequence each step)",
          [=] { tessera::generate(*gpt, prompt, tessera::GenerateOptions(o).kv_cache(false)); },
          [=] { tessera::generate(*gpt, prompt, o); }, 0};
}

// ----------------------------------------------------------------------------------------------------------

void cpu_row(const Case& c, const Settings& s, const std::string& suffix = "") {
  if (!s.filter.empty() && (c.name + suffix).find(s.filter) == std::string::npos) return;
  row(c.name + suffix, time_cpu(c.stock, c.fused, s));
  std::fflush(stdout);
}

void run_cpu(const Settings& s) {
  if (s.threads > 0) at::set_num_threads(s.threads);
  std::printf("\n## CPU (%d intra-op threads)\n", at::get_num_threads());
  at::manual_seed(0);
  header("blur-pool", false);
  const at::Tensor x = at::randn({128, 32, 28, 28});
  const at::Tensor xcl = x.contiguous(at::MemoryFormat::ChannelsLast);
  for (bool bwd : {false, true}) {
    for (S2 st : {S2{1, 1}, S2{2, 2}}) {
      for (const at::Tensor* t : {&x, &xcl}) {
        cpu_row(blur_case(*t, st, bwd), s);
      }
    }
  }
  for (bool bwd : {false, true}) {
    for (const at::Tensor* t : {&x, &xcl}) {
      cpu_row(maxblur_case(*t, {2, 2}, {2, 2}, {0, 0}, bwd), s);
    }
    const at::Tensor stem = at::randn({16, 64, 56, 56});
    cpu_row(maxblur_case(stem, {3, 3}, {2, 2}, {1, 1}, bwd), s);
  }
  header("label-smoothing cross-entropy (stock: log_softmax + gather + mean)", false);
  for (bool bwd : {false, true}) {
    for (auto [n, c] : {std::pair<int64_t, int64_t>{256, 10}, {4096, 1000}, {64, 32768}}) {
      cpu_row(ce_case(at::randn({n, c}), bwd, false), s);
    }
  }
  {
    cpu_row(ce_case(at::randn({4096, 1000}), true, true), s, " (stock: at::cross_entropy_loss)");
  }
  header("multi-tensor EMA", false);
  cpu_row(ema_case(at::TensorOptions().dtype(at::kFloat)), s);
  header("GPT causal self-attention (stock: product, scale, mask and softmax as separate passes)", false);
  for (bool alibi : {false, true}) cpu_row(attention_case(at::randn({32, 128, 128}), alibi), s);
  header("dropout (stock: torch's dropout)", false);
  for (const auto type : {at::kFloat, at::kBFloat16}) cpu_row(dropout_case(at::randn({4096, 128}).to(type)), s);
  header("text generation (fused: the key/value cache)", false);
  cpu_row(generate_case(at::kCPU), s);
}

#ifdef TESSERA_CUDA
/// CUDA-event timing on the current stream: warm-up, then `reps` interleaved calls, each timed alone; medians.
Timing time_gpu(const std::function<void()>& stock, const std::function<void()>& fused, int reps) {
  for (int i = 0; i < 3; ++i) {
    stock();
    fused();
  }
  c10::cuda::device_synchronize();
  std::vector<double> a, b;
  for (int r = 0; r < reps; ++r) {
    for (int which = 0; which < 2; ++which) {
      at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
      start.record();
      (which == 0 ? stock : fused)();
      stop.record();
      stop.synchronize();
      (which == 0 ? a : b).push_back(start.elapsed_time(stop));
    }
  }
  return {median(a), median(b)};
}

/// Peak bytes allocated by f above what was allocated before it.
double peak_bytes(const std::function<void()>& f) {
  const c10::DeviceIndex dev = c10::cuda::current_device();
  c10::cuda::device_synchronize();
  const auto before = c10::cuda::CUDACachingAllocator::getDeviceStats(dev).allocated_bytes[0].current;
  c10::cuda::CUDACachingAllocator::resetPeakStats(dev);
  f();
  c10::cuda::device_synchronize();
  const auto peak = c10::cuda::CUDACachingAllocator::getDeviceStats(dev).allocated_bytes[0].peak;
  return static_cast<double>(peak - before);
}

void run_gpu(const Settings& s) {
  const at::TensorOptions cuda = at::TensorOptions().device(at::kCUDA);
  double peak = s.peak_gbs;
  // the copy bandwidth in this process (read + write of 1 GiB), the practical peak
  {
    at::Tensor a = at::empty({1 << 28}, cuda), b = at::empty({1 << 28}, cuda);
    Timing t = time_gpu([&] { b.copy_(a); }, [&] { b.copy_(a); }, 10);
    const double copy_gbs = 2.0 * a.numel() * 4 / (t.fused_ms * 1e-3) / 1e9;
    std::printf("\n## CUDA\n\ncopy bandwidth in this process: %.0f GB/s (peak used for %%: %.0f GB/s)\n", copy_gbs,
                peak > 0 ? peak : copy_gbs);
    if (peak <= 0) peak = copy_gbs;
  }
  const int reps = s.quick ? 5 : 20;
  at::manual_seed(0);
  header("blur-pool (ResNet-50 feature maps, batch 256; stock: depthwise conv2d / max_pool2d + conv2d)", true);
  const std::vector<std::vector<int64_t>> maps = {{256, 256, 56, 56}, {256, 512, 28, 28}, {256, 1024, 14, 14}};
  for (at::ScalarType t : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (const auto& shape : maps) {
      for (bool cl : {false, true}) {
        for (bool bwd : {false, true}) {
          at::Tensor x = at::randn(shape, cuda.dtype(t));
          if (cl) x = x.contiguous(at::MemoryFormat::ChannelsLast);
          for (S2 st : {S2{1, 1}, S2{2, 2}}) {
            Case c = blur_case(x, st, bwd);
            row(c.name, time_gpu(c.stock, c.fused, reps), c.bytes, peak, true);
          }
        }
      }
    }
    for (bool cl : {false, true}) {
      for (bool bwd : {false, true}) {
        at::Tensor x = at::randn({256, 64, 112, 112}, cuda.dtype(t));
        if (cl) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        Case c = maxblur_case(x, {3, 3}, {2, 2}, {1, 1}, bwd);
        row(c.name, time_gpu(c.stock, c.fused, reps), c.bytes, peak, true);
      }
    }
  }
  header("label-smoothing cross-entropy (stock: at::cross_entropy_loss with label_smoothing)", true);
  for (at::ScalarType t : {at::kFloat, at::kBFloat16}) {
    for (auto [n, c] : {std::pair<int64_t, int64_t>{8192, 32768}, {8192, 131072}, {4096, 1000}}) {
      for (bool bwd : {false, true}) {
        Case k = ce_case(at::randn({n, c}, cuda.dtype(t)), bwd, true);
        row(k.name, time_gpu(k.stock, k.fused, reps), k.bytes, peak, true);
        if (bwd) {
          const double ps = peak_bytes(k.stock), pf = peak_bytes(k.fused);
          std::printf("|   peak memory above inputs: stock %.0f MiB, fused %.0f MiB (%.1fx less) | | | | | |\n",
                      ps / 1048576, pf / 1048576, ps / std::max(pf, 1.0));
        }
      }
    }
  }
  header("selective backprop (stock: the CPU draw with copies; index_select per part)", true);
  for (int64_t n : {256, 2048}) {
    const at::Tensor losses = at::rand({n}, cuda.dtype(at::kDouble));
    tessera::Rng r1(1), r2(1);
    Timing t = time_gpu(
        [&] {
          tessera::Rng cpu_rng = r1;
          at::Tensor idx = ta::select_by_loss(losses.cpu(), 0.5, cpu_rng).to(at::kCUDA);
        },
        [&] { (void)ta::fused_select_by_loss(losses, 0.5, r2); }, reps);
    row("select_by_loss n=" + std::to_string(n) + " keep 0.5", t, 0, 0, true);
  }
  {
    tessera::Batch batch(at::randn({256, 3, 224, 224}, cuda), at::randint(0, 1000, {256}, cuda.dtype(at::kLong)));
    batch.set("weight", at::rand({256}, cuda));
    const at::Tensor index = std::get<0>(at::randperm(256, cuda.dtype(at::kLong)).slice(0, 0, 128).sort());
    Timing t = time_gpu([&] { (void)batch.select(index); }, [&] { (void)ta::select_batch_rows(batch, index); }, reps);
    row("gather 128 of 256 rows, 3 parts (input [256,3,224,224] f32)", t, 2.0 * 128 * (3 * 224 * 224 * 4 + 8 + 4),
        peak, true);
  }
  header("multi-tensor EMA (stock: _foreach_mul_ + _foreach_add_)", true);
  for (at::ScalarType t : {at::kFloat, at::kBFloat16}) {
    Case e = ema_case(cuda.dtype(t));
    row(e.name, time_gpu(e.stock, e.fused, reps), e.bytes, peak, true);
  }
  header("GPT causal self-attention (stock: product, scale, mask and softmax as separate passes)", true);
  for (at::ScalarType t : {at::kFloat, at::kBFloat16}) {
    for (int64_t seq : {128, 1024}) {
      for (bool alibi : {false, true}) {
        Case a = attention_case(at::randn({32, seq, 128}, cuda.dtype(t)), alibi);
        row(a.name, time_gpu(a.stock, a.fused, reps), a.bytes, peak, true);
      }
    }
  }
  header("text generation (fused: the key/value cache)", true);
  Case g = generate_case(cuda.device());
  row(g.name, time_gpu(g.stock, g.fused, std::max(1, reps / 10)), g.bytes, peak, true);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--cpu-only") s.gpu = false;
    else if (a == "--gpu-only") s.cpu = false;
    else if (a == "--quick") s.quick = true;
    else if (a == "--threads") s.threads = std::atoi(next());
    else if (a == "--reps") s.reps = std::atoi(next());
    else if (a == "--peak-gbs") s.peak_gbs = std::atof(next());
    else if (a == "--filter") s.filter = next();
    else {
      std::fprintf(stderr,
                   "usage: bench_kernels [--cpu-only] [--gpu-only] [--threads N] [--reps N] [--peak-gbs X] [--quick] [--filter TEXT]\n");
      return 2;
    }
  }
#if defined(__GLIBC__)
  // Keep freed blocks in the heap instead of returning large ones to the system: otherwise every fresh output
  // of a few MiB is a new mmap whose page faults (costly on virtual machines) swamp the kernels being compared.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  std::printf("# bench_kernels: fused ops vs stock torch (speedup = stock / fused, medians)\n");
  if (s.cpu) run_cpu(s);
  if (s.gpu) {
#ifdef TESSERA_CUDA
    if (tessera::ops::cuda_kernels_available()) {
      run_gpu(s);
    } else {
      std::printf("\n## CUDA: no device, skipped\n");
    }
#else
    std::printf("\n## CUDA: library built without TESSERA_CUDA, skipped\n");
#endif
  }
  return 0;
}
