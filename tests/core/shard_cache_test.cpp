// Remote to local (docs/streaming.md, "Remote to local"): a streaming dataset whose shards are fetched from a
// folder, a file:// URL or an HTTP server (a small one in this file, on 127.0.0.1) into a bounded local cache.
// Reads through the cache equal reading the remote in place; truncated and corrupt downloads are fetched again and
// never left under a shard's name; retries end in an error naming the URL; the limit holds with LRU eviction that
// spares pinned shards; two processes sharing a cache read correctly and download each shard once.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <ATen/ATen.h>
#include <tessera/data/mds.h>
#include <tessera/data/shard_cache.h>
#include <tessera/data/streaming.h>
#include <tessera/error.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>

#include "core/mds_support.h"
#include "support.h"

extern char** environ;

namespace tessera {
namespace {

namespace fs = std::filesystem;
namespace mds = data::mds;
using data::ShardCache;
using data::ShardCacheOptions;
using data::StreamingDataset;
using data::StreamingOptions;
using ::testing::HasSubstr;
using test::TempDir;

// ---------------------------------------------------------------------------------------------------------
// A small HTTP/1.1 server over a folder: one request per connection, requests counted per path, faults injected
// per path (a body cut short, one byte flipped, or 503).

class HttpServer {
 public:
  enum class Fault { truncate, corrupt, unavailable };

  explicit HttpServer(std::string root) : root_(std::move(root)) {
    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_ < 0) throw std::runtime_error("socket failed");
    const int one = 1;
    ::setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;  // a free port
    if (::bind(listen_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_, 64) != 0)
      throw std::runtime_error("bind/listen failed");
    socklen_t len = sizeof addr;
    ::getsockname(listen_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~HttpServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int64_t requests(const std::string& path) const {
    std::lock_guard<std::mutex> g(mutex_);
    const auto it = requests_.find(path);
    return it == requests_.end() ? 0 : it->second;
  }
  /// The next `times` requests of `path` (-1: all) get `fault`.
  void fail(const std::string& path, Fault fault, int times) {
    std::lock_guard<std::mutex> g(mutex_);
    faults_[path] = {fault, times};
  }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{listen_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int client = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      serve(client);
      ::close(client);
    }
  }
  void send_all(int fd, const char* data, size_t size) {
    while (size > 0) {
      const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
      if (n <= 0) return;
      data += n;
      size -= static_cast<size_t>(n);
    }
  }
  void serve(int client) {
    timeval tv{2, 0};
    ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string request;
    char buf[4096];
    while (request.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(client, buf, sizeof buf, 0);
      if (n <= 0) return;
      request.append(buf, static_cast<size_t>(n));
    }
    const size_t sp1 = request.find(' '), sp2 = request.find(' ', sp1 + 1);
    const std::string path = request.substr(sp1 + 1, sp2 - sp1 - 1);
    std::optional<Fault> fault;
    {
      std::lock_guard<std::mutex> g(mutex_);
      ++requests_[path];
      if (auto it = faults_.find(path); it != faults_.end() && it->second.second != 0) {
        fault = it->second.first;
        if (it->second.second > 0) --it->second.second;
      }
    }
    const std::string file = root_ + path;
    if (fault == Fault::unavailable || !fs::is_regular_file(file)) {
      const std::string status = fault == Fault::unavailable ? "503 Service Unavailable" : "404 Not Found";
      const std::string r = "HTTP/1.1 " + status + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      send_all(client, r.data(), r.size());
      return;
    }
    std::string body = test::read_file(file);
    const std::string head =
        "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    send_all(client, head.data(), head.size());
    if (fault == Fault::truncate) {  // the connection drops midway
      send_all(client, body.data(), body.size() / 2);
      return;
    }
    if (fault == Fault::corrupt && !body.empty()) body[body.size() / 2] ^= 0x5a;
    send_all(client, body.data(), body.size());
  }

