// c10d process groups for Tessera. The headers of the Gloo process group are empty unless USE_C10D_GLOO is
// defined, and need gloo's own headers (Debian: libgloo-dev); CMake sets TESSERA_HAS_GLOO where a program making a
// Gloo process group compiles and links with them against the LibTorch in use (see CMakeLists.txt: gloo's types
// are met here only through shared_ptr, so the gloo inside a PyPI wheel serves as well as Debian's libgloo), and
// TESSERA_HAS_NCCL in a CUDA build whose LibTorch ships nccl.h.
#include <tessera/distributed/comm.h>
#include <tessera/detail/backends.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <utility>

#include <ATen/ATen.h>
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#if TESSERA_HAS_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if TESSERA_HAS_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <tessera/error.h>

namespace tessera::dist {

#if TORCH_VERSION_MAJOR >= 2
using Group = c10d::Backend;  // 2.x: collectives live on the backend; a ProcessGroup only dispatches to it
#else
using Group = c10d::ProcessGroup;
#endif

bool gloo_available() noexcept {
#if TESSERA_HAS_GLOO
  return true;
#else
  return false;
#endif
}

bool nccl_available() noexcept {
#if TESSERA_HAS_NCCL
  return true;
#else
  return false;
#endif
}

struct Comm::Impl {
  Environment env;
  std::string backend;
  double timeout_s = 0;
  c10::Device device = c10::Device(c10::kCPU);
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Group> group;
  c10::intrusive_ptr<Group> host_group;  ///< Gloo beside NCCL, for host_sum; null: host_sum uses `group`

  Error failure(const std::string& what, const std::exception& e) const {
    std::string message = e.what();
    message = message.substr(0, message.find('\n'));  // c10::Error appends a backtrace
    return Error("distributed: " + what + " failed on rank " + std::to_string(env.rank) + " of " +
                 std::to_string(env.world_size) + " (" + backend + "): " + message +
                 ". Another rank has probably stopped (see its output above) or did not answer within " +
                 std::to_string(static_cast<int64_t>(timeout_s)) + " s (distributed.timeout)");
  }
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) const {
    try {
      work->wait();
    } catch (const std::exception& e) {
      throw failure(what, e);
    }
  }
};

namespace {

std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

std::string first_line(const std::exception& e) {
  const std::string m = e.what();
  return m.substr(0, m.find('\n'));
}

c10::intrusive_ptr<c10d::Store> connect_store(const Environment& env, const DistributedOptions& options) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<std::uint16_t>(env.master_port);
  opts.isServer = env.rank == 0 && !env.agent_store;
  opts.numWorkers = static_cast<std::size_t>(env.world_size);
  opts.waitWorkers = false;  // the process group's own rendezvous waits for everyone, with our timeout
  opts.timeout = millis(options.connect_timeout());
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
  } catch (const std::exception& e) {
    if (opts.isServer) {
      throw InputError("distributed: rank 0 could not listen on " + where + " (" + first_line(e) +
                       "); the port is probably in use: set MASTER_PORT to a free port (tessera-run --nproc picks one)");
    }
    throw InputError("distributed: rank " + std::to_string(env.rank) + " could not reach the master at " + where +
                     " within " + std::to_string(static_cast<int64_t>(options.connect_timeout())) + " s (" +
                     first_line(e) + "); check MASTER_ADDR/MASTER_PORT and that rank 0 is running "
                     "(distributed.connect_timeout sets the wait)");
  }
  return c10::make_intrusive<c10d::PrefixStore>("tessera/attempt_" + std::to_string(env.restart_count), store);
}

#if TESSERA_HAS_GLOO
c10::intrusive_ptr<Group> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, const Environment& env,
                                    const DistributedOptions& options) {
  auto opts = c10d::ProcessGroupGloo::Options::create(millis(options.timeout()));
  // Python's rule: GLOO_SOCKET_IFNAME names the interfaces; else this host's address. A master on loopback
  // means one machine: stay on loopback.
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    std::string names = ifname;
    size_t start = 0;
    while (start <= names.size()) {
      const size_t comma = names.find(',', start);
      const std::string name = names.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!name.empty()) opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else if (is_loopback(env.master_addr)) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  opts->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world_size, opts);
}
#endif

#if TESSERA_HAS_NCCL
c10::intrusive_ptr<Group> make_nccl(const c10::intrusive_ptr<c10d::Store>& store, const Environment& env,
                                    const DistributedOptions& options) {
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = millis(options.timeout());
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, opts);
}
#endif

}  // namespace

Comm::Comm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Comm::~Comm() = default;

