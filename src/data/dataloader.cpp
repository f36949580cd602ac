#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <tessera/data/dataloader.h>
#include <tessera/error.h>
#include <tessera/rng.h>

#include <exception>
#include <numeric>
#include <string>

// OpenMP's per-thread setting, if the process has an OpenMP runtime (LibTorch's usual CPU backend).
extern "C" void omp_set_num_threads(int) __attribute__((weak));

namespace tessera::data {
namespace {

// Producer threads run beside the training step: like PyTorch's DataLoader workers they use one intra-op
// thread each, so that their ATen ops do not fork OpenMP teams that fight the step for the cores.
// Only this thread's setting changes (at::set_num_threads would change the process-wide default).
void use_one_intra_op_thread() {
  (void)at::get_num_threads();  // ATen's lazy per-thread initialisation first: it would undo the setting
  if (&omp_set_num_threads != nullptr) omp_set_num_threads(1);
}

}  // namespace

/// Iteration state. Workers claim batch numbers in order, produce them without the lock and put them in a
/// ring of `window` slots (batch b in slot b % window); the consumer takes them strictly in order.
struct DataLoader::Impl {
  struct Slot {
    bool ready = false;
    std::optional<Batch> batch;
    std::exception_ptr error;
  };

  std::mutex mutex;
  std::condition_variable ready_cv;  // a slot became ready (consumer waits)
  std::condition_variable space_cv;  // the window moved or stop was requested (workers wait)
  std::vector<std::thread> threads;
  std::vector<Slot> slots;
  bool stop = false;
  int waiting_producers = 0;  // producers blocked on a full window
  bool consumer_waiting = false;

