#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/optim/scheduler.h>
#include <tessera/state.h>

using tessera::Time;
using tessera::TimeContext;
using tessera::Timestamp;
using ::testing::HasSubstr;
using namespace tessera::optim;

namespace {

/// 10 epochs of 10 batches of 10 samples.
TimeContext context() {
  TimeContext ctx;
  ctx.max_duration = Time::parse("10ep");
  ctx.batches_per_epoch = 10;
  ctx.samples_per_epoch = 100;
  return ctx;
}

double at_batch(const Scheduler& s, int64_t batch, const TimeContext& ctx = context()) {
  Timestamp ts;
  ts.batch = batch;
  ts.epoch = batch / ctx.batches_per_epoch;
  ts.batch_in_epoch = batch % ctx.batches_per_epoch;
  return s.alpha(ts, ctx);
}

template <class E = tessera::Error>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

/// The cosine schedule from 1 to 0.1 at fraction `pct` of its horizon.
double cosine_of(double pct) { return 0.1 + 0.9 * (1 + std::cos(M_PI * pct)) / 2; }

}  // namespace

TEST(Scheduler, ConstantWithWarmup) {
  auto s = make_constant_scheduler(ConstantSchedulerOptions().alpha(0.5).warmup(Time::parse("4ba")));
  EXPECT_EQ(s->name(), "constant");
  EXPECT_DOUBLE_EQ(at_batch(*s, 0), 0.125);  // (0 + 1) / 4 * 0.5
  EXPECT_DOUBLE_EQ(at_batch(*s, 1), 0.25);
  EXPECT_DOUBLE_EQ(at_batch(*s, 3), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*s, 10), 0.5);
  // Warmup in dur: 0.1 of 100 batches.
  auto d = make_constant_scheduler(ConstantSchedulerOptions().alpha(0.5).warmup(Time::parse("0.1dur")));
  EXPECT_DOUBLE_EQ(at_batch(*d, 4), 0.25);
  EXPECT_DOUBLE_EQ(at_batch(*d, 9), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*make_constant_scheduler({}), 0), 1.0);
}

TEST(Scheduler, StepDecaysEveryStepSize) {
  auto s = make_step_scheduler(StepSchedulerOptions().step_size(Time::parse("2ep")).gamma(0.1));
  EXPECT_EQ(s->name(), "step");
  EXPECT_DOUBLE_EQ(at_batch(*s, 0), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*s, 19), 1.0);
  EXPECT_NEAR(at_batch(*s, 20), 0.1, 1e-15);
  EXPECT_NEAR(at_batch(*s, 45), 0.01, 1e-15);
  // 50 samples = 5 batches of 10; warmup 2ba.
  auto sp = make_step_scheduler(
      StepSchedulerOptions().step_size(Time::parse("50sp")).gamma(0.5).warmup(Time::parse("2ba")));
  EXPECT_DOUBLE_EQ(at_batch(*sp, 0), 0.5);  // warmup 1/2
  EXPECT_DOUBLE_EQ(at_batch(*sp, 4), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*sp, 12), 0.25);
  // 0.3dur = 30 batches (a fractional conversion).
  auto dur = make_step_scheduler(StepSchedulerOptions().step_size(Time::parse("0.3dur")).gamma(0.5));
  EXPECT_DOUBLE_EQ(at_batch(*dur, 29), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*dur, 30), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*dur, 60), 0.25);
  EXPECT_THAT(message_of<tessera::InputError>(
                  [] { make_step_scheduler(StepSchedulerOptions().step_size(Time::parse("0ba"))); }),
              HasSubstr("step_size"));
  EXPECT_THROW(make_step_scheduler(StepSchedulerOptions().gamma(0)), tessera::InputError);
}

TEST(Scheduler, MultiStepCountsPassedMilestonesOfAnyUnit) {
  auto s = make_multistep_scheduler(
      MultiStepSchedulerOptions()
          .milestones({Time::parse("30ba"), Time::parse("5ep"), Time::parse("0.8dur")})
          .gamma(0.5));
  EXPECT_EQ(s->name(), "multistep");
  EXPECT_DOUBLE_EQ(at_batch(*s, 29), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*s, 30), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*s, 49), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*s, 50), 0.25);
  EXPECT_DOUBLE_EQ(at_batch(*s, 79), 0.25);
  EXPECT_DOUBLE_EQ(at_batch(*s, 80), 0.125);
  EXPECT_DOUBLE_EQ(at_batch(*s, 1000), 0.125);
  auto w = make_multistep_scheduler(
      MultiStepSchedulerOptions().milestones({Time::parse("2ba")}).gamma(0.1).warmup(Time::parse("5ba")));
  EXPECT_DOUBLE_EQ(at_batch(*w, 1), 0.4);
  EXPECT_NEAR(at_batch(*w, 2), 0.1 * 0.6, 1e-15);
  EXPECT_NEAR(at_batch(*w, 7), 0.1, 1e-15);
  const std::string msg = message_of<tessera::InputError>([] {
    make_multistep_scheduler(
        MultiStepSchedulerOptions().milestones({Time::parse("5ep"), Time::parse("3ep")}));
  });
  EXPECT_THAT(msg, HasSubstr("5ep"));
  EXPECT_THAT(msg, HasSubstr("3ep"));
}

