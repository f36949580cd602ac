#pragma once
/// Tessera's whole public API in one include.
///
///     #include <tessera/tessera.h>
#include <tessera/version.h>

#include <tessera/error.h>
#include <tessera/event.h>
#include <tessera/options.h>
#include <tessera/time.h>
#include <tessera/rng.h>
#include <tessera/batch.h>
#include <tessera/device.h>
#include <tessera/state.h>
#include <tessera/algorithm.h>
#include <tessera/callback.h>
#include <tessera/engine.h>
#include <tessera/class_metrics.h>
#include <tessera/metrics.h>
#include <tessera/evaluator.h>
#include <tessera/trainer.h>
#include <tessera/amp.h>
#include <tessera/grad_scaler.h>
#include <tessera/microbatching.h>

#include <tessera/data/dataset.h>
#include <tessera/data/transforms.h>
#include <tessera/data/dataloader.h>
#include <tessera/data/text.h>

#include <tessera/models/model.h>
#include <tessera/models/mlp.h>
#include <tessera/models/cnn.h>
#include <tessera/models/resnet.h>
#include <tessera/models/gpt.h>
#include <tessera/models/hf_gpt2.h>
#include <tessera/models/hf_llama.h>
#include <tessera/models/huggingface.h>
#include <tessera/models/bert.h>
#include <tessera/models/branch_gate.h>
#include <tessera/models/generate.h>

#include <tessera/optim/optimizer.h>
#include <tessera/optim/scheduler.h>

#include <tessera/callbacks/progress_bar.h>
#include <tessera/callbacks/metric_writers.h>
#include <tessera/callbacks/console_summary.h>
#include <tessera/callbacks/stoppers.h>
#include <tessera/callbacks/monitors.h>
#include <tessera/callbacks/generate.h>
#include <tessera/callbacks/image_visualizer.h>
#include <tessera/callbacks/system_metrics.h>

#include <tessera/checkpoint.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
