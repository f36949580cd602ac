// The local cache of a remote MDS data set (include/tessera/data/shard_cache.h, docs/streaming.md).
//
// On-disk protocol, shared by every process using one cache folder:
//  - `.NAME.lock` per shard file NAME: a downloader holds it exclusively (flock LOCK_EX) while it fetches; a reader
//    holds it shared (LOCK_SH) while the shard is pinned. Eviction takes it exclusively without waiting
//    (LOCK_NB): a shard someone holds is never evicted.
//  - `NAME.tmp`: a download in progress, created at the shard's full size (so it counts in the cache's usage:
//    a reservation) while the cache-wide lock is held; renamed to NAME once its size and hashes are right.
//  - `.tessera-cache.lock`: the cache-wide lock held while usage is counted and shards are evicted.
//  - a shard file's modification time is its last use (set explicitly, to the nanosecond), for LRU eviction.
#include <tessera/data/shard_cache.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include <tessera/error.h>

#include "posix_io.h"

namespace tessera::data {

namespace fs = std::filesystem;

// =====================================================================================================
// Sizes

int64_t parse_byte_size(const std::string& text, const std::string& what) {
  const auto bad = [&](const std::string& why) {
    return InputError(what + ": \"" + text + "\" " + why +
                      "; expected a byte count such as 1000000, \"500mb\", \"10gb\" or \"1.5GiB\"");
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) throw bad("does not start with a number");
  double value = 0;
  try {
    size_t used = 0;
    value = std::stod(text.substr(0, i), &used);
    if (used != i) throw bad("is not a number");
  } catch (const std::logic_error&) {
    throw bad("is not a number");
  }
  std::string unit;
  for (size_t j = i; j < text.size(); ++j)
    if (text[j] != ' ') unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[j])));
  static const std::map<std::string, double> kUnits = {
      {"", 1},          {"b", 1},          {"kb", 1e3},           {"mb", 1e6},           {"gb", 1e9},
      {"tb", 1e12},     {"kib", 1024.0},   {"mib", 1048576.0},    {"gib", 1073741824.0}, {"tib", 1099511627776.0},
  };
  const auto it = kUnits.find(unit);
  if (it == kUnits.end()) throw bad("has an unknown unit \"" + unit + "\" (units: b, kb, mb, gb, tb, kib, mib, gib, tib)");
  const double bytes = std::round(value * it->second);
  if (!(bytes >= 0) || bytes > 9.0e18) throw bad("is out of range");
  return static_cast<int64_t>(bytes);
}

// =====================================================================================================
// Fetching one file