TEST(Scheduler, LinearAfterWarmup) {
  auto s = make_linear_scheduler(LinearSchedulerOptions()
                                     .alpha_i(1.0)
                                     .alpha_f(0.2)
                                     .t_max(Time::parse("1dur"))
                                     .warmup(Time::parse("10ba")));
  EXPECT_EQ(s->name(), "linear");
  EXPECT_DOUBLE_EQ(at_batch(*s, 0), 0.1);  // tau = 0, warmup 1/10
  EXPECT_DOUBLE_EQ(at_batch(*s, 4), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*s, 9), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*s, 10), 1.0);
  EXPECT_NEAR(at_batch(*s, 55), 0.6, 1e-12);  // tau = 45 / 90
  EXPECT_NEAR(at_batch(*s, 100), 0.2, 1e-12);
  EXPECT_NEAR(at_batch(*s, 150), 0.2, 1e-12);
  // Default: 1 -> 0 over the run.
  auto d = make_linear_scheduler({});
  EXPECT_DOUBLE_EQ(at_batch(*d, 0), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*d, 25), 0.75);
}

TEST(Scheduler, CosineAfterWarmup) {
  auto s = make_cosine_scheduler(CosineSchedulerOptions().alpha_f(0.1).t_max(Time::parse("50ba")));
  EXPECT_EQ(s->name(), "cosine");
  EXPECT_DOUBLE_EQ(at_batch(*s, 0), 1.0);
  EXPECT_NEAR(at_batch(*s, 25), 0.55, 1e-12);
  EXPECT_NEAR(at_batch(*s, 50), 0.1, 1e-12);
  EXPECT_NEAR(at_batch(*s, 60), 0.1, 1e-12);
  // tau = 1/4: 0.1 + 0.9 * (1 + cos(pi/4)) / 2.
  auto w = make_cosine_scheduler(
      CosineSchedulerOptions().alpha_f(0.1).t_max(Time::parse("5ep")).warmup(Time::parse("1ep")));
  EXPECT_DOUBLE_EQ(at_batch(*w, 4), 0.5);
  EXPECT_NEAR(at_batch(*w, 20), 0.1 + 0.9 * (1 + std::sqrt(0.5)) / 2, 1e-12);
  EXPECT_NEAR(at_batch(*w, 30), 0.55, 1e-12);
}

TEST(Scheduler, HorizonNotAfterWarmupIsRejected) {
  // Same units: at construction.
  EXPECT_THROW(
      make_cosine_scheduler(CosineSchedulerOptions().t_max(Time::parse("5ba")).warmup(Time::parse("5ba"))),
      tessera::InputError);
  // Different units need the run's context: when alpha is asked for, naming both.
  auto s =
      make_linear_scheduler(LinearSchedulerOptions().t_max(Time::parse("5ba")).warmup(Time::parse("1ep")));
  const std::string msg = message_of([&] { at_batch(*s, 0); });
  // Whole numbers of batches print as such, not as 5.000000.
  EXPECT_THAT(msg, HasSubstr("t_max: 5ba is 5 batches in this run, not more than the linear scheduler's warmup 1ep (10 batches)"));
  EXPECT_THROW(make_constant_scheduler(ConstantSchedulerOptions().warmup(Time::parse("100tok"))),
               tessera::InputError);
}

