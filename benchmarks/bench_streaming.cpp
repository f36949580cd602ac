// Tessera's side of the streaming benchmark (benchmarks/bench_streaming.sh runs it beside MosaicML Streaming's
// StreamingDataset with a PyTorch DataLoader, benchmarks/bench_streaming.py, over the same shards):
//
//  * throughput: samples/s over whole shuffled epochs of a DataLoader over a StreamingDataset (batches of float
//    [B, 1, 28, 28] images in [0, 1] and int64 labels), per number of loader workers (median of the epochs);
//  * resume: seconds from constructing the dataset to holding the first batch of a run resumed at 90% of an
//    epoch (median of fresh constructions).
//
// Default options on both sides (order, partitions, num_classes), as a user gets them. With --stream (repeated)
// instead of --folder, the folders are mixed streams, each read whole, in batches of --batching (random,
// stratified, per_stream). With --tokens S the folder holds token samples (column tokens, S + 1 bytes each, as
// `tessera-shard write --text` writes them) and batches are int64 [B, S] next-token inputs and targets.
//
//   ./benchmarks/bench_streaming (--folder DIR | --stream DIR --stream DIR ...) [--batching random] [--batch 128]
//                                [--epochs 3] [--workers 0,2] [--trials 5] [--threads 1] [--tokens S] [--json OUT]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include <tessera/data/dataloader.h>
#include <tessera/data/streaming.h>

namespace {

using Clock = std::chrono::steady_clock;
namespace data = tessera::data;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Setup {
  std::string folder, json, batching = "random";
  std::vector<std::string> streams;
  int64_t batch = 128, epochs = 3, trials = 5, threads = 1, tokens = 0;
  std::vector<int64_t> workers{0, 2};
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "bench_streaming: %s\nusage: bench_streaming (--folder DIR | --stream DIR --stream DIR ...) "
               "[--batching random] [--batch 128] [--epochs 3] [--workers 0,2] [--trials 5] [--threads 1] "
               "[--tokens S] [--json OUT]\n",
               why);
  std::exit(2);
}

int64_t whole(const char* text, const char* what) {
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (*text == '\0' || *end != '\0' || v < 0) usage((std::string(what) + " expects a whole number >= 0").c_str());
  return v;
}

Setup parse(int argc, char** argv) {
  Setup s;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing the value of " + a).c_str());
    const char* v = argv[++i];
    if (a == "--folder") s.folder = v;
    else if (a == "--stream") s.streams.push_back(v);
    else if (a == "--batching") s.batching = v;
    else if (a == "--json") s.json = v;
    else if (a == "--batch") s.batch = whole(v, "--batch");
    else if (a == "--epochs") s.epochs = whole(v, "--epochs");
    else if (a == "--trials") s.trials = whole(v, "--trials");
    else if (a == "--threads") s.threads = whole(v, "--threads");
    else if (a == "--tokens") s.tokens = whole(v, "--tokens");
    else if (a == "--workers") {
      s.workers.clear();
      std::stringstream list(v);
      for (std::string w; std::getline(list, w, ',');) s.workers.push_back(whole(w.c_str(), "--workers"));
    } else usage(("unknown option " + a).c_str());
  }
  if (s.folder.empty() == s.streams.empty()) usage("give --folder, or --stream for each of several folders");
  if (s.batch < 1 || s.epochs < 1 || s.trials < 1 || s.workers.empty()) usage("counts must be >= 1");
  return s;
}

std::shared_ptr<data::DataLoader> make_loader(const Setup& s, int64_t workers) {
  data::StreamingOptions options = data::StreamingOptions().local(s.folder);
  if (!s.streams.empty()) {
    std::vector<data::StreamOptions> streams;
    for (const std::string& folder : s.streams) streams.push_back(data::StreamOptions().local(folder));
    options = data::StreamingOptions().streams(streams).batching_method(s.batching);
  }
  if (s.tokens > 0) options.input("tokens").seq_length(s.tokens);
  auto ds = std::make_shared<data::StreamingDataset>(options);
  return std::make_shared<data::DataLoader>(ds, data::DataLoaderOptions().batch_size(s.batch).workers(workers));
}

/// Samples/s of each whole epoch; the checksum of the labels keeps the batches from being optimised away and
/// shows that every epoch delivered every sample.
std::vector<double> epochs_per_second(const Setup& s, int64_t workers, int64_t& samples) {
  auto loader = make_loader(s, workers);
  std::vector<double> rates;
  for (int64_t e = 0; e < s.epochs; ++e) {
    const auto t0 = Clock::now();
    loader->start_epoch(42, e);
    samples = 0;
    while (auto batch = loader->next()) samples += batch->input().size(0);
    rates.push_back(static_cast<double>(samples) / seconds_since(t0));
  }
  return rates;
}

/// Seconds from constructing the dataset to the first batch of epoch 0 resumed at 90% of it.
double resume_seconds(const Setup& s, int64_t workers, int64_t& first_batch) {
  const auto t0 = Clock::now();
  auto loader = make_loader(s, workers);
  first_batch = loader->num_batches() * 9 / 10;
  loader->start_epoch(42, 0, first_batch);
  auto batch = loader->next();
  const double seconds = seconds_since(t0);
  if (!batch || batch->input().size(0) != s.batch) {
    std::fprintf(stderr, "bench_streaming: the epoch resumed at batch %lld gave no full batch\n",
                 static_cast<long long>(first_batch));
    std::exit(1);
  }
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  const Setup s = parse(argc, argv);
  at::set_num_threads(static_cast<int>(s.threads));
  std::ostringstream json;
  json << "{\"side\": \"tessera\", \"folder\": \"" << (s.folder.empty() ? s.streams.front() : s.folder)
       << "\", \"batch\": " << s.batch << ", \"runs\": [";
  std::printf("tessera   %-10s %8s %14s %22s\n", "workers", "samples", "samples/s", "resume at 90% (s)");
  for (size_t i = 0; i < s.workers.size(); ++i) {
    const int64_t w = s.workers[i];
    int64_t samples = 0, first_batch = 0;
    const std::vector<double> rates = epochs_per_second(s, w, samples);
    std::vector<double> resumes;
    for (int64_t t = 0; t < s.trials; ++t) resumes.push_back(resume_seconds(s, w, first_batch));
    std::printf("tessera   %-10lld %8lld %14.0f %22.4f\n", static_cast<long long>(w), static_cast<long long>(samples),
                median(rates), median(resumes));
    json << (i ? ", " : "") << "{\"workers\": " << w << ", \"samples\": " << samples
         << ", \"samples_per_s\": " << median(rates) << ", \"resume_first_batch_s\": " << median(resumes)
         << ", \"resume_batch\": " << first_batch << "}";
  }
  json << "]}\n";
  if (!s.json.empty()) std::ofstream(s.json) << json.str();
  return 0;
}