namespace {

using posix::errno_text;
using posix::write_all;

bool is_http(const std::string& remote) { return remote.rfind("http://", 0) == 0 || remote.rfind("https://", 0) == 0; }

/// The remote's location of `name`: a URL for http(s), a path otherwise (`file://` stripped).
std::string remote_location(std::string remote, const std::string& name) {
  if (remote.rfind("file://", 0) == 0) remote = remote.substr(7);
  while (remote.size() > 1 && remote.back() == '/') remote.pop_back();
  return remote + "/" + name;
}

struct CurlSink {
  int fd;
  int64_t written = 0;
  int64_t max_bytes;  // < 0: no bound
  std::string error;
};

size_t curl_write(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<CurlSink*>(user);
  const size_t n = size * count;
  if (sink->max_bytes >= 0 && sink->written + static_cast<int64_t>(n) > sink->max_bytes) {
    sink->error = "the server sent more than the " + std::to_string(sink->max_bytes) + " bytes index.json lists";
    return 0;
  }
  if (!write_all(sink->fd, data, n)) {
    sink->error = "cannot write the download: " + errno_text();
    return 0;
  }
  sink->written += static_cast<int64_t>(n);
  return n;
}

/// Copies `location` (a path or an http(s) URL) into `fd` from offset 0; returns the bytes written, or throws
/// std::runtime_error with what went wrong. `max_bytes` >= 0 bounds what is accepted; `ca_bundle` (non-empty) is
/// the PEM file an https server's certificate is checked against.
int64_t fetch_into(const std::string& location, int fd, int64_t max_bytes, const ShardCacheOptions& options) {
  if (::lseek(fd, 0, SEEK_SET) != 0) throw std::runtime_error("cannot seek the download file: " + errno_text());
  if (is_http(location)) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    CURL* curl = curl_easy_init();
    if (curl == nullptr) throw std::runtime_error("curl_easy_init failed");
    CurlSink sink{fd, 0, max_bytes, {}};
    char error[CURL_ERROR_SIZE] = {0};
    const long timeout_ms = static_cast<long>(options.download_timeout() * 1000.0);
    curl_easy_setopt(curl, CURLOPT_URL, location.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, curl_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (!options.ca_bundle().empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options.ca_bundle().c_str());
    const CURLcode rc = curl_easy_perform(curl);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
      std::string why = !sink.error.empty() ? sink.error : (error[0] != 0 ? error : curl_easy_strerror(rc));
      if (rc == CURLE_PEER_FAILED_VERIFICATION) {
        why += options.ca_bundle().empty()
                   ? "; a server whose certificate your own authority signed needs that authority's PEM file as "
                     "ca_bundle"
                   : "; the certificate is not signed by an authority of ca_bundle " + options.ca_bundle();
      }
      throw std::runtime_error(why);
    }
    return sink.written;
  }
  const int in = ::open(location.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw std::runtime_error("cannot open " + location + ": " + errno_text());
  int64_t written = 0;
  std::vector<char> buffer(1 << 20);
  for (;;) {
    const ssize_t n = ::read(in, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = "cannot read " + location + ": " + errno_text();
      ::close(in);
      throw std::runtime_error(why);
    }
    if (n == 0) break;
    if (max_bytes >= 0 && written + n > max_bytes) {
      ::close(in);
      throw std::runtime_error("the file is larger than the " + std::to_string(max_bytes) + " bytes index.json lists");
    }
    if (!write_all(fd, buffer.data(), static_cast<size_t>(n))) {
      const std::string why = "cannot write the download: " + errno_text();
      ::close(in);
      throw std::runtime_error(why);
    }
    written += n;
  }
  ::close(in);
  return written;
}

/// An open file descriptor, closed on destruction.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  Fd(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Fd open_lock(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw InputError("cache: cannot open the lock file " + path + ": " + errno_text());
  return Fd(fd);
}

void lock(const Fd& fd, int how, const std::string& path) {
  while (::flock(fd.fd, how) != 0) {
    if (errno == EINTR) continue;
    throw InputError("cache: cannot lock " + path + ": " + errno_text());
  }
}

/// The file size, or -1 when there is none.
int64_t file_size(const std::string& path, int64_t* mtime_ns = nullptr) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  if (mtime_ns != nullptr) *mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  return static_cast<int64_t>(st.st_size);
}

/// Marks a file used now (its mtime), strictly later than any earlier mark of this process.
void mark_used(const std::string& path) {
  static std::atomic<int64_t> last{0};
  struct timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  int64_t ns = int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
  int64_t prev = last.load();
  while (true) {
    const int64_t want = std::max(ns, prev + 1);
    if (last.compare_exchange_weak(prev, want)) {
      ns = want;
      break;
    }
  }
  struct timespec times[2];
  times[0].tv_sec = times[1].tv_sec = ns / 1000000000;
  times[0].tv_nsec = times[1].tv_nsec = ns % 1000000000;
  ::utimensat(AT_FDCWD, path.c_str(), times, 0);  // best effort: a failure only blurs the LRU order
}

}  // namespace

// =====================================================================================================
// ShardCache

struct ShardCache::Impl {
  ShardCacheOptions options;
  mds::Index index;
  std::vector<std::string> names;   // the file fetched per shard (zip when compressed)
  std::vector<int64_t> bytes;       // its size per index.json
  std::vector<const mds::FileInfo*> files;
  int64_t largest = 0;