TEST(Scheduler, OneCycleRisesThenFalls) {
  auto s = make_onecycle_scheduler(OneCycleSchedulerOptions().t_max(Time::parse("80ba")));
  EXPECT_EQ(s->name(), "onecycle");
  const double initial = 1.0 / 25, final_alpha = initial / 1e4;
  EXPECT_NEAR(at_batch(*s, 0), initial, 1e-15);
  EXPECT_NEAR(at_batch(*s, 10), 0.52, 1e-12);  // halfway up: (0.04 + 1) / 2
  EXPECT_DOUBLE_EQ(at_batch(*s, 20), 1.0);     // peak at pct_start * t_max
  EXPECT_NEAR(at_batch(*s, 50), (1 + final_alpha) / 2, 1e-12);
  EXPECT_NEAR(at_batch(*s, 80), final_alpha, 1e-15);
  EXPECT_NEAR(at_batch(*s, 200), final_alpha, 1e-15);
  auto m = make_onecycle_scheduler(
      OneCycleSchedulerOptions().max_alpha(2.0).div_factor(4).t_max(Time::parse("1dur")));
  EXPECT_DOUBLE_EQ(at_batch(*m, 0), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*m, 25), 2.0);
  EXPECT_THROW(make_onecycle_scheduler(OneCycleSchedulerOptions().pct_start(1.0)), tessera::InputError);
  EXPECT_THROW(make_onecycle_scheduler(OneCycleSchedulerOptions().t_max(Time::parse("0ba"))),
               tessera::InputError);
}

TEST(Scheduler, OneCycleCyclesTheMomentumTheOtherWayWhenAsked) {
  auto plain = make_onecycle_scheduler(OneCycleSchedulerOptions().t_max(Time::parse("80ba")));
  EXPECT_FALSE(plain->sets_momentum());
  EXPECT_EQ(plain->momentum(Timestamp(), context()), std::nullopt);
  auto s = make_onecycle_scheduler(OneCycleSchedulerOptions().t_max(Time::parse("80ba")).cycle_momentum(true));
  EXPECT_TRUE(s->sets_momentum());
  auto momentum_at = [&](int64_t batch) {
    Timestamp ts;
    ts.batch = batch;
    return s->momentum(ts, context()).value();
  };
  EXPECT_DOUBLE_EQ(momentum_at(0), 0.95);                // max_momentum while alpha starts low
  EXPECT_NEAR(momentum_at(10), (0.95 + 0.85) / 2, 1e-12);  // halfway down as alpha is halfway up
  EXPECT_DOUBLE_EQ(momentum_at(20), 0.85);               // base_momentum at alpha's peak
  EXPECT_NEAR(momentum_at(50), (0.85 + 0.95) / 2, 1e-12);
  EXPECT_DOUBLE_EQ(momentum_at(80), 0.95);
  EXPECT_DOUBLE_EQ(momentum_at(200), 0.95);  // held past t_max, as alpha
  Timestamp ts;
  ts.batch = 10;
  EXPECT_DOUBLE_EQ(s->alpha(ts, context()), plain->alpha(ts, context()));  // the lr is the same either way
  auto custom = make_onecycle_scheduler(
      OneCycleSchedulerOptions().t_max(Time::parse("80ba")).cycle_momentum(true).base_momentum(0.5).max_momentum(0.7));
  EXPECT_DOUBLE_EQ(custom->momentum(Timestamp(), context()).value(), 0.7);
  EXPECT_THROW(make_onecycle_scheduler(OneCycleSchedulerOptions().base_momentum(1.0)), tessera::InputError);
  // In a sequence it could not hand the momentum on: refused, with where it goes instead.
  const std::string msg = message_of<tessera::InputError>([&] {
    make_sequential_scheduler({make_constant_scheduler({}), std::move(s)}, {Time::parse("1ep")});
  });
  EXPECT_THAT(msg, HasSubstr("scheduler.schedulers[1]: onecycle sets the optimizer's momentum (cycle_momentum)"));
  EXPECT_THAT(msg, HasSubstr("put it beside the sequential"));
}

TEST(Scheduler, ExponentialDecaysSmoothly) {
  auto s = make_exponential_scheduler(ExponentialSchedulerOptions().gamma(0.5).decay_period(Time::parse("1ep")));
  EXPECT_EQ(s->name(), "exponential");
  EXPECT_DOUBLE_EQ(at_batch(*s, 0), 1.0);
  EXPECT_NEAR(at_batch(*s, 5), std::sqrt(0.5), 1e-15);  // half an epoch: gamma^(1/2)
  EXPECT_NEAR(at_batch(*s, 10), 0.5, 1e-15);
  EXPECT_NEAR(at_batch(*s, 30), 0.125, 1e-15);
  // Warmup multiplies the schedule, which runs from batch 0.
  auto w = make_exponential_scheduler(
      ExponentialSchedulerOptions().gamma(0.5).decay_period(Time::parse("10ba")).warmup(Time::parse("4ba")));
  EXPECT_NEAR(at_batch(*w, 1), std::pow(0.5, 0.1) * 0.5, 1e-15);
  EXPECT_NEAR(at_batch(*w, 20), 0.25, 1e-15);
  EXPECT_THAT(message_of<tessera::InputError>([] {
                make_exponential_scheduler(ExponentialSchedulerOptions().decay_period(Time::parse("0ep")));
              }),
              HasSubstr("scheduler.decay_period: 0ep must be greater than 0"));
  EXPECT_THROW(make_exponential_scheduler(ExponentialSchedulerOptions().decay_period(Time::parse("8tok"))),
               tessera::InputError);
  EXPECT_THROW(make_exponential_scheduler(ExponentialSchedulerOptions().gamma(0)), tessera::InputError);
}

