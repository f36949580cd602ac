#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <tessera/batch.h>
#include <tessera/error.h>
#include <tessera/state.h>

#include <functional>

using tessera::Batch;

namespace {
Batch make_batch(int64_t n) {
  Batch b(at::arange(n * 3, at::kFloat).view({n, 3}), at::arange(n, at::kLong));
  b.set("weight", at::arange(n, at::kDouble).mul(10));
  return b;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const tessera::Error& e) {
    return e.what();
  }
  return "<no exception>";
}
}  // namespace

TEST(Batch, PartsKeepInsertionOrderAndCanBeReplacedOrErased) {
  Batch b = make_batch(4);
  ASSERT_EQ(b.parts().size(), 3u);
  EXPECT_EQ(b.parts()[0].first, "input");
  EXPECT_EQ(b.parts()[1].first, "target");
  EXPECT_EQ(b.parts()[2].first, "weight");
  EXPECT_TRUE(b.has("weight"));
  b.set("target", at::zeros({4}, at::kLong));
  EXPECT_EQ(b.parts().size(), 3u);
  EXPECT_EQ(b.parts()[1].first, "target");
  EXPECT_EQ(b.target().sum().item<int64_t>(), 0);
  b.erase("weight");
  b.erase("not there");
  EXPECT_FALSE(b.has("weight"));
  EXPECT_EQ(b.parts().size(), 2u);
  EXPECT_EQ(b.size(), 4);
  EXPECT_EQ(Batch().size(), 0);
  EXPECT_TRUE(Batch().empty());
}

TEST(Batch, GetOfAMissingKeyNamesItAndTheAvailableKeys) {
  const Batch b = make_batch(2);
  const std::string msg = message_of([&] { b.get("mask"); });
  EXPECT_NE(msg.find("\"mask\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("input, target, weight"), std::string::npos) << msg;
  Batch m = make_batch(2);
  m.get("input") = at::ones({2, 3});  // the mutable reference writes through
  EXPECT_EQ(m.input().sum().item<float>(), 6.0f);
}

TEST(Batch, ValidateNamesThePartsThatDisagree) {
  Batch b = make_batch(5);
  EXPECT_NO_THROW(b.validate());
  b.set("mask", at::ones({4}));
  const std::string msg = message_of([&] { b.validate(); });
  EXPECT_NE(msg.find("\"input\" has 5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"mask\" has 4"), std::string::npos) << msg;
  Batch s;
  s.set("input", at::ones({}));
  EXPECT_THROW(s.validate(), tessera::Error);
}

TEST(Batch, SplitGivesChunksThatAreViews) {
  const Batch b = make_batch(10);
  const auto chunks = b.split(4);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].size(), 4);
  EXPECT_EQ(chunks[1].size(), 4);
  EXPECT_EQ(chunks[2].size(), 2);
  for (const auto& c : chunks) {
    ASSERT_EQ(c.parts().size(), 3u);
    EXPECT_EQ(c.parts()[2].first, "weight");
  }
  // Views: the same storage, offset rows.
  EXPECT_EQ(chunks[1].input().data_ptr<float>(), b.input().data_ptr<float>() + 4 * 3);
  EXPECT_EQ(chunks[2].target()[0].item<int64_t>(), 8);
  EXPECT_EQ(chunks[2].get("weight")[1].item<double>(), 90.0);
  // Reassembled, the chunks are the batch.
  std::vector<at::Tensor> inputs;
  for (const auto& c : chunks) inputs.push_back(c.input());
  EXPECT_TRUE(at::equal(at::cat(inputs), b.input()));
}

TEST(Batch, SplitWithNoOrLargeMicrobatchSizeIsOneChunk) {
  const Batch b = make_batch(6);
  for (int64_t mb : {0, -1, 6, 100}) {
    const auto chunks = b.split(mb);
    ASSERT_EQ(chunks.size(), 1u) << mb;
    EXPECT_EQ(chunks[0].input().data_ptr(), b.input().data_ptr());
    EXPECT_EQ(chunks[0].size(), 6);
  }
  EXPECT_EQ(b.split(1).size(), 6u);
  EXPECT_EQ(b.split(3).size(), 2u);
}