  bool started = false;
  uint64_t seed = 0;
  int64_t epoch = 0;
  std::shared_ptr<const std::vector<int64_t>> order;  // null: identity order
  int64_t next_to_claim = 0;
  int64_t next_to_deliver = 0;
  int64_t end = 0;
};

namespace {

const std::vector<int64_t> kIdentityOrder;  // `produce` reads an empty order as 0, 1, 2, ...

/// The batch of `n` rows whose rows [first, first + rows.size()) are `rows` and the others zeros.
Batch widened(const Batch& rows, int64_t n, int64_t first) {
  Batch out;
  for (const auto& [key, t] : rows.parts()) {
    std::vector<int64_t> shape = t.sizes().vec();
    shape[0] = n;
    at::Tensor full = at::zeros(shape, t.options());
    full.narrow(0, first, t.size(0)).copy_(t);
    out.set(key, full);
  }
  return out;
}

std::shared_ptr<const std::vector<int64_t>> epoch_order(const Dataset& dataset, bool shuffle, uint64_t seed,
                                                        int64_t epoch, int64_t n) {
  if (!shuffle || dataset.has_order()) return nullptr;  // a dataset with its own order is asked per batch
  return std::make_shared<const std::vector<int64_t>>(shuffled_order(seed, epoch, n));
}

}  // namespace

std::vector<int64_t> shuffled_order(uint64_t seed, int64_t epoch, int64_t n) {
  if (epoch < 0) throw InputError("shuffled_order: epoch must be >= 0, got " + std::to_string(epoch));
  if (n < 0) throw InputError("shuffled_order: the number of examples must be >= 0, got " + std::to_string(n));
  return Rng(seed, {kShuffleStream, static_cast<uint64_t>(epoch)}).permutation(n);
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options,
                       std::vector<std::shared_ptr<const BatchTransform>> transforms)
    : dataset_(std::move(dataset)),
      options_(options),
      transforms_(std::move(transforms)),
      impl_(std::make_unique<Impl>()) {
  if (!dataset_) throw InputError("DataLoader: the dataset is null");
  if (options_.batch_size() < 1)
    throw InputError("dataloader.batch_size: " + std::to_string(options_.batch_size()) +
                     " is out of range >= 1");
  if (options_.workers() < 0 || options_.workers() > 64)
    throw InputError("dataloader.workers: " + std::to_string(options_.workers()) +
                     " is out of range [0, 64]");
  if (options_.prefetch() < 1)
    throw InputError("dataloader.prefetch: " + std::to_string(options_.prefetch()) + " is out of range >= 1");
  for (const auto& t : transforms_)
    if (!t) throw InputError("DataLoader: a transform is null");
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = dataset_->epoch_positions(options_.batch_size());
  const int64_t bs = options_.batch_size();
  return options_.drop_last() ? n / bs : (n + bs - 1) / bs;
}

int64_t DataLoader::num_samples() const {
  return options_.drop_last() ? num_batches() * options_.batch_size()
                              : dataset_->epoch_positions(options_.batch_size());
}

std::string DataLoader::describe() const {
  return dataset_->describe() + " in batches of " + std::to_string(options_.batch_size());
}

Batch DataLoader::example_batch() { return dataset_->get_batch({0}); }

std::vector<int64_t> DataLoader::batch_indices(uint64_t seed, int64_t epoch, int64_t b) const {
  if (b < 0 || b >= num_batches())
    throw Error("DataLoader::batch_indices: batch " + std::to_string(b) + " is out of range [0, " +
                std::to_string(num_batches()) + ")");
  const int64_t begin = b * options_.batch_size();
  const int64_t end = std::min(begin + options_.batch_size(), dataset_->epoch_positions(options_.batch_size()));
  if (dataset_->has_order())
    return dataset_->order_range(seed, epoch, options_.batch_size(), options_.shuffle(), begin, end);
  const auto order = epoch_order(*dataset_, options_.shuffle(), seed, epoch, dataset_->size());
  std::vector<int64_t> out(static_cast<size_t>(end - begin));
  for (int64_t i = begin; i < end; ++i)
    out[static_cast<size_t>(i - begin)] = order ? (*order)[static_cast<size_t>(i)] : i;
  return out;
}

Batch DataLoader::produce(uint64_t seed, int64_t epoch, int64_t b, const std::vector<int64_t>& order) const {
  const int64_t begin = b * options_.batch_size();
  const int64_t end = std::min(begin + options_.batch_size(), dataset_->epoch_positions(options_.batch_size()));
  // The positions decoded: the batch's, or with share_rows this rank's rows of it (a dataset with its own order,
  // e.g. a StreamingDataset, is asked for those only, and prefetches only their shards).
  const bool rows = rows_only();
  const int64_t from = rows ? begin + (end - begin) * rank_ / world_size_ : begin;
  const int64_t to = rows ? begin + (end - begin) * (rank_ + 1) / world_size_ : end;
  std::vector<int64_t> indices(static_cast<size_t>(to - from));
  if (dataset_->has_order()) {
    indices = dataset_->order_range(seed, epoch, options_.batch_size(), options_.shuffle(), from, to);
  } else if (order.empty()) {
    std::iota(indices.begin(), indices.end(), from);
  } else {
    std::copy(order.begin() + from, order.begin() + to, indices.begin());
  }
  Batch batch = dataset_->get_batch(indices);
  if (rows) batch = widened(batch, end - begin, from - begin);
  // Algorithms' transforms first, on the data as the dataset gives it, each with a generator of its own (so the
  // loader's transforms draw the same numbers with or without them).
  for (const auto& t : algorithm_transforms_) {
    Rng rng(seed, {kAlgorithmStream, kTransformStream, static_cast<uint64_t>(epoch), static_cast<uint64_t>(b)});
    t->apply(batch, rng);
  }
  if (!transforms_.empty()) {
    // One stream per (seed, epoch, batch): the same batch whichever thread makes it, resumed or not.
    Rng rng(seed, {kTransformStream, static_cast<uint64_t>(epoch), static_cast<uint64_t>(b)});
    for (const auto& t : transforms_) t->apply(batch, rng);
  }
  return batch;
}

bool DataLoader::rows_only() const {
  if (world_size_ == 1) return false;
  for (const auto* list : {&algorithm_transforms_, &transforms_})
    for (const auto& t : *list)
      if (!t->per_example()) return false;
  return true;
}

bool DataLoader::share_rows(int rank, int world_size) {
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw InputError("DataLoader::share_rows: rank " + std::to_string(rank) + " of " + std::to_string(world_size));
  stop_workers();  // the workers read them
  impl_->started = false;
  rank_ = rank;
  world_size_ = world_size;
  return true;
}

bool DataLoader::set_algorithm_transforms(std::vector<std::shared_ptr<const BatchTransform>> transforms) {
  for (const auto& t : transforms)
    if (!t) throw InputError("DataLoader::set_algorithm_transforms: a transform is null");
  stop_workers();  // the workers read the list: none may be running while it changes
  impl_->started = false;
  algorithm_transforms_ = std::move(transforms);
  return true;
}

void DataLoader::stop_workers() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.stop = true;
  }
  s.space_cv.notify_all();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
  s.stop = false;
}