TEST(Scheduler, PolynomialAfterWarmup) {
  auto s = make_polynomial_scheduler(
      PolynomialSchedulerOptions().power(2).alpha_f(0.1).t_max(Time::parse("60ba")).warmup(Time::parse("20ba")));
  EXPECT_EQ(s->name(), "polynomial");
  EXPECT_DOUBLE_EQ(at_batch(*s, 4), 0.25);  // warmup 5/20, tau = 0
  EXPECT_DOUBLE_EQ(at_batch(*s, 20), 1.0);
  EXPECT_NEAR(at_batch(*s, 30), 0.1 + 0.9 * 0.75 * 0.75, 1e-12);  // tau = 10 / 40
  EXPECT_NEAR(at_batch(*s, 40), 0.1 + 0.9 * 0.25, 1e-12);
  EXPECT_NEAR(at_batch(*s, 60), 0.1, 1e-12);
  EXPECT_NEAR(at_batch(*s, 99), 0.1, 1e-12);
  // power 1 is the linear schedule, batch for batch.
  auto p1 = make_polynomial_scheduler(PolynomialSchedulerOptions().alpha_f(0.2).warmup(Time::parse("1ep")));
  auto lin = make_linear_scheduler(LinearSchedulerOptions().alpha_f(0.2).warmup(Time::parse("1ep")));
  for (int64_t b = 0; b <= 100; b += 7) EXPECT_NEAR(at_batch(*p1, b), at_batch(*lin, b), 1e-12) << b;
  EXPECT_THROW(make_polynomial_scheduler(
                   PolynomialSchedulerOptions().t_max(Time::parse("3ep")).warmup(Time::parse("3ep"))),
               tessera::InputError);
  EXPECT_THROW(make_polynomial_scheduler(PolynomialSchedulerOptions().power(0)), tessera::InputError);
}

TEST(Scheduler, CosineWarmRestartsRestartsEachCycle) {
  auto s = make_cosine_warm_restarts_scheduler(
      CosineWarmRestartsSchedulerOptions().t_0(Time::parse("20ba")).alpha_f(0.1));
  EXPECT_EQ(s->name(), "cosine_warm_restarts");
  EXPECT_DOUBLE_EQ(at_batch(*s, 0), 1.0);
  EXPECT_NEAR(at_batch(*s, 10), 0.55, 1e-12);
  EXPECT_NEAR(at_batch(*s, 19), cosine_of(19.0 / 20), 1e-12);
  EXPECT_DOUBLE_EQ(at_batch(*s, 20), 1.0);  // restart
  EXPECT_NEAR(at_batch(*s, 50), 0.55, 1e-12);
  // Cycles of 10, 20, 40 batches: restarts at 10 and 30, 70.
  auto m = make_cosine_warm_restarts_scheduler(
      CosineWarmRestartsSchedulerOptions().t_0(Time::parse("1ep")).t_mult(2).alpha_f(0.1));
  EXPECT_NEAR(at_batch(*m, 5), 0.55, 1e-12);
  EXPECT_DOUBLE_EQ(at_batch(*m, 10), 1.0);
  EXPECT_NEAR(at_batch(*m, 20), 0.55, 1e-12);
  EXPECT_DOUBLE_EQ(at_batch(*m, 30), 1.0);
  EXPECT_NEAR(at_batch(*m, 50), 0.55, 1e-12);
  EXPECT_NEAR(at_batch(*m, 60), cosine_of(30.0 / 40), 1e-12);
  EXPECT_DOUBLE_EQ(at_batch(*m, 70), 1.0);
  // Fractional cycles (0.15dur = 15 batches) restart where the conversion lands.
  auto d = make_cosine_warm_restarts_scheduler(CosineWarmRestartsSchedulerOptions().t_0(Time::parse("0.15dur")));
  EXPECT_DOUBLE_EQ(at_batch(*d, 15), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*d, 45), 1.0);
  EXPECT_NEAR(at_batch(*d, 30 + 7), (1 + std::cos(M_PI * 7 / 15)) / 2, 1e-12);
  // A warmup multiplies the cycles.
  auto w = make_cosine_warm_restarts_scheduler(
      CosineWarmRestartsSchedulerOptions().t_0(Time::parse("20ba")).warmup(Time::parse("4ba")));
  EXPECT_NEAR(at_batch(*w, 1), 0.5 * (1 + std::cos(M_PI / 20)) / 2, 1e-12);
  EXPECT_THAT(message_of<tessera::InputError>([] {
                make_cosine_warm_restarts_scheduler(CosineWarmRestartsSchedulerOptions().t_0(Time::parse("0ba")));
              }),
              HasSubstr("scheduler.t_0: 0ba must be greater than 0"));
  EXPECT_THROW(make_cosine_warm_restarts_scheduler(CosineWarmRestartsSchedulerOptions().t_mult(0.5)),
               tessera::InputError);
}