  /// A pinned shard: the shared flock of its lock file, and the opened shard.
  struct Pin {
    Fd lock;
    std::shared_ptr<const mds::Shard> shard;
  };
  mutable std::mutex mutex;  // pins, stats, the prefetch state
  std::map<int64_t, std::weak_ptr<Pin>> pins;
  ShardCacheStats stats;
  /// Shards opened recently, kept mapped between pins (opening costs a mapping and a header check), keyed by the
  /// file they came from: (device, inode, last use). Dropped when this process evicts the shard, when the file
  /// is replaced, and beyond kKeepOpen entries (least recently used first).
  struct Opened {
    dev_t dev;
    ino_t ino;
    uint64_t used;
    std::shared_ptr<const mds::Shard> shard;
  };
  static constexpr size_t kKeepOpen = 16;
  std::map<int64_t, Opened> opened;
  uint64_t clock = 0;

  // Prefetching.
  std::thread thread;
  std::condition_variable cv;
  std::vector<int64_t> upcoming;
  uint64_t generation = 0;
  bool stop = false;
  std::map<int64_t, std::shared_ptr<const mds::Shard>> window;

  std::string path(const std::string& name) const { return (fs::path(options.local()) / name).string(); }
  std::string final_path(int64_t k) const { return path(names[static_cast<size_t>(k)]); }
  std::string tmp_path(int64_t k) const { return path(names[static_cast<size_t>(k)] + ".tmp"); }
  std::string lock_path(int64_t k) const { return path("." + names[static_cast<size_t>(k)] + ".lock"); }
  std::string location(const std::string& name) const { return remote_location(options.remote(), name); }

  bool present(int64_t k) const { return file_size(final_path(k)) == bytes[static_cast<size_t>(k)]; }

  /// Runs `attempt` up to 1 + download_retry times with exponential backoff; the error names `location`.
  template <class F>
  void with_retries(const std::string& location, const std::string& what, F&& attempt) {
    const int64_t attempts = 1 + options.download_retry();
    std::string last;
    for (int64_t i = 0; i < attempts; ++i) {
      if (i > 0) {
        const double wait = options.retry_backoff() * std::pow(2.0, static_cast<double>(i - 1));
        std::this_thread::sleep_for(std::chrono::duration<double>(wait));
      }
      try {
        attempt();
        return;
      } catch (const std::exception& e) {
        last = e.what();
        std::lock_guard<std::mutex> g(mutex);
        ++stats.failed_attempts;
      }
    }
    throw InputError("remote: cannot fetch " + what + " from " + location + " (" + std::to_string(attempts) +
                     (attempts == 1 ? " attempt" : " attempts") + "; the last failed: " + last + ")");
  }

  void fetch_index() {
    const std::string location = this->location("index.json");
    const std::string tmp = path("index.json.tmp." + std::to_string(::getpid()));
    with_retries(location, "index.json", [&] {
      Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (fd.fd < 0) throw std::runtime_error("cannot create " + tmp + ": " + errno_text());
      fetch_into(location, fd.fd, -1, options);
      if (::ftruncate(fd.fd, ::lseek(fd.fd, 0, SEEK_CUR)) != 0)
        throw std::runtime_error("cannot truncate " + tmp + ": " + errno_text());
    });
    if (::rename(tmp.c_str(), path("index.json").c_str()) != 0) {
      ::unlink(tmp.c_str());
      throw InputError("cache: cannot rename " + tmp + " to index.json: " + errno_text());
    }
  }