  std::string root_;
  int listen_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mutex_;
  std::map<std::string, int64_t> requests_;
  std::map<std::string, std::pair<Fault, int>> faults_;
};

// ---------------------------------------------------------------------------------------------------------
// Data

/// `n` samples of image uint8 [4, 4] (a function of the id) and label = id, shards of `per_shard` samples (all
/// shards the same size in bytes), each file hashed with xxh3_64 unless `hashes` is false.
void write_data(const std::string& dir, int64_t n, int64_t per_shard, bool hashes = true,
                const std::string& compression = "") {
  const auto options = [&](int64_t size_limit) {
    return mds::WriterOptions()
        .columns({{"image", "ndarray:uint8:4,4"}, {"label", "int"}})
        .hashes(hashes ? std::vector<std::string>{"xxh3_64"} : std::vector<std::string>{})
        .compression(compression)
        .size_limit(size_limit)
        .exist_ok(true);
  };
  const auto write = [&](int64_t count, int64_t size_limit) {
    mds::Writer writer(dir, options(size_limit));
    for (int64_t i = 0; i < count; ++i) {
      at::Tensor image = at::arange(16, at::kLong).add(i * 7).remainder(256).to(at::kByte).view({4, 4});
      writer.write({{"image", image}, {"label", i}});
    }
    return writer.finish();
  };
  // A shard of m fixed-size samples is 8 + config + 28 m bytes (a 4-byte offset and 16 + 8 bytes each); the config
  // JSON repeats size_limit, so measure it with a limit of as many digits as the final one (a fixed point).
  int64_t limit = 9000;
  for (int round = 0; round < 3; ++round) {
    limit = 8 + (write(1, limit).shards[0].raw_data.bytes - 8 - 28) + 28 * per_shard;
    for (const auto& e : fs::directory_iterator(dir)) fs::remove(e.path());
  }
  write(n, limit);
}

/// Every sample, in id order, as one batch.
Batch read_all(const StreamingDataset& ds) {
  std::vector<int64_t> ids(static_cast<size_t>(ds.size()));
  for (int64_t i = 0; i < ds.size(); ++i) ids[static_cast<size_t>(i)] = i;
  return ds.get_batch(ids);
}

/// Every sample in the dataset's epoch-0 order, batch by batch as a DataLoader asks for them (so the cache is told
/// what comes next), concatenated.
Batch read_epoch(const StreamingDataset& ds, int64_t batch) {
  std::vector<at::Tensor> inputs, targets;
  for (int64_t b = 0; b * batch < ds.size(); ++b) {
    const auto ids = ds.order_range(42, 0, batch, true, b * batch, std::min(ds.size(), (b + 1) * batch));
    const Batch got = ds.get_batch(ids);
    inputs.push_back(got.input());
    targets.push_back(got.target());
  }
  return Batch(at::cat(inputs), at::cat(targets));
}

void expect_same(const Batch& a, const Batch& b) {
  ASSERT_EQ(a.input().sizes(), b.input().sizes());
  EXPECT_TRUE(at::equal(a.input(), b.input()));
  EXPECT_TRUE(at::equal(a.target(), b.target()));
}

/// The cache's shard files equal the remote's, byte for byte, and no temporary file is left.
void expect_cache_intact(const std::string& remote, const std::string& cache) {
  for (const auto& e : fs::directory_iterator(cache)) {
    const std::string name = e.path().filename().string();
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;
    if (name.rfind("shard.", 0) == 0) EXPECT_EQ(test::read_file(e.path().string()), test::read_file(remote + "/" + name)) << name;
  }
}

int64_t shard_bytes(const std::string& dir, int64_t k) {
  return mds::read_index(dir).shards[static_cast<size_t>(k)].raw_data.bytes;
}

// ---------------------------------------------------------------------------------------------------------

TEST(ShardCache, ParsesByteSizes) {
  EXPECT_EQ(data::parse_byte_size("1000", "x"), 1000);
  EXPECT_EQ(data::parse_byte_size("10gb", "x"), 10000000000);
  EXPECT_EQ(data::parse_byte_size("1.5 GiB", "x"), 1610612736);
  EXPECT_EQ(data::parse_byte_size("64KB", "x"), 64000);
  EXPECT_EQ(data::parse_byte_size("2mib", "x"), 2097152);
  EXPECT_THAT([] { data::parse_byte_size("10 parsecs", "streaming.cache_limit"); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("streaming.cache_limit: \"10 parsecs\" has an unknown unit")));
  EXPECT_THAT([] { data::parse_byte_size("gb", "streaming.cache_limit"); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("does not start with a number")));
}

TEST(ShardCache, DirectoryAndFileUrlRemotesReadAsTheRemoteItself) {
  TempDir remote("remote_src"), cache1("remote_cache"), cache2("remote_cache");
  write_data(remote.path(), 97, 10);
  ASSERT_EQ(mds::read_index(remote.path()).shards.size(), 10u);
  const StreamingDataset direct(StreamingOptions().local(remote.path()));
  const Batch want = read_all(direct);
  const Batch want_epoch = read_epoch(direct, 16);
  for (const auto& [source, cache] : {std::pair<std::string, std::string>{remote.path(), cache1.path()},
                                      {"file://" + remote.path(), cache2.path()}}) {
    SCOPED_TRACE(source);
    const StreamingDataset ds(StreamingOptions().remote(source).local(cache));
    ASSERT_NE(ds.cache(), nullptr);
    expect_same(read_epoch(ds, 16), want_epoch);
    expect_same(read_all(ds), want);
    EXPECT_EQ(test::read_file(cache + "/index.json"), test::read_file(remote.path() + "/index.json"));
    EXPECT_EQ(ds.cache()->cached().size(), 10u);
    EXPECT_EQ(ds.cache()->stats().downloads, 10);  // each shard once (the prefetcher and the reader share it)
    expect_cache_intact(remote.path(), cache);
    EXPECT_THAT(ds.describe(), HasSubstr(source + " cached in " + cache));
  }
}

TEST(ShardCache, SplitsAndCompressedShardsComeThrough) {
  TempDir remote("remote_src"), cache("remote_cache");
  write_data(remote.path() + "/train", 45, 10, true, "zstd");
  const StreamingDataset direct(StreamingOptions().local(remote.path()).split("train"));
  const StreamingDataset ds(StreamingOptions().remote("file://" + remote.path() + "/").local(cache.path()).split("train"));
  expect_same(read_all(ds), read_all(direct));
  EXPECT_TRUE(fs::exists(cache.path() + "/train/shard.00000.mds.zstd"));
  EXPECT_FALSE(fs::exists(cache.path() + "/train/shard.00000.mds"));  // decompressed in memory, as read in place
}

TEST(ShardCache, HttpRemoteRefetchesTruncatedAndCorruptShards) {
  TempDir remote("remote_src"), cache("remote_cache");
  write_data(remote.path(), 60, 10);
  HttpServer server(remote.path());
  server.fail("/shard.00001.mds", HttpServer::Fault::truncate, 1);
  server.fail("/shard.00003.mds", HttpServer::Fault::corrupt, 2);
  server.fail("/index.json", HttpServer::Fault::truncate, 1);  // no size known: a curl error, retried
  const StreamingDataset direct(StreamingOptions().local(remote.path()));
  const StreamingDataset ds(
      StreamingOptions().remote(server.url()).local(cache.path()).retry_backoff(0.01).prefetch(0));
  expect_same(read_all(ds), read_all(direct));
  EXPECT_EQ(server.requests("/index.json"), 2);
  EXPECT_EQ(server.requests("/shard.00000.mds"), 1);
  EXPECT_EQ(server.requests("/shard.00001.mds"), 2);
  EXPECT_EQ(server.requests("/shard.00003.mds"), 3);
  const auto stats = ds.cache()->stats();
  EXPECT_EQ(stats.downloads, 6);
  EXPECT_EQ(stats.failed_attempts, 4);
  expect_cache_intact(remote.path(), cache.path());
}

TEST(ShardCache, HttpWithPrefetchReadsTheSameEpoch) {
  TempDir remote("remote_src"), cache("remote_cache");
  write_data(remote.path(), 200, 10);
  HttpServer server(remote.path());
  server.fail("/shard.00007.mds", HttpServer::Fault::corrupt, 1);
  const StreamingDataset direct(StreamingOptions().local(remote.path()).order(data::StreamingOrderOptions().shuffle_block_size(30).partitions(2)));
  const int64_t limit = 5 * shard_bytes(remote.path(), 0);  // 5 of the 20 shards: evicting all along
  const StreamingDataset ds(StreamingOptions()
                                .remote(server.url())
                                .local(cache.path())
                                .retry_backoff(0.01)
                                .prefetch(3)
                                .cache_limit(std::to_string(limit))
                                .order(data::StreamingOrderOptions().shuffle_block_size(30).partitions(2)));
  for (int pass = 0; pass < 2; ++pass) expect_same(read_epoch(ds, 16), read_epoch(direct, 16));
  EXPECT_LE(ds.cache()->usage(), limit);
  EXPECT_GT(ds.cache()->stats().evicted.size(), 20u);
  EXPECT_EQ(server.requests("/shard.00007.mds") >= 2, true);
  expect_cache_intact(remote.path(), cache.path());
}

TEST(ShardCache, CorruptDownloadIsNeverLeftUnderItsName) {
  TempDir remote("remote_src"), cache("remote_cache");
  write_data(remote.path(), 30, 10);
  HttpServer server(remote.path());
  server.fail("/shard.00002.mds", HttpServer::Fault::corrupt, 1);
  ShardCache c(ShardCacheOptions().remote(server.url()).local(cache.path()).download_retry(0).prefetch(0));
  EXPECT_THAT([&] { c.acquire(2); },
              ::testing::ThrowsMessage<InputError>(
                  ::testing::AllOf(HasSubstr("cannot fetch shard 2 (shard.00002.mds) from " + server.url() +
                                           "/shard.00002.mds (1 attempt; the last failed: corrupt: its xxh3_64 hash is"),
                                 HasSubstr("index.json says"))));
  EXPECT_FALSE(fs::exists(cache.path() + "/shard.00002.mds"));
  EXPECT_FALSE(fs::exists(cache.path() + "/shard.00002.mds.tmp"));
  // The next read fetches it again and gets it right.
  const auto shard = c.acquire(2);
  EXPECT_EQ(shard->sample(3).tensor("label").item<int64_t>(), 23);
  expect_cache_intact(remote.path(), cache.path());

  // Without hashes, the size still catches a truncated download.
  TempDir remote2("remote_src"), cache2("remote_cache");
  write_data(remote2.path(), 30, 10, /*hashes=*/false);
  HttpServer server2(remote2.path());
  server2.fail("/shard.00000.mds", HttpServer::Fault::truncate, 1);
  ShardCache c2(ShardCacheOptions().remote(server2.url()).local(cache2.path()).download_retry(0).prefetch(0));
  EXPECT_THAT([&] { c2.acquire(0); }, ::testing::ThrowsMessage<InputError>(HasSubstr("(1 attempt; the last failed:")));
  EXPECT_FALSE(fs::exists(cache2.path() + "/shard.00000.mds"));
  EXPECT_EQ(c2.acquire(0)->size(), 10);
}

TEST(ShardCache, RetryExhaustionIsAClearError) {
  TempDir remote("remote_src"), cache("remote_cache");
  write_data(remote.path(), 30, 10);
  HttpServer server(remote.path());
  server.fail("/shard.00001.mds", HttpServer::Fault::unavailable, -1);
  ShardCache c(
      ShardCacheOptions().remote(server.url()).local(cache.path()).download_retry(3).retry_backoff(0.01).prefetch(0));
  EXPECT_THAT([&] { c.acquire(1); },
              ::testing::ThrowsMessage<InputError>(::testing::AllOf(
                  HasSubstr("remote: cannot fetch shard 1 (shard.00001.mds) from " + server.url() + "/shard.00001.mds"),
                  HasSubstr("4 attempts"), HasSubstr("503"))));
  EXPECT_EQ(server.requests("/shard.00001.mds"), 4);
  EXPECT_EQ(c.stats().failed_attempts, 4);
  EXPECT_FALSE(fs::exists(cache.path() + "/shard.00001.mds"));

  // An unreachable remote fails at construction, naming index.json's URL (in a recipe: streaming.remote).
  TempDir cache2("remote_cache");
  EXPECT_THAT([&] { StreamingDataset(StreamingOptions().remote(server.url() + "/nothing").local(cache2.path()).download_retry(1).retry_backoff(0.01)); },
              ::testing::ThrowsMessage<InputError>(::testing::AllOf(
                  HasSubstr("streaming.remote: cannot fetch index.json from " + server.url() + "/nothing/index.json"),
                  HasSubstr("2 attempts"), HasSubstr("404"))));
  EXPECT_THAT([&] { StreamingDataset(StreamingOptions().remote("/no/such/folder").local(cache2.path()).download_retry(0)); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("cannot open /no/such/folder/index.json")));
}

/// An HTTPS server over a folder: Python's http.server behind TLS with a self-signed certificate for 127.0.0.1
/// (made with the openssl command), in a child process stopped at destruction. `ok()` is false, with the reason in
/// `why`, when python3 or openssl is missing or the server did not come up within 20 s.
class HttpsServer {
 public:
  HttpsServer(const std::string& root, const std::string& dir) : cert_(dir + "/cert.pem") {
    const std::string key = dir + "/key.pem", port_file = dir + "/port";
    if (!fs::exists("/usr/bin/openssl") || !fs::exists("/usr/bin/python3")) {
      why = "needs /usr/bin/openssl and /usr/bin/python3";
      return;
    }
    const std::string make_cert = "/usr/bin/openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
                                  "-addext subjectAltName=IP:127.0.0.1 -keyout '" + key + "' -out '" + cert_ +
                                  "' >/dev/null 2>&1";
    if (std::system(make_cert.c_str()) != 0) {
      why = "openssl could not make a certificate";
      return;
    }
    const std::string script =
        "import functools, http.server, ssl, sys\n"
        "root, cert, key, port_file = sys.argv[1:5]\n"
        "class Quiet(http.server.SimpleHTTPRequestHandler):\n"
        "    def log_message(self, *args): pass\n"
        "server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=root))\n"
        "context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
        "context.load_cert_chain(cert, key)\n"
        "server.socket = context.wrap_socket(server.socket, server_side=True)\n"
        "open(port_file + '.tmp', 'w').write(str(server.server_address[1]))\n"
        "import os; os.rename(port_file + '.tmp', port_file)\n"
        "server.serve_forever()\n";
    std::vector<std::string> args{"/usr/bin/python3", "-c", script, root, cert_, key, port_file};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
      pid_ = -1;
      why = "cannot start python3";
      return;
    }
    for (int i = 0; i < 400 && !fs::exists(port_file); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!fs::exists(port_file)) {
      why = "the HTTPS server did not start";
      return;
    }
    url_ = "https://127.0.0.1:" + test::read_file(port_file);
  }
  ~HttpsServer() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;
  bool ok() const { return !url_.empty(); }
  const std::string& url() const { return url_; }
  /// The server's certificate, which is its own authority.
  const std::string& cert() const { return cert_; }
  std::string why;