TEST(Scheduler, InverseSqrtFallsAsTheInverseSquareRootOfTheTimeAfterWarmup) {
  // Warmup 4 batches (timescale: the warmup's): (t + 1) / 4, then sqrt(4 / (t - 4 + 4)).
  auto s = make_inverse_sqrt_scheduler(InverseSqrtSchedulerOptions().warmup(Time::parse("4ba")));
  EXPECT_EQ(s->name(), "inverse_sqrt");
  EXPECT_DOUBLE_EQ(at_batch(*s, 0), 0.25);
  EXPECT_DOUBLE_EQ(at_batch(*s, 3), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*s, 4), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*s, 8), std::sqrt(0.5));  // a timescale after the warmup
  EXPECT_DOUBLE_EQ(at_batch(*s, 16), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*s, 40), std::sqrt(4.0 / 40));
  // A timescale of its own (1 epoch = 10 batches), without warmup.
  auto e = make_inverse_sqrt_scheduler(InverseSqrtSchedulerOptions().timescale(Time::parse("1ep")));
  EXPECT_DOUBLE_EQ(at_batch(*e, 0), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*e, 30), 0.5);
  // The timescale is a horizon (scaled by the run's schedule ratio), the warmup is not.
  TimeContext half = context();
  half.schedule_ratio = 0.5;
  EXPECT_DOUBLE_EQ(at_batch(*e, 15, half), 0.5);
  EXPECT_THAT(message_of<tessera::InputError>([] { make_inverse_sqrt_scheduler(InverseSqrtSchedulerOptions()); }),
              HasSubstr("scheduler.timescale: 0 (the default) means the warmup's length, and there is no warmup"));
  EXPECT_THAT(message_of<tessera::InputError>([] {
                make_inverse_sqrt_scheduler(InverseSqrtSchedulerOptions().timescale(Time::parse("100tok")));
              }),
              HasSubstr("scheduler.timescale: 100tok is in tokens"));
  // Times that are no batches in this run: before step 1.
  TimeContext empty = context();
  empty.max_duration = Time::parse("0ba");
  auto fraction = make_inverse_sqrt_scheduler(InverseSqrtSchedulerOptions().warmup(Time::parse("0.1dur")));
  EXPECT_THAT(message_of<tessera::InputError>([&] { fraction->check(empty); }),
              HasSubstr("scheduler.timescale: 0 means the warmup's length, and the warmup 0.1dur is 0 batches"));
  auto tiny = make_inverse_sqrt_scheduler(InverseSqrtSchedulerOptions().timescale(Time::parse("0.5dur")));
  EXPECT_THAT(message_of<tessera::InputError>([&] { tiny->check(empty); }),
              HasSubstr("scheduler.timescale: 0.5dur is 0 batches in this run"));
}

TEST(Scheduler, PeriodOfNoBatchesInThisRunIsRejectedWhenAsked) {
  // A fraction of a run of 0 batches is 0 batches: no period to divide by.
  TimeContext empty = context();
  empty.max_duration = Time::parse("0ba");
  auto s = make_exponential_scheduler(ExponentialSchedulerOptions().decay_period(Time::parse("0.5dur")));
  EXPECT_THAT(message_of<tessera::InputError>([&] { at_batch(*s, 0, empty); }),
              HasSubstr("scheduler.decay_period: 0.5dur is 0 batches in this run; expected more than 0"));
  auto c = make_cosine_warm_restarts_scheduler(CosineWarmRestartsSchedulerOptions().t_0(Time::parse("0.5dur")));
  EXPECT_THROW(at_batch(*c, 0, empty), tessera::InputError);
}