  /// With the cache-wide lock: counts usage, evicts least-recently-used unpinned shards until `k` fits, and
  /// reserves its space (its .tmp file at full size). False when the pinned shards leave no room.
  bool reserve(int64_t k) {
    const std::string cache_lock_path = path(".tessera-cache.lock");
    Fd cache_lock = open_lock(cache_lock_path);
    lock(cache_lock, LOCK_EX, cache_lock_path);
    ::unlink(tmp_path(k).c_str());  // a leftover of a download that died (we hold k's lock exclusively)
    const int64_t need = bytes[static_cast<size_t>(k)];
    const int64_t limit = options.cache_limit();
    if (limit > 0) {
      struct Entry {
        int64_t mtime, k, size;
      };
      std::vector<Entry> entries;
      int64_t usage = 0;
      for (int64_t s = 0; s < static_cast<int64_t>(names.size()); ++s) {
        if (s == k) continue;
        int64_t mtime = 0;
        const int64_t f = file_size(final_path(s), &mtime), t = file_size(tmp_path(s));
        const int64_t size = std::max<int64_t>(f, 0) + std::max<int64_t>(t, 0);
        if (size == 0 && f < 0 && t < 0) continue;
        usage += size;
        entries.push_back({f >= 0 ? mtime : 0, s, size});
      }
      if (usage + need > limit) {
        std::sort(entries.begin(), entries.end(),
                  [](const Entry& a, const Entry& b) { return a.mtime != b.mtime ? a.mtime < b.mtime : a.k < b.k; });
        for (const Entry& e : entries) {
          if (usage + need <= limit) break;
          Fd l = open_lock(lock_path(e.k));
          if (::flock(l.fd, LOCK_EX | LOCK_NB) != 0) continue;  // pinned or being downloaded
          ::unlink(final_path(e.k).c_str());
          ::unlink(tmp_path(e.k).c_str());
          usage -= e.size;
          std::lock_guard<std::mutex> g(mutex);
          stats.evicted.push_back(e.k);
          opened.erase(e.k);
        }
        if (usage + need > limit) return false;
      }
    }
    Fd tmp(::open(tmp_path(k).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (tmp.fd < 0) throw InputError("cache: cannot create " + tmp_path(k) + ": " + errno_text());
    if (::ftruncate(tmp.fd, need) != 0)
      throw InputError("cache: cannot reserve " + std::to_string(need) + " bytes for " + tmp_path(k) + ": " +
                       errno_text());
    return true;
  }

  /// Downloads shard k into its reserved .tmp file, checks it, renames it into place.
  void download(int64_t k) {
    const auto& name = names[static_cast<size_t>(k)];
    const int64_t need = bytes[static_cast<size_t>(k)];
    const mds::FileInfo& info = *files[static_cast<size_t>(k)];
    const std::string location = this->location(name), tmp = tmp_path(k);
    try {
      with_retries(location, "shard " + std::to_string(k) + " (" + name + ")", [&] {
        Fd fd(::open(tmp.c_str(), O_RDWR | O_CLOEXEC));
        if (fd.fd < 0) throw std::runtime_error("cannot open " + tmp + ": " + errno_text());
        const int64_t got = fetch_into(location, fd.fd, need, options);
        if (got != need)
          throw std::runtime_error("received " + std::to_string(got) + " bytes, index.json lists " +
                                   std::to_string(need) + " (truncated?)");
        bool hashed = false;
        for (const auto& [algo, digest] : info.hashes) hashed = hashed || mds::is_supported_hash(algo);
        if (hashed && need > 0) {
          void* map = ::mmap(nullptr, static_cast<size_t>(need), PROT_READ, MAP_SHARED, fd.fd, 0);
          if (map == MAP_FAILED) throw std::runtime_error("cannot map " + tmp + ": " + errno_text());
          const std::string mismatch = mds::hash_mismatch(info, map, static_cast<size_t>(need));
          ::munmap(map, static_cast<size_t>(need));
          if (!mismatch.empty()) throw std::runtime_error("corrupt: " + mismatch);
        }
      });
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
    if (::rename(tmp.c_str(), final_path(k).c_str()) != 0) {
      const std::string why = errno_text();
      ::unlink(tmp.c_str());
      throw InputError("cache: cannot rename " + tmp + " into place: " + why);
    }
    std::lock_guard<std::mutex> g(mutex);
    ++stats.downloads;
    stats.bytes_downloaded += need;
  }

  /// Shard k present and pinned by this process, opened; nullptr when `wait` is false and there is no room.
  std::shared_ptr<const mds::Shard> acquire(int64_t k, bool wait) {
    if (k < 0 || k >= static_cast<int64_t>(names.size()))
      throw InputError("cache: shard " + std::to_string(k) + " is out of range [0, " + std::to_string(names.size()) +
                       ")");
    {
      std::lock_guard<std::mutex> g(mutex);
      if (auto it = pins.find(k); it != pins.end())
        if (auto pin = it->second.lock()) {
          mark_used(final_path(k));
          return std::shared_ptr<const mds::Shard>(pin, pin->shard.get());
        }
    }
    const std::string lp = lock_path(k);
    auto pin = std::make_shared<Pin>();
    pin->lock = open_lock(lp);
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(options.download_timeout());
    for (;;) {
      lock(pin->lock, LOCK_SH, lp);
      if (present(k)) break;
      // One process downloads; the others wait on their shared lock above, then find it present. Never block on
      // the exclusive lock: a holder of a shared lock may be a pin that just got the shard, and waiting for it to
      // go would deadlock; so try, and on failure look again shortly.
      if (::flock(pin->lock.fd, LOCK_EX | LOCK_NB) != 0) {
        ::flock(pin->lock.fd, LOCK_UN);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      if (present(k)) continue;
      while (!reserve(k)) {
        if (!wait) {
          ::flock(pin->lock.fd, LOCK_UN);
          return nullptr;
        }
        if (std::chrono::steady_clock::now() > deadline)
          throw InputError("cache_limit: the cache " + options.local() + " (limit " +
                           std::to_string(options.cache_limit()) + " bytes) has no room for shard " +
                           std::to_string(k) + " (" + std::to_string(bytes[static_cast<size_t>(k)]) +
                           " bytes): the shards in it are in use by readers for longer than " +
                           std::to_string(options.download_timeout()) + " s; raise cache_limit");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      download(k);
    }
    mark_used(final_path(k));
    struct stat st {};
    const bool have_stat = ::stat(final_path(k).c_str(), &st) == 0;
    {
      std::lock_guard<std::mutex> g(mutex);
      if (auto it = opened.find(k); it != opened.end() && have_stat && it->second.dev == st.st_dev &&
                                    it->second.ino == st.st_ino) {
        it->second.used = ++clock;
        pin->shard = it->second.shard;
      } else if (it != opened.end()) {
        opened.erase(it);
      }
    }
    if (!pin->shard) {
      pin->shard = mds::Shard::open(options.local(), index.shards[static_cast<size_t>(k)],
                                    mds::ReaderOptions().verify_hashes(options.verify_hashes()));
      if (have_stat) {
        std::lock_guard<std::mutex> g(mutex);
        opened[k] = Opened{st.st_dev, st.st_ino, ++clock, pin->shard};
        while (opened.size() > kKeepOpen) {
          auto oldest = opened.begin();
          for (auto it = opened.begin(); it != opened.end(); ++it)
            if (it->second.used < oldest->second.used) oldest = it;
          opened.erase(oldest);
        }
      }
    }
    std::lock_guard<std::mutex> g(mutex);
    pins[k] = pin;
    return std::shared_ptr<const mds::Shard>(pin, pin->shard.get());
  }

  void prefetch_loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> g(mutex);
    for (;;) {
      cv.wait_for(g, std::chrono::milliseconds(100), [&] { return stop || generation != seen; });
      if (stop) return;
      seen = generation;
      const size_t want = std::min(upcoming.size(), static_cast<size_t>(options.prefetch()));
      std::vector<int64_t> ahead(upcoming.begin(), upcoming.begin() + static_cast<std::ptrdiff_t>(want));
      std::map<int64_t, std::shared_ptr<const mds::Shard>> keep;
      for (int64_t k : ahead)
        if (auto it = window.find(k); it != window.end()) keep[k] = it->second;
      window.swap(keep);
      g.unlock();
      keep.clear();  // unpins (outside the mutex: a Pin's destructor only closes its lock file)
      int64_t window_bytes = 0;
      for (int64_t k : ahead) {
        const int64_t b = bytes[static_cast<size_t>(k)];
        if (options.cache_limit() > 0 && window_bytes + b > options.cache_limit() / 2) break;
        window_bytes += b;
        bool have = false;
        {
          std::lock_guard<std::mutex> g2(mutex);
          have = window.count(k) > 0;
          if (stop || generation != seen) break;
        }
        if (have) continue;
        std::shared_ptr<const mds::Shard> shard;
        try {
          shard = acquire(k, false);
        } catch (const std::exception&) {
          break;  // the reader fetches it itself and reports the error
        }
        if (!shard) break;  // no room now; retried on the next tick
        std::lock_guard<std::mutex> g2(mutex);
        window[k] = std::move(shard);
      }
      g.lock();
    }
  }
};

ShardCache::ShardCache(ShardCacheOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.options = std::move(options);
  if (s.options.remote().empty()) throw InputError("remote: no remote given");
  if (s.options.local().empty())
    throw InputError("local: a remote needs a local cache folder (local) to fetch its shards into");
  validate_options(s.options, "ShardCache");
  if (!s.options.ca_bundle().empty() && !fs::is_regular_file(s.options.ca_bundle())) {
    throw InputError("ca_bundle: no file " + s.options.ca_bundle() +
                     " (expected a PEM file of certificate authorities, for an https:// remote)");
  }
  std::error_code ec;
  fs::create_directories(s.options.local(), ec);
  if (!fs::is_directory(s.options.local()))
    throw InputError("local: cannot create the cache folder " + s.options.local() +
                     (ec ? ": " + ec.message() : std::string()));
  if (!is_http(s.options.remote())) {
    const std::string remote_dir = remote_location(s.options.remote(), ".");
    if (fs::exists(remote_dir) && fs::equivalent(remote_dir, s.options.local(), ec))
      throw InputError("local: the cache folder " + s.options.local() + " is the remote " + s.options.remote() +
                       " itself; give a folder of its own (or no remote to read it in place)");
  }
  s.fetch_index();
  s.index = mds::read_index(s.options.local());
  for (const auto& info : s.index.shards) {
    const mds::FileInfo& f = info.zip_data ? *info.zip_data : info.raw_data;
    s.files.push_back(&f);
    s.names.push_back(f.basename);
    s.bytes.push_back(f.bytes);
    s.largest = std::max(s.largest, f.bytes);
  }
  if (s.options.cache_limit() > 0 && s.options.cache_limit() < 2 * s.largest)
    throw InputError("cache_limit: " + std::to_string(s.options.cache_limit()) +
                     " bytes is less than reading needs at once: two of the largest shard file (" +
                     std::to_string(s.largest) + " bytes each: one read while the next is fetched), so at least " +
                     std::to_string(2 * s.largest) + " bytes");
  if (s.options.prefetch() > 0) s.thread = std::thread([&s] { s.prefetch_loop(); });
}

ShardCache::~ShardCache() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> g(s.mutex);
    s.stop = true;
  }
  s.cv.notify_all();
  if (s.thread.joinable()) s.thread.join();
}

const ShardCacheOptions& ShardCache::options() const { return impl_->options; }
const mds::Index& ShardCache::index() const { return impl_->index; }

std::shared_ptr<const mds::Shard> ShardCache::acquire(int64_t k) {
  return impl_->acquire(k, true);
}

void ShardCache::prefetch(std::vector<int64_t> upcoming) {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> g(s.mutex);
    if (upcoming == s.upcoming) return;
    s.upcoming = std::move(upcoming);
    ++s.generation;
  }
  s.cv.notify_all();
}

int64_t ShardCache::usage() const {
  const Impl& s = *impl_;
  int64_t total = 0;
  for (int64_t k = 0; k < static_cast<int64_t>(s.names.size()); ++k)
    total += std::max<int64_t>(file_size(s.final_path(k)), 0) + std::max<int64_t>(file_size(s.tmp_path(k)), 0);
  return total;
}

std::vector<int64_t> ShardCache::cached() const {
  std::vector<int64_t> out;
  for (int64_t k = 0; k < static_cast<int64_t>(impl_->names.size()); ++k)
    if (file_size(impl_->final_path(k)) >= 0) out.push_back(k);
  return out;
}

ShardCacheStats ShardCache::stats() const {
  std::lock_guard<std::mutex> g(impl_->mutex);
  return impl_->stats;
}

}  // namespace tessera::data