 private:
  std::string cert_, url_;
  pid_t pid_ = -1;
};

TEST(ShardCache, HttpsRemoteReadsAsTheRemoteWithItsAuthorityGivenAsCaBundle) {
  TempDir remote("remote_src"), cache("remote_cache"), cache2("remote_cache"), certs("remote_certs");
  write_data(remote.path(), 45, 10);
  HttpsServer server(remote.path(), certs.path());
  ASSERT_TRUE(server.ok()) << server.why;
  const StreamingDataset direct(StreamingOptions().local(remote.path()));

  // The system's authorities do not know a self-signed certificate: a clear error that says what to do.
  EXPECT_THAT([&] { StreamingDataset(StreamingOptions().remote(server.url()).local(cache.path()).download_retry(0)); },
              ::testing::ThrowsMessage<InputError>(::testing::AllOf(
                  HasSubstr("streaming.remote: cannot fetch index.json from " + server.url() + "/index.json"),
                  HasSubstr("certificate"), HasSubstr("as ca_bundle"))));
  EXPECT_FALSE(fs::exists(cache.path() + "/index.json"));

  const StreamingDataset ds(StreamingOptions().remote(server.url()).local(cache.path()).ca_bundle(server.cert()));
  expect_same(read_epoch(ds, 16), read_epoch(direct, 16));
  expect_same(read_all(ds), read_all(direct));
  expect_cache_intact(remote.path(), cache.path());

  // Another authority's file: refused too, naming it.
  TempDir other_certs("remote_certs");
  HttpsServer other(remote.path(), other_certs.path());
  ASSERT_TRUE(other.ok()) << other.why;
  EXPECT_THAT([&] {
    StreamingDataset(StreamingOptions().remote(server.url()).local(cache2.path()).download_retry(0).ca_bundle(other.cert()));
  },
              ::testing::ThrowsMessage<InputError>(HasSubstr("not signed by an authority of ca_bundle " + other.cert())));
}

TEST(ShardCache, OptionErrors) {
  TempDir remote("remote_src"), cache("remote_cache");
  write_data(remote.path(), 30, 10);
  EXPECT_THAT([&] { StreamingDataset(StreamingOptions().local(remote.path()).cache_limit("1gb")); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("streaming.cache_limit: set without a remote")));
  EXPECT_THAT([&] { StreamingDataset(StreamingOptions().remote(remote.path())); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("streaming.local: no folder given; a remote needs")));
  EXPECT_THAT([&] { StreamingDataset(StreamingOptions().remote(remote.path()).local(remote.path())); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("streaming.local: the cache folder")));
  EXPECT_THAT([&] { StreamingDataset(StreamingOptions().remote(remote.path()).local(cache.path()).cache_limit("lots")); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("streaming.cache_limit: \"lots\" does not start with a number")));
  // Less than two of the largest shard: refused before anything is read.
  const int64_t largest = shard_bytes(remote.path(), 0);
  EXPECT_THAT([&] {
    StreamingDataset(StreamingOptions().remote(remote.path()).local(cache.path()).cache_limit(std::to_string(2 * largest - 1)));
  },
              ::testing::ThrowsMessage<InputError>(HasSubstr("streaming.cache_limit: " + std::to_string(2 * largest - 1) +
                                                           " bytes is less than reading needs at once")));
}

TEST(ShardCache, RecipeKeysAreCheckedWithTheirPlace) {
  TempDir remote("remote_src"), cache("remote_cache");
  write_data(remote.path() + "/train", 40, 10);
  const auto recipe = [&](const std::string& streaming) {
    return "max_duration: 1ep\nmodel: {mlp: {hidden: [8]}}\noptimizer: {sgd: {lr: 0.1}}\n"
           "data:\n  train:\n    dataset: {streaming: {" + streaming + "}}\n    loader: {batch_size: 8}\n";
  };
  const std::string base = "remote: " + remote.path() + ", local: " + cache.path() + ", split: train, num_classes: 40";
  const tessera::Run run = build_run(Recipe::parse(recipe(base + ", cache_limit: 1mb, download_retry: 1"), "r.yaml"));
  EXPECT_EQ(run.components.train_dataloader->num_samples(), 40);
  EXPECT_TRUE(fs::exists(cache.path() + "/train/index.json"));
  // A bad value points at its own line and column (the dataset's map starts at column 15 of line 6).
  const auto error_at = [&](const std::string& extra) {
    const std::string streaming = base + ", " + extra;
    const std::string message = testing::input_error_of([&] { build_run(Recipe::parse(recipe(streaming), "r.yaml")); });
    const size_t value = extra.find(": ") + 2;  // the value's column: after "    dataset: {streaming: {", base, ", "
    EXPECT_THAT(message, HasSubstr("r.yaml:6:" + std::to_string(27 + base.size() + 2 + value))) << message;
    return message;
  };
  EXPECT_THAT(error_at("cache_limit: 10 parsecs"), HasSubstr("has an unknown unit \"parsecs\""));
  EXPECT_THAT(error_at("cache_limit: 100"), HasSubstr("is less than reading needs at once"));
  EXPECT_THAT(error_at("download_retry: -1"), HasSubstr("download_retry: -1 is out of range"));
  EXPECT_THAT(error_at("download_timeout: 0"), HasSubstr("download_timeout: 0 is out of range"));
  EXPECT_THAT(error_at("ca_bundle: /no/such/authorities.pem"),
              HasSubstr("ca_bundle: no file /no/such/authorities.pem (expected a PEM file of certificate authorities"));
}

TEST(ShardCache, LimitHoldsWithLeastRecentlyUsedEviction) {
  TempDir remote("remote_src"), cache("remote_cache");
  write_data(remote.path(), 60, 10);
  const int64_t b = shard_bytes(remote.path(), 0);
  for (int64_t k = 1; k < 6; ++k) ASSERT_EQ(shard_bytes(remote.path(), k), b);
  const int64_t limit = 3 * b;
  ShardCache c(ShardCacheOptions().remote(remote.path()).local(cache.path()).cache_limit(limit).prefetch(0));
  const auto use = [&](int64_t k) {
    const auto shard = c.acquire(k);
    EXPECT_EQ(shard->sample(0).tensor("label").item<int64_t>(), 10 * k);
    EXPECT_LE(c.usage(), limit) << "after shard " << k;
    return shard;
  };
  for (int64_t k : {0, 1, 2, 0, 3}) use(k);  // 1 is the least recently used when 3 comes
  EXPECT_EQ(c.stats().evicted, (std::vector<int64_t>{1}));
  use(4);
  use(5);
  EXPECT_EQ(c.stats().evicted, (std::vector<int64_t>{1, 2, 0}));
  EXPECT_EQ(c.cached(), (std::vector<int64_t>{3, 4, 5}));
  {
    const auto pin3 = use(3), pin4 = use(4);  // pinned: never evicted, though 5 is used later
    use(5);
    use(0);
    EXPECT_EQ(c.stats().evicted, (std::vector<int64_t>{1, 2, 0, 5}));
    // Everything pinned and full: a read waits for room, then says why.
    const auto pin0 = c.acquire(0);
    ShardCache impatient(
        ShardCacheOptions().remote(remote.path()).local(cache.path()).cache_limit(limit).prefetch(0).download_timeout(0.2));
    EXPECT_THAT([&] { impatient.acquire(1); },
                ::testing::ThrowsMessage<InputError>(HasSubstr("has no room for shard 1")));
    EXPECT_FALSE(fs::exists(cache.path() + "/shard.00001.mds.tmp"));
  }
  EXPECT_EQ(c.stats().downloads, 7);
  expect_cache_intact(remote.path(), cache.path());
}

// Two processes on one cache: this test binary run twice more, each running ShardCacheChild below.
TEST(ShardCacheChild, ReadsTheEpoch) {
  const char* url = std::getenv("TESSERA_CACHE_CHILD_URL");
  if (url == nullptr) GTEST_SKIP() << "runs only as the child process of ShardCache.TwoProcessesShareOneCache";
  const StreamingDataset ds(StreamingOptions()
                                .remote(url)
                                .local(std::getenv("TESSERA_CACHE_CHILD_LOCAL"))
                                .cache_limit(std::getenv("TESSERA_CACHE_CHILD_LIMIT"))
                                .order(data::StreamingOrderOptions().shuffle_block_size(25).partitions(2)));
  const Batch got = read_epoch(ds, 16);
  const at::Tensor in = got.input().contiguous(), tg = got.target().contiguous();
  test::write_file(std::getenv("TESSERA_CACHE_CHILD_OUT"),
                   mds::hash_hex("xxh3_64", in.data_ptr(), static_cast<size_t>(in.nbytes())) +
                       mds::hash_hex("xxh3_64", tg.data_ptr(), static_cast<size_t>(tg.nbytes())));
}

TEST(ShardCache, TwoProcessesShareOneCache) {
  TempDir remote("remote_src"), cache("remote_cache"), out("remote_out");
  write_data(remote.path(), 150, 10);
  HttpServer server(remote.path());
  const StreamingDataset direct(StreamingOptions().local(remote.path()).order(data::StreamingOrderOptions().shuffle_block_size(25).partitions(2)));
  const Batch want = read_epoch(direct, 16);
  const at::Tensor in = want.input().contiguous(), tg = want.target().contiguous();
  const std::string expected = mds::hash_hex("xxh3_64", in.data_ptr(), static_cast<size_t>(in.nbytes())) +
                               mds::hash_hex("xxh3_64", tg.data_ptr(), static_cast<size_t>(tg.nbytes()));
  for (const std::string limit : {"", "100mb"}) {  // without and with eviction bookkeeping (no eviction needed)
    SCOPED_TRACE("limit " + limit);
    fs::remove_all(cache.path());
    std::vector<pid_t> pids;
    for (int child = 0; child < 2; ++child) {
      std::vector<std::string> env_strings;
      for (char** e = environ; *e != nullptr; ++e)
        if (std::string(*e).rfind("TESSERA_CACHE_CHILD_", 0) != 0 && std::string(*e).rfind("GTEST_", 0) != 0)
          env_strings.emplace_back(*e);
      env_strings.push_back("TESSERA_CACHE_CHILD_URL=" + server.url());
      env_strings.push_back("TESSERA_CACHE_CHILD_LOCAL=" + cache.path());
      env_strings.push_back("TESSERA_CACHE_CHILD_LIMIT=" + limit);
      env_strings.push_back("TESSERA_CACHE_CHILD_OUT=" + out.path() + "/" + std::to_string(child));
      std::vector<char*> envp;
      for (auto& s : env_strings) envp.push_back(s.data());
      envp.push_back(nullptr);
      std::string exe = fs::read_symlink("/proc/self/exe").string(), filter = "--gtest_filter=ShardCacheChild.*";
      std::vector<char*> argv = {exe.data(), filter.data(), nullptr};
      pid_t pid = 0;
      ASSERT_EQ(::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv.data(), envp.data()), 0);
      pids.push_back(pid);
    }
    for (pid_t pid : pids) {
      int status = 0;
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
    }
    for (int child = 0; child < 2; ++child) EXPECT_EQ(test::read_file(out.path() + "/" + std::to_string(child)), expected);
    for (int64_t k = 0; k < 15; ++k) {
      char name[32];
      std::snprintf(name, sizeof name, "/shard.%05d.mds", static_cast<int>(k));
      EXPECT_EQ(server.requests(name), limit.empty() ? 1 : 2) << name;  // once per round, whichever child fetched it
    }
    expect_cache_intact(remote.path(), cache.path());
  }
  EXPECT_EQ(server.requests("/index.json"), 4);
}

}  // namespace
}  // namespace tessera