TEST(Scheduler, AScheduleRatioScalesEveryTimeButWarmupsAndFractions) {
  TimeContext half = context();
  half.schedule_ratio = 0.5;  // the trainer has scaled max_duration too: 10ep -> 5ep
  half.max_duration = Time::parse("5ep");
  EXPECT_DOUBLE_EQ(half.schedule_to_batches(Time::parse("4ep")), 20);
  EXPECT_DOUBLE_EQ(half.schedule_to_batches(Time::parse("30ba")), 15);
  EXPECT_DOUBLE_EQ(half.schedule_to_batches(Time::parse("0.5dur")), 25);  // half of the scaled run
  auto cosine = make_cosine_scheduler(CosineSchedulerOptions().t_max(Time::parse("40ba")).warmup(Time::parse("4ba")));
  EXPECT_DOUBLE_EQ(at_batch(*cosine, 1, half), 0.5);           // warmup 2/4: not scaled
  EXPECT_NEAR(at_batch(*cosine, 12, half), 0.5, 1e-12);        // tau = (12 - 4) / (20 - 4)
  EXPECT_NEAR(at_batch(*cosine, 20, half), 0.0, 1e-12);
  auto milestones = make_multistep_scheduler(MultiStepSchedulerOptions().milestones({Time::parse("2ep")}).gamma(0.1));
  EXPECT_DOUBLE_EQ(at_batch(*milestones, 9, half), 1.0);
  EXPECT_NEAR(at_batch(*milestones, 10, half), 0.1, 1e-15);
  auto restarts = make_cosine_warm_restarts_scheduler(CosineWarmRestartsSchedulerOptions().t_0(Time::parse("2ep")));
  EXPECT_DOUBLE_EQ(at_batch(*restarts, 10, half), 1.0);  // a restart after 10 batches, not 20
  auto exponential = make_exponential_scheduler(ExponentialSchedulerOptions().gamma(0.5));
  EXPECT_NEAR(at_batch(*exponential, 5, half), 0.5, 1e-15);  // gamma per scaled epoch
}

TEST(Scheduler, SequentialRunsEachScheduleFromItsMilestone) {
  // torch's warmup then cosine: LinearLR(0.1 -> 1 over 10 batches), then CosineAnnealingLR(T_max = 40) from batch 10.
  std::vector<std::shared_ptr<Scheduler>> parts{
      make_linear_scheduler(LinearSchedulerOptions().alpha_i(0.1).alpha_f(1.0).t_max(Time::parse("10ba"))),
      make_cosine_scheduler(CosineSchedulerOptions().t_max(Time::parse("40ba")).alpha_f(0.01))};
  auto s = make_sequential_scheduler(parts, {Time::parse("1ep")});  // 1ep = 10 batches
  EXPECT_EQ(s->name(), "sequential");
  EXPECT_DOUBLE_EQ(at_batch(*s, 0), 0.1);
  EXPECT_DOUBLE_EQ(at_batch(*s, 5), 0.1 + 0.9 * 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*s, 9), 0.1 + 0.9 * 0.9);
  EXPECT_DOUBLE_EQ(at_batch(*s, 10), 1.0);                                           // the cosine's t = 0
  EXPECT_NEAR(at_batch(*s, 30), 0.01 + 0.99 * 0.5, 1e-12);                           // its t = 20 of 40
  EXPECT_NEAR(at_batch(*s, 50), 0.01, 1e-12);                                        // its end
  EXPECT_NEAR(at_batch(*s, 99), 0.01, 1e-12);                                        // held after it
  // Each part's warmup restarts at its milestone; three parts, milestones of two units.
  auto three = make_sequential_scheduler(
      {make_constant_scheduler(ConstantSchedulerOptions().alpha(0.5)),
       make_constant_scheduler(ConstantSchedulerOptions().warmup(Time::parse("4ba"))),
       make_step_scheduler(StepSchedulerOptions().step_size(Time::parse("5ba")).gamma(0.5))},
      {Time::parse("3ba"), Time::parse("0.5dur")});  // 0.5dur = batch 50
  EXPECT_DOUBLE_EQ(at_batch(*three, 2), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*three, 3), 0.25);  // (0 + 1) / 4
  EXPECT_DOUBLE_EQ(at_batch(*three, 6), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*three, 49), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*three, 50), 1.0);
  EXPECT_DOUBLE_EQ(at_batch(*three, 55), 0.5);
  EXPECT_DOUBLE_EQ(at_batch(*three, 61), 0.25);
}

