#pragma once
/// Evaluators: a labelled data set, its metrics, and when to run.
#include <memory>
#include <string>
#include <vector>

#include <tessera/data/batch_source.h>
#include <tessera/metrics.h>
#include <tessera/time.h>

namespace tessera {

struct Evaluator {
  /// Name in logs: metrics are logged as "metrics/<label>/<metric>".
  std::string label = "eval";
  /// Tessera's DataLoader, or any other data::BatchSource.
  std::shared_ptr<data::BatchSource> dataloader;
  std::vector<std::shared_ptr<Metric>> metrics;
  /// Every `interval` (ep intervals fire at epoch end, ba/sp/dur at batch end); 0 = only at the end of fit.
  Time interval = Time(1, TimeUnit::Epoch);
  /// Evaluate at most this many batches (-1 = all).
  int64_t subset_batches = -1;
};

}  // namespace tessera
