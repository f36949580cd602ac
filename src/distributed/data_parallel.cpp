#include "distributed/data_parallel.h"

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>

#include <tessera/distributed/sync_batch_norm.h>
#include <tessera/error.h>

namespace tessera::dist {

std::unique_ptr<DataParallel> DataParallel::from(Components& components, c10::Device& device) {
  if (!components.comm) {
    const Environment env = read_environment();
    if (!env.distributed()) return nullptr;
    if (device.is_cuda()) {
      // One GPU per rank, picked by LOCAL_RANK: a rank without a GPU of its own is refused here, before the
      // rendezvous, rather than failing later in the CUDA runtime ("invalid device ordinal") or in NCCL.
      const int64_t gpus = at::hasCUDA() ? static_cast<int64_t>(at::getNumGPUs()) : 0;
      if (env.local_rank >= gpus) {
        throw InputError(fmt::format(
            "distributed: local rank {} would train on cuda:{} (each rank takes the GPU of its LOCAL_RANK), but {} "
            "CUDA device{} visible on this machine; start at most {} rank{} per machine (tessera-run --nproc {}, "
            "torchrun --nproc-per-node {}), or train on device: cpu with distributed.backend: gloo",
            env.local_rank, env.local_rank, gpus, gpus == 1 ? " is" : "s are", gpus, gpus == 1 ? "" : "s", gpus,
            gpus));
      }
      device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
      // The rank's GPU is the current one from here on: what allocates on "the current device" (NCCL's set-up,
      // a library's workspace) then does so on it, not on GPU 0 of every rank.
      c10::impl::getDeviceGuardImpl(c10::kCUDA)->setDevice(device);
    }
    components.comm = Comm::create(env, components.distributed, device);
  }
  if (components.comm->world_size() <= 1) return nullptr;
  return std::make_unique<DataParallel>(components.comm, components.distributed);
}

DataParallel::DataParallel(std::shared_ptr<Comm> comm, DistributedOptions options)
    : comm_(std::move(comm)), options_(std::move(options)) {
  validate_options(options_, "distributed");
  grad_sync_ = std::make_unique<GradSync>(comm_, static_cast<int64_t>(options_.bucket_cap_mb() * 1024 * 1024));
}

void DataParallel::setup(Components& c, std::vector<Evaluator>& evaluators) {
  auto sharded = std::make_shared<ShardedSource>(c.train_dataloader, rank(), world_size());
  train_ = sharded.get();
  c.train_dataloader = sharded;
  for (auto& ev : evaluators) ev.dataloader = std::make_shared<ShardedSource>(ev.dataloader, rank(), world_size());
  if (rank() != 0) {
    std::vector<std::shared_ptr<Callback>> kept;
    for (auto& cb : c.callbacks) {
      if (!cb->is_logger()) kept.push_back(cb);
    }
    c.callbacks = std::move(kept);
  }
  auto check = [&](const std::vector<std::shared_ptr<Metric>>& metrics, const std::string& where) {
    for (const auto& m : metrics) {
      if (!m->counts().empty()) continue;
      const std::string what = where + " metric \"" + m->name() + "\" cannot be added up over " +
                               std::to_string(world_size()) + " ranks: ";
      if (const std::string how = m->how_to_count(); !how.empty()) throw InputError(what + how);
      throw InputError(what + "it does not implement Metric::counts (a Python metric: counts() and set_counts()); use "
                              "it in a one-process run");
    }
  };
  check(c.train_metrics, "training");
  for (const auto& a : c.algorithms) {
    find_unused_ = find_unused_ || a->spec().leaves_parameters_unused;
    if (options_.sync_batch_norm() && a->spec().skips_modules) {
      throw InputError(fmt::format(
          "distributed.sync_batch_norm: not with {0} as configured, whose training forward skips whole modules, "
          "different ones on each rank (its spec declares skips_modules): a skipped batch norm would miss the "
          "statistics all-reduce the other ranks wait in; configure {0} to run every module (its method card says "
          "how; stochastic_depth: stochastic_method: sample) or remove sync_batch_norm",
          a->name()));
    }
  }
  grad_sync_->find_unused(find_unused_);
  for (const auto& ev : evaluators) check(ev.metrics, "evaluator \"" + ev.label + "\"");
}

void DataParallel::sync_batch_norm(Model& model, bool microbatching) {
  if (!options_.sync_batch_norm()) return;
  if (microbatching) {
    throw InputError("distributed.sync_batch_norm: not with microbatch_size: each microbatch's forward takes its "
                     "statistics over the ranks, and a rank whose share is one example larger may run one more "
                     "microbatch than the others, which would wait for it; drop microbatch_size or sync_batch_norm");
  }
  convert_sync_batch_norm(model, comm_);
}

void DataParallel::broadcast_model(Model& model) {
  std::vector<at::Tensor> tensors;
  for (const auto& p : model.parameters(true)) tensors.push_back(p);
  for (const auto& b : model.buffers(true)) tensors.push_back(b);
  comm_->broadcast(tensors, 0, "broadcast of rank 0's parameters and buffers");
}

void DataParallel::sync_buffers(Model& model) {
  if (!options_.broadcast_buffers()) return;
  std::vector<at::Tensor> buffers;
  for (const auto& b : model.buffers(true)) {
    if (b.is_floating_point()) buffers.push_back(b);  // running statistics; integer counters agree anyway
  }
  if (!buffers.empty()) comm_->broadcast(buffers, 0, "broadcast of rank 0's buffers");
}

void DataParallel::before_backward(Model& model, bool last_microbatch) {
  std::vector<at::Tensor> trainable;
  for (const auto& p : model.parameters(true)) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  grad_sync_->prepare(trainable, [&model] {  // names for errors, built only when the buckets are rebuilt
    std::vector<std::string> names;
    for (const auto& item : model.named_parameters(true)) {
      if (item.value().requires_grad()) names.push_back(item.key());
    }
    return names;
  });
  grad_sync_->arm(last_microbatch && !sync_after_backward_);
}

at::Tensor DataParallel::on_comm_device(const at::Tensor& t) const {
  if (comm_->backend() != "nccl") return t;  // Gloo: CPU tensors
  return t.to(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(comm_->environment().local_rank)));
}