TEST(Scheduler, SequentialRefusesBadMilestonesAndChecksEveryPartBeforeStepOne) {
  auto constant = [] { return make_constant_scheduler(ConstantSchedulerOptions()); };
  EXPECT_THAT(message_of<tessera::InputError>([&] { make_sequential_scheduler({constant(), constant()}, {}); }),
              HasSubstr("0 milestones for 2 schedules; expected one fewer milestones than schedules"));
  EXPECT_THAT(message_of<tessera::InputError>([&] { make_sequential_scheduler({}, {}); }),
              HasSubstr("scheduler.schedulers: empty"));
  const std::vector<Time> twice{Time::parse("5ba"), Time::parse("5ba")};
  const auto three = [&] { return std::vector<std::shared_ptr<Scheduler>>{constant(), constant(), constant()}; };
  EXPECT_THAT(message_of<tessera::InputError>([&] { make_sequential_scheduler(three(), twice); }),
              HasSubstr("5ba is followed by 5ba; expected strictly increasing milestones"));
  const Time zero = Time::parse("0ba");
  EXPECT_THAT(message_of<tessera::InputError>([&] { make_sequential_scheduler({constant(), constant()}, {zero}); }),
              HasSubstr("scheduler.milestones: 0ba must be greater than 0"));
  // Units the run orders: 2ep is batch 20, after 30ba.
  auto crossed =
      make_sequential_scheduler({constant(), constant(), constant()}, {Time::parse("30ba"), Time::parse("2ep")});
  EXPECT_THAT(message_of<tessera::InputError>([&] { crossed->check(context()); }),
              HasSubstr("2ep is batch 20 of this run, not after the milestone before it (batch 30)"));
  // A later part's horizon before its warmup: refused by the check before step 1, naming the part.
  auto late = make_sequential_scheduler(
      {constant(),
       make_cosine_scheduler(CosineSchedulerOptions().t_max(Time::parse("0.1dur")).warmup(Time::parse("20ba")))},
      {Time::parse("5ba")});
  EXPECT_THAT(message_of<tessera::InputError>([&] { late->check(context()); }),
              HasSubstr("schedulers[1] (cosine): t_max"));
  EXPECT_NO_THROW(at_batch(*late, 0));  // alpha asks only the schedule that runs
  // A plateau follows a metric, not time: not a part of a sequence.
  auto plateau = make_plateau_scheduler(PlateauSchedulerOptions().monitor("loss").label("train"));
  EXPECT_THAT(message_of<tessera::InputError>([&] {
                make_sequential_scheduler({constant(), std::move(plateau)}, {Time::parse("5ba")});
              }),
              HasSubstr("schedulers[1]: a plateau follows a metric, not time"));
}

namespace {

/// The plateau's alpha after each of `values` of the training loss (each new at an epoch end), and its state
/// after the last.
std::vector<double> plateau_alphas(Scheduler& plateau, const std::vector<double>& values) {
  tessera::State state;
  tessera::Logger logger;
  plateau.run_event(tessera::Event::Init, state, logger);
  std::vector<double> out;
  for (double v : values) {
    state.metrics["loss/train/total"] = v;
    plateau.run_event(tessera::Event::BatchEnd, state, logger);  // not where the value is new: ignored
    state.metrics["loss/train/total"] = v;
    plateau.run_event(tessera::Event::EpochEnd, state, logger);
    out.push_back(at_batch(plateau, 7));  // the same at any time
  }
  return out;
}

}  // namespace