TEST(Batch, SelectKeepsRowsConsistentAcrossAllParts) {
  const Batch b = make_batch(6);
  const at::Tensor idx = at::tensor(std::vector<int64_t>{5, 0, 3}, at::kLong);
  const Batch s = b.select(idx);
  ASSERT_EQ(s.size(), 3);
  ASSERT_EQ(s.parts().size(), 3u);
  const std::vector<int64_t> rows{5, 0, 3};
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t r = rows[i];
    EXPECT_EQ(s.target()[i].item<int64_t>(), r);
    EXPECT_EQ(s.get("weight")[i].item<double>(), 10.0 * r);
    EXPECT_EQ(s.input()[i][0].item<float>(), static_cast<float>(3 * r));
  }
  // A copy, not a view.
  EXPECT_NE(s.input().data_ptr(), b.input().data_ptr());
}

TEST(Batch, SelectOnMismatchedPartsIsAnError) {
  Batch b = make_batch(3);
  b.set("extra", at::ones({2}));
  EXPECT_THROW(b.select(at::tensor(std::vector<int64_t>{0}, at::kLong)), tessera::Error);
  EXPECT_THROW(b.split(1), tessera::Error);
}

TEST(Batch, ToDeviceKeepsPartsAndValues) {
  const Batch b = make_batch(3);
  const Batch c = b.to(at::Device(at::kCPU));
  ASSERT_EQ(c.parts().size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(c.parts()[i].first, b.parts()[i].first);
    EXPECT_TRUE(at::equal(c.parts()[i].second, b.parts()[i].second));
  }
}

TEST(BatchPlace, PartsOfRowsFollowEachRowsPlaceInTheGlobalBatch) {
  using tessera::BatchPlace;
  auto place = [](int64_t first, int64_t rows, int64_t rank_rows, int64_t begin, int64_t end, int64_t global) {
    BatchPlace p;
    p.first = first;
    p.rows = rows;
    p.rank_rows = rank_rows;
    p.share_begin = begin;
    p.share_end = end;
    p.global_rows = global;
    return p;
  };
  // Unset: the rows are spread over themselves, row u of U in part floor(u · parts / U).
  EXPECT_FALSE(BatchPlace().is_set());
  EXPECT_TRUE(at::equal(BatchPlace().parts_of_rows(7, 3, at::kLong), at::tensor({0, 0, 0, 1, 1, 2, 2}, at::kLong)));
  EXPECT_EQ(BatchPlace().parts_of_rows(0, 3, at::kLong).numel(), 0);
  // A global batch of 10 shared by 2 ranks ([0, 5) and [5, 10)) in microbatches of 2, 2 and 1, with 1 or 3 rows per
  // example (the token rows of a sequence model): each row falls in the part of its place in the global batch, as in
  // the whole batch on one rank.
  for (const int64_t per : {1, 3}) {
    const at::Tensor whole = place(0, 10, 10, 0, 10, 10).parts_of_rows(10 * per, 4, at::kLong);
    EXPECT_TRUE(at::equal(whole, BatchPlace().parts_of_rows(10 * per, 4, at::kLong))) << per;
    std::vector<at::Tensor> pieces;
    for (const int64_t begin : {0, 5}) {
      for (const auto& [first, rows] : std::vector<std::pair<int64_t, int64_t>>{{0, 2}, {2, 2}, {4, 1}}) {
        pieces.push_back(place(first, rows, 5, begin, begin + 5, 10).parts_of_rows(rows * per, 4, at::kLong));
      }
    }
    EXPECT_TRUE(at::equal(at::cat(pieces), whole)) << per << " rows per example";
  }
  // Rank 1 kept 2 of its 5 rows (selective backprop): they stand for its share in proportion, at places 5/10 and
  // 7.5/10 of the global batch.
  EXPECT_TRUE(at::equal(place(0, 2, 2, 5, 10, 10).parts_of_rows(2, 4, at::kLong), at::tensor({2, 3}, at::kLong)));
  // Rows that are not a whole number per example, and impossible requests.
  const std::string uneven = message_of([&] { place(0, 2, 4, 0, 4, 4).parts_of_rows(5, 4, at::kLong); });
  EXPECT_NE(uneven.find("5 rows for a batch of 2 examples; expected the same number of rows for every example"),
            std::string::npos)
      << uneven;
  EXPECT_THROW(BatchPlace().parts_of_rows(4, 0, at::kLong), tessera::InputError);
}