void DataLoader::start_epoch(uint64_t seed, int64_t epoch, int64_t first_batch) {
  const int64_t nb = num_batches();
  if (epoch < 0)
    throw InputError("DataLoader::start_epoch: epoch must be >= 0, got " + std::to_string(epoch));
  if (first_batch < 0 || first_batch > nb)
    throw InputError("DataLoader::start_epoch: first_batch " + std::to_string(first_batch) +
                     " is out of range [0, " + std::to_string(nb) + "] for " + dataset_->describe() +
                     " in batches of " + std::to_string(options_.batch_size()));
  stop_workers();

  Impl& s = *impl_;
  s.started = true;
  s.seed = seed;
  s.epoch = epoch;
  s.order = epoch_order(*dataset_, options_.shuffle(), seed, epoch, dataset_->size());
  s.next_to_claim = first_batch;
  s.next_to_deliver = first_batch;
  s.end = nb;
  s.slots.assign(static_cast<size_t>(options_.prefetch()), Impl::Slot{});
  if (options_.workers() == 0 || first_batch >= nb) return;

  const auto window = static_cast<int64_t>(s.slots.size());
  for (int64_t w = 0; w < options_.workers(); ++w) {
    s.threads.emplace_back([this, &s, window] {
      c10::AutoGradMode no_grad(false);
      use_one_intra_op_thread();
      const std::vector<int64_t>& order = s.order ? *s.order : kIdentityOrder;
      for (;;) {
        int64_t b = 0;
        {
          std::unique_lock<std::mutex> lock(s.mutex);
          const auto can_go = [&] {
            return s.stop || s.next_to_claim >= s.end || s.next_to_claim < s.next_to_deliver + window;
          };
          if (!can_go()) {
            ++s.waiting_producers;
            s.space_cv.wait(lock, can_go);
            --s.waiting_producers;
          }
          if (s.stop || s.next_to_claim >= s.end) return;
          b = s.next_to_claim++;
        }
        Impl::Slot result;
        try {
          result.batch = produce(s.seed, s.epoch, b, order);
        } catch (...) {
          result.error = std::current_exception();
        }
        result.ready = true;
        const bool failed = static_cast<bool>(result.error);
        bool wake = false;
        {
          std::lock_guard<std::mutex> lock(s.mutex);
          s.slots[static_cast<size_t>(b % window)] = std::move(result);
          if (failed) s.end = std::min(s.end, b + 1);  // nothing after a failed batch is produced
          wake = s.consumer_waiting;
        }
        if (wake) s.ready_cv.notify_one();
        if (failed) return;
      }
    });
  }
}

std::optional<Batch> DataLoader::next() {
  Impl& s = *impl_;
  if (!s.started) throw Error("DataLoader::next: call start_epoch(seed, epoch) before asking for batches");
  if (s.threads.empty()) {
    if (s.next_to_deliver >= s.end) return std::nullopt;
    const int64_t b = s.next_to_deliver++;
    try {
      return produce(s.seed, s.epoch, b, s.order ? *s.order : kIdentityOrder);
    } catch (...) {
      s.end = b;  // as with workers: the epoch ends at the failure
      throw;
    }
  }

  std::optional<Batch> out;
  std::exception_ptr error;
  bool wake = false;
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    if (s.next_to_deliver >= s.end) return std::nullopt;
    const auto window = static_cast<int64_t>(s.slots.size());
    Impl::Slot& slot = s.slots[static_cast<size_t>(s.next_to_deliver % window)];
    if (!slot.ready) {
      s.consumer_waiting = true;
      s.ready_cv.wait(lock, [&] { return slot.ready; });
      s.consumer_waiting = false;
    }
    out = std::move(slot.batch);
    error = slot.error;
    slot = Impl::Slot{};
    ++s.next_to_deliver;
    if (error) s.end = s.next_to_deliver - 1;  // the epoch ends at the failure
    // Producers blocked on a full window are woken once half of it is free, so that each wake-up
    // produces several batches (they were ahead: refilling half the window takes less time than
    // consuming the other half).
    const int64_t free_slots = s.next_to_deliver + window - s.next_to_claim;
    wake = s.waiting_producers > 0 && (free_slots >= std::max<int64_t>(1, window / 2) || error);
  }
  if (wake) s.space_cv.notify_all();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace tessera::data
