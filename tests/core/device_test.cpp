// The `device` option (forms, resolution, the errors for CUDA where there is none), the device-side non-finite
// bookkeeping of the trainer's CUDA loop and the metrics' deferred sums, exercised on CPU tensors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <tessera/device.h>
#include <tessera/error.h>
#include <tessera/metrics.h>

namespace tessera {
namespace {

using ::testing::HasSubstr;

TEST(Device, FormsAreCpuCudaCudaNAndAuto) {
  for (const char* ok : {"cpu", "cuda", "cuda:0", "cuda:7", "cuda:12", "auto"}) EXPECT_TRUE(is_device_spec(ok)) << ok;
  for (const char* bad : {"", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "cuda 0", "cpu:0", "mps",
                          "cuda:123456"}) {
    EXPECT_FALSE(is_device_spec(bad)) << bad;
    EXPECT_THAT(device_problem(bad), HasSubstr("is not a device")) << bad;
    EXPECT_THAT(device_problem(bad), HasSubstr("expected cpu, cuda, cuda:N (N = 0, 1, ...) or auto")) << bad;
  }
  EXPECT_THAT(device_problem("gpu"), HasSubstr("(did you mean \"cuda\"?)"));
  EXPECT_THAT(device_problem("cpuu"), HasSubstr("(did you mean \"cpu\"?)"));
}

TEST(Device, CpuAndAutoResolveHereAndCudaIsRefusedWithoutIt) {
  EXPECT_EQ(resolve_device("cpu"), c10::Device(c10::kCPU));
  EXPECT_EQ(device_problem("cpu"), "");
  EXPECT_EQ(device_problem("auto"), "");
  if (at::hasCUDA()) {
    EXPECT_EQ(resolve_device("auto"), c10::Device(c10::kCUDA, 0));
    EXPECT_EQ(resolve_device("cuda"), c10::Device(c10::kCUDA, 0));
    EXPECT_THAT(device_problem("cuda:999"), HasSubstr("cuda:999 was requested but"));
    return;
  }
  EXPECT_EQ(resolve_device("auto"), c10::Device(c10::kCPU));
  for (const char* spec : {"cuda", "cuda:0", "cuda:3"}) {
    try {
      resolve_device(spec);
      ADD_FAILURE() << spec << " resolved on a machine without CUDA";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()), std::string("trainer.device: ") + spec +
                                           " was requested but CUDA is not available here (no CUDA device is "
                                           "visible, or this LibTorch was built without CUDA); use device: cpu "
                                           "or auto");
    }
  }
  EXPECT_THROW(resolve_device("bogus", "x"), InputError);
}

TEST(Device, ToDeviceReturnsTheSameTensorWhenItIsThere) {
  const at::Tensor t = at::arange(4);
  EXPECT_TRUE(to_device(t, c10::Device(c10::kCPU)).is_same(t));
  EXPECT_FALSE(to_device(at::Tensor(), c10::Device(c10::kCPU)).defined());
}

TEST(NonfiniteTracker, NamesTheFirstNonFiniteBatchAndItsLoss) {
  NonfiniteTracker t;
  EXPECT_FALSE(t.recorded());
  EXPECT_FALSE(t.first().has_value());
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  t.record(at::scalar_tensor(0.5, at::kFloat), 0);
  t.record(at::scalar_tensor(1.5, at::kFloat), 1);
  EXPECT_TRUE(t.recorded());
  EXPECT_FALSE(t.first().has_value()) << "every loss so far was finite";
  t.record(at::scalar_tensor(inf, at::kFloat), 2);
  t.record(at::scalar_tensor(nan, at::kFloat), 3);   // a later bad batch does not replace the first
  t.record(at::scalar_tensor(0.25, at::kFloat), 4);  // nor does a finite one
  auto found = t.first();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->batch, 2);
  EXPECT_EQ(found->loss, inf);
  t.reset();
  EXPECT_FALSE(t.recorded());
  t.record(at::full({1}, -inf, at::kDouble), 123456789012);  // one-element tensors of any dtype; large batches
  found = t.first();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->batch, 123456789012);
  EXPECT_EQ(found->loss, -inf);
  t.reset();
  t.record(at::scalar_tensor(nan, at::kFloat), 0);
  ASSERT_TRUE(t.first().has_value());
  EXPECT_EQ(t.first()->batch, 0);
  EXPECT_TRUE(std::isnan(t.first()->loss));
}

TEST(NonfiniteTracker, RecordsWithoutTouchingTheLossOrItsGraph) {
  NonfiniteTracker t;
  at::Tensor w = at::ones({}).requires_grad_(true);
  at::Tensor loss = w * 2;
  t.record(loss, 5);
  loss.backward();
  EXPECT_EQ(w.grad().item<double>(), 2.0);
  EXPECT_FALSE(t.first().has_value());
}

/// The deferred metric sums (device tensors, read back by compute) give exactly the host path's values.
TEST(Metrics, DeferredSumsEqualTheImmediateOnes) {
  at::manual_seed(4);
  for (int64_t k : {1, 3}) {
    Accuracy immediate(k), deferred(k);
    CrossEntropyMetric ce_immediate, ce_deferred;
    deferred.set_deferred(true);
    ce_deferred.set_deferred(true);
    EXPECT_TRUE(deferred.deferred());
    EXPECT_FALSE(immediate.deferred());
    for (int round = 0; round < 2; ++round) {
      for (Metric* m : {static_cast<Metric*>(&immediate), static_cast<Metric*>(&deferred),
                        static_cast<Metric*>(&ce_immediate), static_cast<Metric*>(&ce_deferred)}) {
        m->reset();
      }
      EXPECT_EQ(deferred.compute(), 0.0);
      for (int b = 0; b < 5; ++b) {
        const at::Tensor logits = at::randn({7 + b, 5});
        const Batch batch(at::zeros({7 + b, 1}), at::randint(0, 5, {7 + b}));
        immediate.update(logits, batch);
        deferred.update(logits, batch);
        ce_immediate.update(logits, batch);
        ce_deferred.update(logits, batch);
      }
      EXPECT_EQ(deferred.compute(), immediate.compute()) << "top" << k;
      EXPECT_EQ(ce_deferred.compute(), ce_immediate.compute());  // bitwise: the same float64 additions
      EXPECT_GT(ce_deferred.compute(), 0.0);
    }
  }
}

}  // namespace
}  // namespace tessera