// The alphas below are the lrs torch 2.15's ReduceLROnPlateau sets (lr 1, the same options, step(value) after
// each value).
TEST(Scheduler, PlateauReducesAsTorchsReduceLROnPlateau) {
  const std::vector<double> values = {1.0,  0.995, 0.99, 0.989, 0.98, 0.975, 0.97, 0.97, 0.96, 0.95,
                                      0.95, 0.95,  0.95, 0.95,  0.95, 0.95,  0.95, 0.95, 0.95, 0.95,
                                      0.95, 0.95,  0.95, 0.95,  0.95, 0.95,  0.95, 0.95};
  auto relative = make_plateau_scheduler(PlateauSchedulerOptions()
                                             .monitor("loss")
                                             .label("train")
                                             .factor(0.5)
                                             .patience(2)
                                             .threshold(0.01)
                                             .cooldown(1)
                                             .min_alpha(0.1));
  const std::vector<double> torch_relative = {1,     1,     1,     1,     1,   1,   1,    1,    1,    1,
                                              1,     1,     0.5,   0.5,   0.5, 0.5, 0.25, 0.25, 0.25, 0.25,
                                              0.125, 0.125, 0.125, 0.125, 0.1, 0.1, 0.1,  0.1};
  EXPECT_EQ(plateau_alphas(*relative, values), torch_relative);

  // Larger is better, an absolute threshold, no patience, NaN counted as bad, and eps: 0.01 -> 0.001 is a
  // change of 0.009 <= eps 0.02, not made.
  auto absolute = make_plateau_scheduler(PlateauSchedulerOptions()
                                             .monitor("loss")
                                             .label("train")
                                             .comp("greater")
                                             .factor(0.1)
                                             .patience(0)
                                             .threshold(0.05)
                                             .threshold_mode("abs")
                                             .eps(0.02));
  const std::vector<double> alphas =
      plateau_alphas(*absolute, {0.5, 0.52, 0.56, std::nan(""), 0.57, 0.6, 0.7, 0.7, 0.74, 0.76, 0.7, 0.7});
  const std::vector<double> torch_absolute = {1.0,       0.1,       0.1,       0.1 * 0.1,
                                              0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1,
                                              0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1};
  EXPECT_EQ(alphas, torch_absolute);
}

TEST(Scheduler, PlateauStateRoundTripsAndChecksItsMetricAgainstTheRun) {
  const auto options =
      PlateauSchedulerOptions().monitor("loss").label("train").factor(0.5).patience(1).cooldown(2);
  auto first = make_plateau_scheduler(options);
  const std::vector<double> values = {3, 2, 2, 2, 2, 2, 2, 2};
  const std::vector<double> whole = plateau_alphas(*first, values);
  // Cut after 3 values: a fresh plateau given the state continues as the first did.
  auto head = make_plateau_scheduler(options);
  plateau_alphas(*head, {values.begin(), values.begin() + 3});
  auto tail = make_plateau_scheduler(options);
  tail->load_state_dict(head->state_dict());
  const std::vector<double> rest = plateau_alphas(*tail, {values.begin() + 3, values.end()});
  EXPECT_EQ(rest, std::vector<double>(whole.begin() + 3, whole.end()));
  EXPECT_LT(whole.back(), 0.5);  // it did reduce, twice or more
  EXPECT_EQ(first->state_dict().size(), 4u);
  EXPECT_TRUE(make_cosine_scheduler(CosineSchedulerOptions())->state_dict().empty());

  // What it watches must be in the run: an evaluator of that label computing that metric.
  tessera::State state;
  tessera::Logger logger;
  auto eval = make_plateau_scheduler(PlateauSchedulerOptions().monitor("accuracy"));
  EXPECT_THAT(message_of<tessera::InputError>([&] { eval->run_event(tessera::Event::Init, state, logger); }),
              HasSubstr("plateau.label: no evaluator is labelled \"eval\" (the run's: none)"));
  auto train = make_plateau_scheduler(PlateauSchedulerOptions().monitor("accuracy").label("train"));
  EXPECT_THAT(message_of<tessera::InputError>([&] { train->run_event(tessera::Event::Init, state, logger); }),
              HasSubstr("plateau.monitor: the training metrics have no \"accuracy\"; they are: loss"));
  EXPECT_THAT(message_of<tessera::InputError>([&] { make_plateau_scheduler(PlateauSchedulerOptions()); }),
              HasSubstr("plateau.monitor: is empty"));
  EXPECT_THAT(message_of<tessera::InputError>(
                  [&] { make_plateau_scheduler(PlateauSchedulerOptions().monitor("loss").factor(1.0)); }),
              HasSubstr("factor"));
}

TEST(Scheduler, MultiStepMilestonesOfDifferentUnitsMustIncreaseInThisRun) {
  // 10 batches an epoch: 1ep is batch 10, after 5ba and before 15ba.
  const auto multistep = [](const char* a, const char* b) {
    return make_multistep_scheduler(MultiStepSchedulerOptions().milestones({Time::parse(a), Time::parse(b)}));
  };
  EXPECT_NO_THROW(multistep("5ba", "1ep")->check(context()));
  EXPECT_THAT(
      message_of<tessera::InputError>([&] { multistep("15ba", "1ep")->check(context()); }),
      HasSubstr("scheduler.milestones: 15ba (batch 15 of this run) is followed by 1ep (batch 10); expected "
                "strictly increasing milestones"));
  EXPECT_THAT(message_of<tessera::InputError>([&] { multistep("10ba", "1ep")->check(context()); }),
              HasSubstr("10ba (batch 10 of this run) is followed by 1ep (batch 10)"));
}
