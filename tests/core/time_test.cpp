#include <gtest/gtest.h>
#include <tessera/error.h>
#include <tessera/time.h>

#include <functional>
#include <limits>
#include <string>
#include <vector>

using tessera::Time;
using tessera::TimeContext;
using tessera::Timestamp;
using tessera::TimeUnit;

namespace {
template <class E = tessera::Error>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST(Time, ParsesEveryUnitCaseInsensitively) {
  struct Case {
    const char* text;
    TimeUnit unit;
    double value;
  };
  const Case cases[] = {
      {"10ep", TimeUnit::Epoch, 10},       {"500ba", TimeUnit::Batch, 500},
      {"2048sp", TimeUnit::Sample, 2048},  {"3e4tok", TimeUnit::Token, 30000},
      {"0.3dur", TimeUnit::Duration, 0.3}, {"1EP", TimeUnit::Epoch, 1},
      {"7Ba", TimeUnit::Batch, 7},         {"0ep", TimeUnit::Epoch, 0},
      {"1dur", TimeUnit::Duration, 1},     {"2.0ba", TimeUnit::Batch, 2},
      {" 4ep ", TimeUnit::Epoch, 4},       {"1e3sp", TimeUnit::Sample, 1000},
      {".5DUR", TimeUnit::Duration, 0.5},  {"+3ep", TimeUnit::Epoch, 3},
  };
  for (const auto& c : cases) {
    const Time t = Time::parse(c.text);
    EXPECT_EQ(t.unit(), c.unit) << c.text;
    EXPECT_EQ(t.as_double(), c.value) << c.text;
  }
  EXPECT_EQ(Time::parse("3e4tok").value(), 30000);
  EXPECT_EQ(Time::parse("0.3dur").value(), 0);
}

TEST(Time, RejectsMalformedTextQuotingItAndTheExpectedForms) {
  const char* bad[] = {"1.5ba", "ep",     "-1ep",   "10",     "10min",  "",     "abc",     "1e400ep",
                       "nanba", "infdur", "1e19ba", "10 0ep", "0x10ep", "3sec", "-0.5dur", "1.5ep"};
  for (const char* text : bad) {
    const std::string msg = message_of<tessera::InputError>([&] { Time::parse(text); });
    EXPECT_TRUE(contains(msg, std::string("\"") + text + "\"")) << text << ": " << msg;
    EXPECT_TRUE(contains(msg, "expected forms: 10ep, 500ba, 2048sp, 1000tok, 0.25dur"))
        << text << ": " << msg;
  }
  EXPECT_TRUE(contains(message_of([] { Time::parse("1.5ba"); }), "batches must be a whole number"));
  EXPECT_TRUE(contains(message_of([] { Time::parse("10min"); }), "unknown unit \"min\""));
  EXPECT_TRUE(contains(message_of([] { Time::parse("10"); }), "unit is missing"));
  EXPECT_TRUE(contains(message_of([] { Time::parse("-1ep"); }), "negative"));
  EXPECT_TRUE(contains(message_of([] { Time::parse("1e400ep"); }), "out of range"));
}

TEST(Time, ConstructorsRejectInvalidValues) {
  EXPECT_THROW(Time(-1, TimeUnit::Batch), tessera::InputError);
  EXPECT_THROW(Time(1, TimeUnit::Duration), tessera::InputError);
  EXPECT_THROW(Time::fraction(-0.1), tessera::InputError);
  EXPECT_THROW(Time::fraction(std::numeric_limits<double>::quiet_NaN()), tessera::InputError);
  EXPECT_EQ(Time().unit(), TimeUnit::Epoch);
  EXPECT_EQ(Time().value(), 0);
}

TEST(Time, StrRoundTrips) {
  EXPECT_EQ(Time(10, TimeUnit::Epoch).str(), "10ep");
  EXPECT_EQ(Time(500, TimeUnit::Batch).str(), "500ba");
  EXPECT_EQ(Time(2048, TimeUnit::Sample).str(), "2048sp");
  EXPECT_EQ(Time(30000, TimeUnit::Token).str(), "30000tok");
  EXPECT_EQ(Time::fraction(0.3).str(), "0.3dur");
  EXPECT_EQ(Time::fraction(1).str(), "1dur");
  for (const char* s : {"10ep", "500ba", "2048sp", "30000tok", "0.3dur", "0.125dur"})
    EXPECT_EQ(Time::parse(Time::parse(s).str()).str(), s);
  EXPECT_STREQ(tessera::unit_suffix(TimeUnit::Token), "tok");
}

TEST(Time, ArithmeticInOneUnit) {
  const Time a(10, TimeUnit::Batch), b(3, TimeUnit::Batch);
  EXPECT_EQ((a + b).value(), 13);
  EXPECT_EQ((a - b).value(), 7);
  EXPECT_EQ((a % b).value(), 1);
  EXPECT_EQ((a * 0.25).value(), 2);  // 2.5 truncated
  EXPECT_EQ((a * 3).value(), 30);
  EXPECT_EQ((a / 4).value(), 2);
  EXPECT_EQ((a / 4).unit(), TimeUnit::Batch);
  const Time r = b / a;
  EXPECT_EQ(r.unit(), TimeUnit::Duration);
  EXPECT_DOUBLE_EQ(r.as_double(), 0.3);
  const Time d1 = Time::fraction(0.5), d2 = Time::fraction(0.25);
  EXPECT_DOUBLE_EQ((d1 + d2).as_double(), 0.75);
  EXPECT_DOUBLE_EQ((d1 - d2).as_double(), 0.25);
  EXPECT_DOUBLE_EQ((d1 * 0.5).as_double(), 0.25);
  EXPECT_DOUBLE_EQ((d1 / 4).as_double(), 0.125);
  EXPECT_DOUBLE_EQ((d1 % Time::fraction(0.3)).as_double(), 0.2);
}

TEST(Time, ArithmeticErrors) {
  const Time ep(1, TimeUnit::Epoch), ba(100, TimeUnit::Batch);
  for (auto f : std::vector<std::function<void()>>{[&] { (void)(ep + ba); }, [&] { (void)(ep - ba); },
                                                   [&] { (void)(ep % ba); }, [&] { (void)(ep / ba); }}) {
    const std::string msg = message_of(f);
    EXPECT_TRUE(contains(msg, "1ep") && contains(msg, "100ba")) << msg;
    EXPECT_TRUE(contains(msg, "(ep vs ba)")) << msg;
  }
  EXPECT_THROW((void)(Time(1, TimeUnit::Batch) - Time(2, TimeUnit::Batch)), tessera::Error);
  EXPECT_THROW((void)(ba * -1.0), tessera::Error);
  EXPECT_THROW((void)(ba / -2.0), tessera::Error);
  EXPECT_THROW((void)(ba / 0.0), tessera::Error);
  EXPECT_THROW((void)(ba % Time(0, TimeUnit::Batch)), tessera::Error);
  EXPECT_THROW((void)(ba / Time(0, TimeUnit::Batch)), tessera::Error);
  EXPECT_THROW((void)(Time::fraction(0.5) * -1.0), tessera::Error);
}

TEST(Time, ComparisonsInOneUnit) {
  const Time a(5, TimeUnit::Sample), b(7, TimeUnit::Sample);
  EXPECT_TRUE(a < b);
  EXPECT_TRUE(a <= b);
  EXPECT_TRUE(b > a);
  EXPECT_TRUE(b >= a);
  EXPECT_TRUE(a <= a);
  EXPECT_TRUE(a == Time(5, TimeUnit::Sample));
  EXPECT_TRUE(a != b);
  EXPECT_FALSE(a > b);
  EXPECT_TRUE(Time::fraction(0.2) < Time::fraction(0.3));
  EXPECT_TRUE(Time::parse("0.3dur") == Time::fraction(0.3));
  const std::string msg = message_of([&] { (void)(a < Time(1, TimeUnit::Epoch)); });
  EXPECT_TRUE(contains(msg, "5sp") && contains(msg, "1ep")) << msg;
  EXPECT_THROW((void)(a == Time(5, TimeUnit::Batch)), tessera::Error);
  EXPECT_THROW((void)(a >= Time::fraction(0.1)), tessera::Error);
}

TEST(Timestamp, BatchAndEpochTransitions) {
  Timestamp ts;
  ts = ts.to_next_batch(32, 320, 0.5);
  ts = ts.to_next_batch(16, 160, 0.25);
  EXPECT_EQ(ts.batch, 2);
  EXPECT_EQ(ts.batch_in_epoch, 2);
  EXPECT_EQ(ts.sample, 48);
  EXPECT_EQ(ts.sample_in_epoch, 48);
  EXPECT_EQ(ts.token, 480);
  EXPECT_EQ(ts.token_in_epoch, 480);
  EXPECT_DOUBLE_EQ(ts.total_wct, 0.75);
  EXPECT_DOUBLE_EQ(ts.epoch_wct, 0.75);
  EXPECT_DOUBLE_EQ(ts.batch_wct, 0.25);
  EXPECT_EQ(ts.epoch, 0);

  const Timestamp e = ts.to_next_epoch();
  EXPECT_EQ(e.epoch, 1);
  EXPECT_EQ(e.batch, 2);
  EXPECT_EQ(e.sample, 48);
  EXPECT_EQ(e.token, 480);
  EXPECT_EQ(e.batch_in_epoch, 0);
  EXPECT_EQ(e.sample_in_epoch, 0);
  EXPECT_EQ(e.token_in_epoch, 0);
  EXPECT_DOUBLE_EQ(e.total_wct, 0.75);
  EXPECT_DOUBLE_EQ(e.epoch_wct, 0.0);
  EXPECT_EQ(ts.epoch, 0);  // the original is unchanged

  const Timestamp f = e.to_next_batch(8, 0, 1.0);
  EXPECT_EQ(f.batch, 3);
  EXPECT_EQ(f.batch_in_epoch, 1);
  EXPECT_EQ(f.sample_in_epoch, 8);
  EXPECT_DOUBLE_EQ(f.total_wct, 1.75);

  EXPECT_EQ(f.get(TimeUnit::Epoch), 1);
  EXPECT_EQ(f.get(TimeUnit::Batch), 3);
  EXPECT_EQ(f.get(TimeUnit::Sample), 56);
  EXPECT_EQ(f.get(TimeUnit::Token), 480);
  EXPECT_THROW(f.get(TimeUnit::Duration), tessera::Error);
  EXPECT_TRUE(f == f);
  EXPECT_FALSE(f == e);
  EXPECT_THROW(ts.to_next_batch(-1, 0, 0), tessera::Error);
}

TEST(Timestamp, ComparesWithTimeInTheTimesUnit) {
  Timestamp ts;
  for (int i = 0; i < 5; ++i) ts = ts.to_next_batch(10, 0, 0);
  EXPECT_TRUE(ts >= Time(5, TimeUnit::Batch));
  EXPECT_TRUE(ts < Time(6, TimeUnit::Batch));
  EXPECT_TRUE(ts <= Time(50, TimeUnit::Sample));
  EXPECT_TRUE(ts > Time(49, TimeUnit::Sample));
  EXPECT_TRUE(ts < Time(1, TimeUnit::Epoch));
  EXPECT_THROW((void)(ts < Time::fraction(0.5)), tessera::Error);
}

TEST(TimeContext, ConvertsToBatches) {
  TimeContext ctx;
  ctx.max_duration = Time(10, TimeUnit::Epoch);
  ctx.batches_per_epoch = 4;
  ctx.samples_per_epoch = 120;  // average batch of 30
  EXPECT_DOUBLE_EQ(ctx.to_batches(Time(3, TimeUnit::Epoch)), 12.0);
  EXPECT_DOUBLE_EQ(ctx.to_batches(Time(7, TimeUnit::Batch)), 7.0);
  EXPECT_DOUBLE_EQ(ctx.to_batches(Time(90, TimeUnit::Sample)), 3.0);
  EXPECT_DOUBLE_EQ(ctx.to_batches(Time(45, TimeUnit::Sample)), 1.5);
  EXPECT_DOUBLE_EQ(ctx.to_batches(Time::fraction(0.25)), 10.0);
  EXPECT_DOUBLE_EQ(ctx.total_batches(), 40.0);
  EXPECT_THROW(ctx.to_batches(Time(5, TimeUnit::Token)), tessera::Error);
  ctx.max_duration = Time(600, TimeUnit::Sample);
  EXPECT_DOUBLE_EQ(ctx.total_batches(), 20.0);
  EXPECT_DOUBLE_EQ(ctx.to_batches(Time::fraction(0.5)), 10.0);
}

TEST(TimeContext, ElapsedFractionInMaxDurationsUnit) {
  TimeContext ctx;
  ctx.max_duration = Time(10, TimeUnit::Epoch);
  ctx.batches_per_epoch = 4;
  ctx.samples_per_epoch = 128;
  Timestamp ts;
  EXPECT_DOUBLE_EQ(ctx.elapsed_fraction(ts), 0.0);
  ts = ts.to_next_batch(32, 0, 0).to_next_batch(32, 0, 0);  // half of epoch 0
  EXPECT_DOUBLE_EQ(ctx.elapsed_fraction(ts), 0.05);         // moves within the epoch
  ts = ts.to_next_batch(32, 0, 0).to_next_batch(32, 0, 0).to_next_epoch();
  EXPECT_DOUBLE_EQ(ctx.elapsed_fraction(ts), 0.1);

  ctx.max_duration = Time(40, TimeUnit::Batch);
  EXPECT_DOUBLE_EQ(ctx.elapsed_fraction(ts), 0.1);
  ctx.max_duration = Time(256, TimeUnit::Sample);
  EXPECT_DOUBLE_EQ(ctx.elapsed_fraction(ts), 0.5);
  ctx.max_duration = Time(0, TimeUnit::Batch);
  EXPECT_DOUBLE_EQ(ctx.elapsed_fraction(ts), 1.0);
}

TEST(TimeContext, ReachedInAnyUnit) {
  TimeContext ctx;
  ctx.max_duration = Time(10, TimeUnit::Epoch);
  ctx.batches_per_epoch = 3;
  ctx.samples_per_epoch = 30;
  Timestamp ts;
  int batches_until_03dur = -1;
  for (int i = 0; i < 30; ++i) {
    if (ctx.reached(ts, Time::fraction(0.3))) {
      batches_until_03dur = i;
      break;
    }
    ts = ts.to_next_batch(10, 0, 0);
    if (ts.batch_in_epoch == 3) ts = ts.to_next_epoch();
  }
  EXPECT_EQ(batches_until_03dur, 9);  // exactly at the start of epoch 3 of 10
  EXPECT_TRUE(ctx.reached(ts, Time(3, TimeUnit::Epoch)));
  EXPECT_FALSE(ctx.reached(ts, Time(4, TimeUnit::Epoch)));
  EXPECT_TRUE(ctx.reached(ts, Time(9, TimeUnit::Batch)));
  EXPECT_FALSE(ctx.reached(ts, Time(10, TimeUnit::Batch)));
  EXPECT_TRUE(ctx.reached(ts, Time(90, TimeUnit::Sample)));
  EXPECT_FALSE(ctx.reached(ts, Time::fraction(0.31)));
}
