#include <tessera/distributed/grad_sync.h>

#include <chrono>
#include <map>
#include <mutex>
#include <utility>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <tessera/error.h>

namespace tessera::dist {

// 1.13 holds autograd nodes in shared_ptr, 2.x in intrusive_ptr: take whatever grad_accumulator returns.
using NodePtr = decltype(torch::autograd::impl::grad_accumulator(std::declval<const torch::autograd::Variable&>()));

struct GradSync::Core {
  struct Bucket {
    at::Tensor flat;
    std::vector<size_t> members;  ///< parameter indices
    size_t pending = 0;           ///< members whose gradient is not in `flat` yet
    std::function<void()> wait;   ///< set once launched
  };

  std::shared_ptr<Comm> comm;
  int64_t cap_bytes = 0;
  std::mutex mutex;
  uint64_t generation = 0;  ///< layout number; hooks of older layouts do nothing
  std::vector<at::Tensor> params;
  std::vector<std::string> names;
  bool find_unused = false;
  bool overlap = true;
  double exposed_wait = 0.0;
  std::vector<size_t> bucket_of;
  std::vector<int64_t> offset_of;
  std::vector<bool> ready;
  std::vector<Bucket> buckets;
  std::vector<NodePtr> accumulators;  ///< kept alive: a parameter's accumulator (with our hook) lives only while referenced
  bool armed = false;
  bool in_backward = false;
  size_t next_launch = 0;
  int64_t launched_in_backward = 0;

  void build(const std::vector<at::Tensor>& trainable);
  void on_gradient(uint64_t gen, size_t index);
  void copy_in(size_t index) {
    const at::Tensor& p = params[index];
    at::Tensor slot = buckets[bucket_of[index]].flat.narrow(0, offset_of[index], p.numel());
    const at::Tensor& g = p.grad();
    if (g.defined()) {
      slot.copy_(g.reshape({-1}));
    } else {
      slot.zero_();  // took no part in this backward on this rank
    }
  }
  /// Launches what is left, waits for every bucket and writes sum / world_size into each `.grad`; then the error
  /// for `unused` parameters unless find_unused. Called with the mutex held.
  void complete(const std::vector<size_t>& unused);
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      Bucket& b = buckets[next_launch];
      b.wait = comm->all_reduce_sum_async(b.flat, "gradient all-reduce (bucket " + std::to_string(next_launch) + ")");
      if (in_backward) ++launched_in_backward;
      ++next_launch;
    }
  }
};

namespace {

/// Runs after AccumulateGrad of one parameter: its `.grad` is final for this backward.
class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(std::weak_ptr<GradSync::Core> core, uint64_t generation, size_t index)
      : core_(std::move(core)), generation_(generation), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    if (auto core = core_.lock()) core->on_gradient(generation_, index_);
    return outputs;
  }

 private:
  std::weak_ptr<GradSync::Core> core_;
  uint64_t generation_;
  size_t index_;
};

}  // namespace

void GradSync::Core::build(const std::vector<at::Tensor>& trainable) {
  ++generation;
  params = trainable;
  const size_t n = params.size();
  bucket_of.assign(n, 0);
  offset_of.assign(n, 0);
  ready.assign(n, false);
  buckets.clear();
  accumulators.clear();
  // Reverse order: the last layers' gradients are ready first. A bucket holds one dtype on one device.
  std::map<std::pair<int, std::string>, size_t> open;  // (dtype, device) -> bucket being filled
  std::vector<int64_t> bytes;
  for (size_t k = n; k-- > 0;) {
    const at::Tensor& p = params[k];
    const auto key = std::make_pair(static_cast<int>(p.scalar_type()), p.device().str());
    const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
    auto it = open.find(key);
    if (it == open.end() || (bytes[it->second] > 0 && bytes[it->second] + size > cap_bytes)) {
      buckets.emplace_back();
      bytes.push_back(0);
      it = open.insert_or_assign(key, buckets.size() - 1).first;
    }
    Bucket& b = buckets[it->second];
    bucket_of[k] = it->second;
    offset_of[k] = bytes[it->second] / static_cast<int64_t>(p.element_size());
    bytes[it->second] += size;
    b.members.push_back(k);
  }
  for (size_t i = 0; i < buckets.size(); ++i) {
    const at::Tensor& first = params[buckets[i].members.front()];
    buckets[i].flat = at::zeros({bytes[i] / static_cast<int64_t>(first.element_size())}, first.options());
  }
  for (size_t k = 0; k < n; ++k) {
    NodePtr acc = torch::autograd::impl::grad_accumulator(params[k]);
    if (!acc) {
      throw InputError("distributed: parameter " + std::to_string(k) +
                       " is not a leaf tensor that requires grad; data-parallel training needs the model's own parameters");
    }
    accumulators.push_back(acc);
  }
}