void DataParallel::sync_gradients() {
  if (sync_after_backward_) grad_sync_->all_reduce_accumulated();
}

int64_t DataParallel::min_over_ranks(int64_t value) {
  // As a sum of one-hot rows: every rank's value in its own slot, then the smallest (no MIN in Comm).
  at::Tensor t = at::zeros({world_size()}, at::TensorOptions().dtype(at::kLong));
  t[rank()] = value;
  return comm_->host_sum(t, "agreement on the microbatch size").min().item<int64_t>();
}

std::vector<at::Tensor> DataParallel::all_gather_bytes(const at::Tensor& bytes) {
  // As a sum of rows, each rank filling its own (Comm has no all-gather); int32 holds bytes exactly.
  const at::Tensor mine = bytes.reshape({-1}).to(at::kInt);
  at::Tensor t = at::zeros({world_size(), mine.numel()}, at::TensorOptions().dtype(at::kInt));
  t[rank()].copy_(mine);
  t = on_comm_device(t);
  comm_->all_reduce_sum(t, "all-gather of the ranks' generator states");
  t = t.cpu().to(at::kByte);
  std::vector<at::Tensor> out;
  for (int r = 0; r < world_size(); ++r) out.push_back(t[r].clone());
  return out;
}

void DataParallel::agree_on_overflow(at::Tensor& found_inf) {
  comm_->all_reduce_sum(found_inf, "agreement on inf/NaN gradients (loss scaling)");
}

double DataParallel::loss_weight() const {
  const int64_t global = global_batch_size(), share = train_ ? train_->last_share_size() : 0;
  if (global == share * world_size()) return 1.0;
  return static_cast<double>(share) * world_size() / static_cast<double>(global);
}

int64_t DataParallel::global_batch_size() const { return train_ ? train_->last_global_size() : 0; }

BatchPlace DataParallel::last_share_place() const {
  BatchPlace place;
  if (!train_) return place;
  place.rows = place.rank_rows = train_->last_share_size();
  place.share_begin = train_->last_share_begin();
  place.share_end = place.share_begin + place.rank_rows;
  place.global_rows = train_->last_global_size();
  return place;
}

void DataParallel::sum_over_ranks(at::Tensor& value) {
  comm_->all_reduce_sum(value, "all-reduce of the batch's loss terms");
}

void DataParallel::mean_over_ranks(at::Tensor& value) {
  comm_->all_reduce_sum(value, "all-reduce of the training loss");
  value.div_(static_cast<double>(world_size()));
}

void DataParallel::reduce(const std::vector<std::shared_ptr<Metric>>& metrics) {
  std::vector<double> all;
  for (const auto& m : metrics) {
    const auto c = m->counts();
    all.insert(all.end(), c.begin(), c.end());
  }
  if (all.empty()) return;
  at::Tensor t = at::tensor(all, at::TensorOptions().dtype(at::kDouble));
  t = on_comm_device(t);
  comm_->all_reduce_sum(t, "all-reduce of the metrics");
  t = t.cpu();
  const double* summed = t.data_ptr<double>();
  size_t offset = 0;
  for (const auto& m : metrics) {
    const size_t n = m->counts().size();
    m->set_counts(std::vector<double>(summed + offset, summed + offset + n));
    offset += n;
  }
}

bool DataParallel::any(bool flag) {
  const at::Tensor t = at::full({1}, flag ? 1.0f : 0.0f, at::TensorOptions().dtype(at::kFloat));
  return comm_->host_sum(t, "agreement on stopping").item<float>() > 0.0f;
}

}  // namespace tessera::dist