std::shared_ptr<Comm> Comm::create(const Environment& env, const DistributedOptions& options, c10::Device device) {
  DistributedOptions checked = options;
  validate_options(checked, "distributed");
  std::string backend = options.backend();
  if (backend == "auto") backend = device.is_cuda() && nccl_available() ? "nccl" : "gloo";
  if (backend == "gloo" && !gloo_available()) {
    throw InputError(
        "distributed: this build of Tessera has no Gloo process group (CMake found no gloo headers that compile "
        "with this LibTorch: install libgloo-dev (Debian) and reconfigure; or use distributed.backend: nccl on "
        "CUDA)");
  }
  if (backend == "nccl" && !nccl_available()) {
    throw InputError("distributed.backend: nccl is not in this build (it needs a CUDA LibTorch with nccl.h); use gloo");
  }
  if (backend == "nccl" && !device.is_cuda()) {
    throw InputError("distributed.backend: nccl needs a CUDA device, but the run trains on " + device.str() +
                     "; use gloo for the CPU");
  }
  auto impl = std::make_unique<Impl>();
  impl->env = env;
  impl->backend = backend;
  impl->timeout_s = options.timeout();
  impl->device = device;
  impl->store = connect_store(env, options);
  try {
#if TESSERA_HAS_GLOO
    if (backend == "gloo") impl->group = make_gloo(impl->store, env, options);
#endif
#if TESSERA_HAS_NCCL
    if (backend == "nccl") impl->group = make_nccl(impl->store, env, options);
#endif
#if TESSERA_HAS_GLOO && TESSERA_HAS_NCCL
    if (backend == "nccl") {
      impl->host_group = make_gloo(c10::make_intrusive<c10d::PrefixStore>("host", impl->store), env, options);
    }
#endif
  } catch (const std::exception& e) {
    throw InputError("distributed: rank " + std::to_string(env.rank) + " could not form the " + backend +
                     " process group of " + std::to_string(env.world_size) + " ranks through " + env.master_addr +
                     ":" + std::to_string(env.master_port) + " within " +
                     std::to_string(static_cast<int64_t>(options.connect_timeout())) + " s (" + first_line(e) +
                     "); did every rank start with the same WORLD_SIZE and MASTER_ADDR/MASTER_PORT?");
  }
  if (!impl->group) throw InputError("distributed: no process group for backend " + backend);
  auto comm = std::shared_ptr<Comm>(new Comm(std::move(impl)));
  // Every rank finishes forming the group before any goes on. A rank that then refuses the run (the same refusal
  // on every rank, before step 1) and exits would otherwise close its connections while another rank is still
  // completing its handshakes with it, and that rank would report "connection closed by peer" instead of the
  // refusal. (NCCL forms its communicator at the first collective.)
  if (backend == "gloo") comm->barrier("forming the process group");
  return comm;
}

int Comm::rank() const noexcept { return impl_->env.rank; }
int Comm::world_size() const noexcept { return impl_->env.world_size; }
const std::string& Comm::backend() const noexcept { return impl_->backend; }
const Environment& Comm::environment() const noexcept { return impl_->env; }

std::function<void()> Comm::all_reduce_sum_async(at::Tensor t, const std::string& what) {
  std::vector<at::Tensor> tensors{std::move(t)};
  c10::intrusive_ptr<c10d::Work> work;
  try {
    work = impl_->group->allreduce(tensors, c10d::AllreduceOptions());
  } catch (const std::exception& e) {
    throw impl_->failure(what, e);
  }
  Impl* impl = impl_.get();
  // The tensor list stays alive with the work (Gloo keeps references; the closure keeps ours).
  return [impl, work, tensors, what] { impl->wait(work, what); };
}

void Comm::all_reduce_sum(at::Tensor& t, const std::string& what) { all_reduce_sum_async(t, what)(); }

void Comm::broadcast(const std::vector<at::Tensor>& tensors, int root, const std::string& what) {
  // One flat tensor per (dtype, device): few collectives for many small parameters.
  std::map<std::pair<int, std::string>, std::vector<at::Tensor>> groups;
  for (const auto& t : tensors) {
    if (t.numel() > 0) groups[{static_cast<int>(t.scalar_type()), t.device().str()}].push_back(t);
  }
  at::NoGradGuard no_grad;
  for (auto& [key, members] : groups) {
    std::vector<at::Tensor> flat_parts;
    for (const auto& t : members) flat_parts.push_back(t.detach().reshape({-1}));
    std::vector<at::Tensor> flat{at::cat(flat_parts)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    c10::intrusive_ptr<c10d::Work> work;
    try {
      work = impl_->group->broadcast(flat, opts);
    } catch (const std::exception& e) {
      throw impl_->failure(what, e);
    }
    impl_->wait(work, what);
    int64_t offset = 0;
    for (auto& t : members) {
      const int64_t n = t.numel();
      t.detach().copy_(flat[0].narrow(0, offset, n).view(t.sizes()));
      offset += n;
    }
  }
}

at::Tensor Comm::host_sum(const at::Tensor& cpu, const std::string& what) {
  if (!impl_->host_group) {
    at::Tensor t = impl_->backend == "nccl" ? cpu.to(impl_->device) : cpu.clone();  // NCCL takes GPU tensors only
    all_reduce_sum(t, what);
    return t.cpu();
  }
  std::vector<at::Tensor> tensors{cpu.clone()};
  c10::intrusive_ptr<c10d::Work> work;
  try {
    work = impl_->host_group->allreduce(tensors, c10d::AllreduceOptions());
  } catch (const std::exception& e) {
    throw impl_->failure(what, e);
  }
  impl_->wait(work, what);
  return tensors[0];
}

void Comm::barrier(const std::string& what) {
  at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(impl_->device));
  all_reduce_sum(one, what);
  // Waiting on NCCL's work only orders the current CUDA stream after it; reading the result waits for it on the
  // host too, which is what a barrier promises (on Gloo the value is already there).
  (void)one.item<float>();
}

}  // namespace tessera::dist