void GradSync::Core::on_gradient(uint64_t gen, size_t index) {
  std::lock_guard<std::mutex> lock(mutex);
  if (!armed || gen != generation || index >= ready.size() || ready[index]) return;
  ready[index] = true;
  copy_in(index);
  Bucket& b = buckets[bucket_of[index]];
  if (--b.pending == 0 && overlap) launch_ready();
}

GradSync::GradSync(std::shared_ptr<Comm> comm, int64_t bucket_cap_bytes) : core_(std::make_shared<Core>()) {
  if (!comm) throw InputError("GradSync: no process group given");
  if (bucket_cap_bytes <= 0) throw InputError("GradSync: the bucket size must be > 0 bytes");
  core_->comm = std::move(comm);
  core_->cap_bytes = bucket_cap_bytes;
}

GradSync::~GradSync() = default;

void GradSync::find_unused(bool on) { core_->find_unused = on; }

void GradSync::prepare(const std::vector<at::Tensor>& trainable,
                       const std::function<std::vector<std::string>()>& names) {
  Core& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  bool same = trainable.size() == c.params.size();
  for (size_t k = 0; same && k < trainable.size(); ++k) same = trainable[k].is_same(c.params[k]);
  if (same && c.generation > 0) return;
  c.build(trainable);
  c.names = names ? names() : std::vector<std::string>();  // only for errors: built only when the set changes
  for (size_t k = 0; k < c.params.size(); ++k) {
    c.accumulators[k]->add_post_hook(std::make_unique<ReadyHook>(core_, c.generation, k));
  }
}

void GradSync::arm(bool sync) {
  Core& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  c.armed = sync;
  c.in_backward = sync;
  if (!sync) return;
  c.ready.assign(c.params.size(), false);
  c.next_launch = 0;
  c.launched_in_backward = 0;
  for (auto& b : c.buckets) {
    b.pending = b.members.size();
    b.wait = nullptr;
  }
}

void GradSync::finish() {
  Core& c = *core_;
  std::unique_lock<std::mutex> lock(c.mutex);
  if (!c.armed) return;
  c.in_backward = false;
  c.armed = false;
  // Parameters whose hook did not fire (not used in this backward on this rank): their accumulated gradient
  // (earlier microbatches) or zeros, so that every rank launches every bucket, in the same order.
  std::vector<size_t> unused;
  for (size_t k = 0; k < c.params.size(); ++k) {
    if (c.ready[k]) continue;
    unused.push_back(k);
    c.ready[k] = true;
    c.copy_in(k);
    --c.buckets[c.bucket_of[k]].pending;
  }
  c.complete(unused);
}

void GradSync::all_reduce_accumulated() {
  Core& c = *core_;
  std::unique_lock<std::mutex> lock(c.mutex);
  c.armed = false;
  c.in_backward = false;
  c.next_launch = 0;
  c.launched_in_backward = 0;
  std::vector<size_t> unused;
  for (auto& b : c.buckets) {
    b.pending = 0;
    b.wait = nullptr;
  }
  for (size_t k = 0; k < c.params.size(); ++k) {
    if (!c.params[k].grad().defined()) unused.push_back(k);
    c.copy_in(k);
  }
  c.complete(unused);
}

void GradSync::Core::complete(const std::vector<size_t>& unused) {
  Core& c = *this;
  c.launch_ready();
  const double world = static_cast<double>(c.comm->world_size());
  at::NoGradGuard no_grad;
  for (auto& b : c.buckets) {
    const auto t0 = std::chrono::steady_clock::now();
    b.wait();
    c.exposed_wait += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    b.wait = nullptr;
    b.flat.div_(world);
    for (size_t k : b.members) {
      at::Tensor& p = c.params[k];
      at::Tensor averaged = b.flat.narrow(0, c.offset_of[k], p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(averaged);
      } else {
        p.mutable_grad() = averaged.clone();
      }
    }
  }
  if (!unused.empty() && !c.find_unused) {
    const size_t k = unused.front();
    const std::string name = k < c.names.size() ? c.names[k] : "#" + std::to_string(k);
    throw Error("distributed: parameter \"" + name + "\" (and " + std::to_string(unused.size() - 1) +
                " more) got no gradient in this backward on rank " + std::to_string(c.comm->rank()) +
                "; data-parallel training needs every trainable parameter to take part in the loss, unless an "
                "algorithm declares leaves_parameters_unused (then they contribute zeros). Freeze such parameters "
                "(requires_grad false) or use them in forward");
  }
}

void GradSync::set_overlap(bool on) { core_->overlap = on; }
double GradSync::exposed_wait_seconds() const { return core_->exposed_wait; }

size_t GradSync::num_buckets() const { return core_->buckets.size(); }
int64_t GradSync::launched_during_backward() const { return core_->launched_in_backward; }

}  // namespace tessera::dist
