#pragma once
/// A local cache of an MDS data set's shards fetched from a remote (docs/streaming.md, "Remote to local"):
/// `index.json` first, then shards on demand or ahead of the reader on a background thread. Downloads go to a
/// temporary file, are checked against the index's byte size and its computable hashes, and are renamed into
/// place, so a truncated or corrupt shard is never read under its final name; failures are retried with
/// exponential backoff. Shards are evicted least-recently-used when the cache would pass its limit, never one in
/// use. Several processes (the ranks of a local run) share one cache directory: a per-shard lock file (flock) lets
/// one process download while the others wait, and a cache-wide lock file serialises eviction.
///
///     ShardCache cache(ShardCacheOptions().remote("http://host/data/train").local("/tmp/cache/train")
///                                         .cache_limit(parse_byte_size("10gb", "cache_limit")));
///     std::shared_ptr<const mds::Shard> shard = cache.acquire(3);  // present and pinned while held
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <tessera/data/mds.h>
#include <tessera/options.h>

namespace tessera::data {

/// "1000", "64kb", "10gb", "1.5GiB": a byte count (decimal units kb, mb, gb, tb = 10^3.., binary kib, mib, gib,
/// tib = 2^10..; case-insensitive; a bare number is bytes). InputError "<what>: ..." otherwise.
int64_t parse_byte_size(const std::string& text, const std::string& what);

struct ShardCacheOptions {
  /// A folder, `file://PATH` or `http(s)://URL` holding index.json and the shards.
  TESSERA_OPTION(std::string, remote) = "";
  /// The cache folder (created when missing).
  TESSERA_OPTION(std::string, local) = "";
  /// Bytes the cache's shard files may take (0 = no limit).
  TESSERA_OPTION(int64_t, cache_limit) = 0;
  /// Retries of a failed download (so 1 + download_retry attempts).
  TESSERA_OPTION(int64_t, download_retry) = 2;
  /// Seconds before the first retry; doubled for each further one.
  TESSERA_OPTION(double, retry_backoff) = 0.5;
  /// Seconds one attempt may take (http: also the connect timeout), and the longest a read waits for room in a
  /// full cache.
  TESSERA_OPTION(double, download_timeout) = 60;
  /// Shards fetched ahead of the reader (0 = none: each shard is fetched when first read).
  TESSERA_OPTION(int64_t, prefetch) = 4;
  /// Also check a shard file's hashes each time this process opens it (downloads are always checked).
  TESSERA_OPTION(bool, verify_hashes) = false;
  /// A PEM file of the certificate authorities an https:// remote's certificate is checked against ("" = the
  /// system's, /etc/ssl/certs): a server whose certificate your own authority signed.
  TESSERA_OPTION(std::string, ca_bundle) = "";
  template <class V>
  void visit(V& v) {
    v("remote", remote_, "folder, file:// or http(s):// URL of index.json and the shards", Any{});
    v("local", local_, "the cache folder", Any{});
    v("cache_limit", cache_limit_, "bytes the shard files may take (0 = no limit)", Range::at_least(0));
    v("download_retry", download_retry_, "retries of a failed download", Range::at_least(0));
    v("retry_backoff", retry_backoff_, "seconds before the first retry (doubled for each next)", Range::at_least(0));
    v("download_timeout", download_timeout_, "seconds one download attempt may take", Range::positive());
    v("prefetch", prefetch_, "shards fetched ahead of the reader", Range::at_least(0));
    v("verify_hashes", verify_hashes_, "check a shard's hashes each time it is opened", Any{});
    v("ca_bundle", ca_bundle_, "PEM file of certificate authorities for https:// remotes (\"\" = the system's)", Any{});
  }
};

/// What a ShardCache did (this process only).
struct ShardCacheStats {
  int64_t downloads = 0;        ///< shard files downloaded (successful attempts)
  int64_t failed_attempts = 0;  ///< attempts that failed (connection, size or hash) and were retried or gave up
  int64_t bytes_downloaded = 0;
  std::vector<int64_t> evicted;  ///< shards this process evicted, in order
};

class ShardCache {
 public:
  /// Fetches index.json from the remote (to a temporary file, renamed into place) and reads it. InputError when
  /// the remote cannot be reached after the retries, the index is corrupt, or the limit is below what reading
  /// needs at once (two of the largest shard files: one read while the next is fetched).
  explicit ShardCache(ShardCacheOptions options);
  ~ShardCache();
  ShardCache(const ShardCache&) = delete;
  ShardCache& operator=(const ShardCache&) = delete;

  const ShardCacheOptions& options() const;
  const mds::Index& index() const;
  /// Shard `k`, present in the cache and opened; it is pinned (never evicted, by any process) while the returned
  /// pointer or a copy of it lives. Fetches it now when missing (waiting while another process fetches it), and
  /// waits up to download_timeout for room when the cache is full of pinned shards. Marks it used (LRU).
  std::shared_ptr<const mds::Shard> acquire(int64_t k);
  /// The shards the reader will need next, in order: the background thread fetches and pins up to `prefetch` of
  /// them (fewer when they would pass half the limit) and unpins the ones no longer listed.
  void prefetch(std::vector<int64_t> upcoming);
  /// Bytes of shard files (and downloads in progress) in the cache folder now.
  int64_t usage() const;
  /// Shards whose file is in the cache folder now.
  std::vector<int64_t> cached() const;
  ShardCacheStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::data
