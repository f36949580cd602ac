// Tests of image_visualizer (a grid of the images a batch feeds the model) and of the PNG encoder its pictures are
// written with (src/callbacks/png.h); the TensorBoard writer's image summaries are in callbacks_test.cpp, and
// TensorBoard reading them in tensorboard_interop_test.cpp.
#include <gtest/gtest.h>
#include <tessera/callbacks/image_visualizer.h>
#include <tessera/error.h>
#include <tessera/trainer.h>

#include <cstring>
#include <map>
#include <memory>
#include <tuple>
#include <string>
#include <vector>

#include "../../src/callbacks/png.h"
#include "support.h"

namespace tessera {
namespace {

using callbacks::ImageVisualizer;
using callbacks::ImageVisualizerOptions;
using callbacks::image_grid;
namespace png = callbacks::png;

uint32_t big_endian_at(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s.at(at + i));
  return v;
}

struct Decoded {
  int64_t height = 0, width = 0, channels = 0;
  std::string pixels;  ///< rows of width * channels bytes
};

/// Reads a PNG as png::encode writes it (8-bit gray or RGB, stored deflate blocks, filter 0), checking the
/// signature, every chunk's CRC-32, the zlib header, each block's LEN/NLEN and the Adler-32.
Decoded decode_stored_png(const std::string& file) {
  Decoded d;
  EXPECT_EQ(file.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  std::string idat;
  size_t at = 8;
  bool ended = false;
  while (at + 12 <= file.size() && !ended) {
    const uint32_t length = big_endian_at(file, at);
    const std::string typed = file.substr(at + 4, 4 + length);
    EXPECT_EQ(big_endian_at(file, at + 8 + length), png::crc32(typed.data(), typed.size())) << typed.substr(0, 4);
    const std::string type = typed.substr(0, 4), data = typed.substr(4);
    if (type == "IHDR") {
      d.width = big_endian_at(data, 0);
      d.height = big_endian_at(data, 4);
      EXPECT_EQ(data[8], 8);  // bit depth
      d.channels = data[9] == 0 ? 1 : data[9] == 2 ? 3 : -1;
    } else if (type == "IDAT") {
      idat += data;
    } else if (type == "IEND") {
      ended = true;
    }
    at += 12 + length;
  }
  EXPECT_TRUE(ended);
  EXPECT_EQ(at, file.size());
  EXPECT_EQ(idat.substr(0, 2), "\x78\x01");
  std::string raw;
  size_t z = 2;
  for (bool last = false; !last && z + 5 <= idat.size();) {
    last = (idat[z] & 1) != 0;
    EXPECT_EQ(idat[z] & 6, 0) << "a stored block";
    const auto len = static_cast<size_t>(static_cast<unsigned char>(idat[z + 1]) | (static_cast<unsigned char>(idat[z + 2]) << 8));
    const auto nlen = static_cast<size_t>(static_cast<unsigned char>(idat[z + 3]) | (static_cast<unsigned char>(idat[z + 4]) << 8));
    EXPECT_EQ(len ^ 0xffff, nlen);
    raw += idat.substr(z + 5, len);
    z += 5 + len;
  }
  EXPECT_EQ(big_endian_at(idat, z), png::adler32(raw.data(), raw.size()));
  EXPECT_EQ(z + 4, idat.size());
  const auto row = static_cast<size_t>(d.width * d.channels);
  EXPECT_EQ(raw.size(), static_cast<size_t>(d.height) * (row + 1));
  for (int64_t y = 0; y < d.height && (static_cast<size_t>(y) + 1) * (row + 1) <= raw.size(); ++y) {
    EXPECT_EQ(raw[static_cast<size_t>(y) * (row + 1)], '\0') << "filter type 0";
    d.pixels += raw.substr(static_cast<size_t>(y) * (row + 1) + 1, row);
  }
  return d;
}

TEST(Png, ChecksumsMatchTheirCheckValues) {
  EXPECT_EQ(png::crc32("123456789", 9), 0xcbf43926u);
  EXPECT_EQ(png::adler32("Wikipedia", 9), 0x11e60398u);
  EXPECT_EQ(png::adler32("", 0), 1u);
}

TEST(Png, PixelsReadBackExactlyInOneStoredBlockOrSeveral) {
  at::manual_seed(1);
  for (const auto& [h, w, c] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{2, 3, 3}, {1, 1, 1}, {250, 300, 1}}) {
    SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c));
    const at::Tensor pixels = at::randint(0, 256, {h, w, c}, at::kByte);
    const Decoded d = decode_stored_png(png::encode(pixels.data_ptr<uint8_t>(), h, w, c));
    EXPECT_EQ(d.height, h);
    EXPECT_EQ(d.width, w);
    EXPECT_EQ(d.channels, c);
    EXPECT_EQ(d.pixels, std::string(reinterpret_cast<const char*>(pixels.data_ptr<uint8_t>()),
                                     static_cast<size_t>(pixels.numel())));  // 250 x 301 bytes: two blocks
  }
  EXPECT_THROW(png::encode(nullptr, 0, 4, 1), std::invalid_argument);
  const uint8_t two[2] = {0, 0};
  EXPECT_THROW(png::encode(two, 1, 1, 2), std::invalid_argument);
}

TEST(ImageGrid, ScalesEachImageByItsOwnRangeAndLaysThemOutInRows) {
  at::Tensor images = at::zeros({3, 1, 2, 2});
  images[0] = at::arange(4, at::kFloat).reshape({1, 2, 2});           // 0, 1, 2, 3 -> 0, 85, 170, 255
  images[1].fill_(5);                                                 // constant: black
  images[2] = at::tensor({-1.0f, 1.0f, 0.0f, 1.0f}).reshape({1, 2, 2});  // -> 0, 255, 128 (127.5 rounds up), 255
  const at::Tensor grid = image_grid(images, 8, "test");
  // 3 images: 2 per row, 2 rows; 2-pixel borders: 2 + 2 * (2 + 2) = 10 pixels each way.
  ASSERT_EQ(grid.sizes(), (std::vector<int64_t>{10, 10, 1}));
  EXPECT_EQ(grid.scalar_type(), at::kByte);
  EXPECT_TRUE(grid.is_contiguous());
  const auto at_ = [&](int64_t y, int64_t x) { return grid[y][x][0].item<int64_t>(); };
  EXPECT_EQ(at_(2, 2), 0);
  EXPECT_EQ(at_(2, 3), 85);
  EXPECT_EQ(at_(3, 2), 170);
  EXPECT_EQ(at_(3, 3), 255);
  EXPECT_EQ(at::count_nonzero(grid.narrow(0, 2, 2).narrow(1, 6, 2)).item<int64_t>(), 0);  // the constant image
  EXPECT_EQ(at_(6, 2), 0);
  EXPECT_EQ(at_(6, 3), 255);
  EXPECT_EQ(at_(7, 2), 128);
  EXPECT_EQ(at_(7, 3), 255);
  // Everything else is border; the fourth place of the grid is empty.
  EXPECT_EQ(grid.sum().item<int64_t>(), 0 + 85 + 170 + 255 + 0 + 255 + 128 + 255);

  // RGB: one range over the three channels; a count below the batch's takes the first images.
  const at::Tensor rgb = at::arange(2 * 3 * 1 * 1, at::kDouble).reshape({2, 3, 1, 1});
  const at::Tensor one = image_grid(rgb, 1, "test");
  ASSERT_EQ(one.sizes(), (std::vector<int64_t>{5, 5, 3}));
  EXPECT_EQ(one[2][2][0].item<int64_t>(), 0);
  EXPECT_EQ(one[2][2][1].item<int64_t>(), 128);  // 127.5, rounded half to even
  EXPECT_EQ(one[2][2][2].item<int64_t>(), 255);
}

TEST(ImageGrid, RefusesWhatIsNotImages) {
  const std::string tokens = testing::input_error_of([] { image_grid(at::zeros({4, 8}, at::kLong), 8, "where"); });
  EXPECT_NE(tokens.find("where: the input is [4, 8] Long; expected images [N, C, H, W] with 1 or 3 channels"),
            std::string::npos)
      << tokens;
  EXPECT_THROW(image_grid(at::zeros({2, 2, 4, 4}), 8, "where"), InputError);  // two channels
  EXPECT_THROW(image_grid(at::zeros({2, 1, 4, 4}, at::kBool), 8, "where"), InputError);
}

/// A logger destination that keeps the pictures it is given.
class ImageRecorder : public LoggerDestination {
 public:
  std::string name() const override { return "image_recorder"; }
  bool takes_images() const override { return true; }
  void log_image(const std::string& tag, const at::Tensor& image, const Timestamp& ts) override {
    images.push_back({tag, image.clone(), ts.batch});
  }
  struct Logged {
    std::string tag;
    at::Tensor image;
    int64_t batch;
  };
  std::vector<Logged> images;
};

/// Keeps the input of the first forward of every training batch (before the visualizer, which comes after it).
class FirstInputs : public Callback {
 public:
  std::string name() const override { return "first_inputs"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event == Event::BeforeForward && !inputs.count(state.timestamp.batch))
      inputs[state.timestamp.batch] = state.batch.input().clone();
    if (event == Event::EvalBeforeForward && !eval_inputs.count(state.timestamp.batch))
      eval_inputs[state.timestamp.batch] = state.batch.input().clone();
  }
  std::map<int64_t, at::Tensor> inputs, eval_inputs;
};

TEST(ImageVisualizer, IsRefusedAtInitWithoutALoggerThatKeepsImages) {
  Components c = testing::tiny_components();
  c.callbacks.push_back(std::make_shared<ImageVisualizer>());
  c.callbacks.push_back(std::make_shared<testing::RecordingDestination>());  // numbers and text only
  const std::string error = testing::input_error_of([&] { Trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), c); });
  EXPECT_NE(error.find("image_visualizer: no logger keeps images; add {tensorboard: {}} to the loggers"),
            std::string::npos)
      << error;
}

TEST(ImageVisualizer, RefusesTokenSequencesAtTheFirstForwardBeforeAnyStep) {
  Components c = testing::gpt_components();
  c.callbacks = {std::make_shared<ImageVisualizer>(), std::make_shared<ImageRecorder>()};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), c);
  const std::string error = testing::input_error_of([&] { trainer.fit(); });
  EXPECT_NE(error.find("image_visualizer (training batch): the input is ["), std::string::npos) << error;
  EXPECT_NE(error.find("Long; expected images [N, C, H, W] with 1 or 3 channels"), std::string::npos) << error;
  EXPECT_EQ(trainer.state().timestamp.batch, 0);
}

TEST(ImageVisualizer, LogsWhatTheModelReceivesEveryIntervalAndEachEvaluationsFirstBatch) {
  // 6 batches of 8 per epoch, 2 epochs, trained in microbatches of 4 (two forwards per batch: one grid).
  const auto options = TrainerOptions().max_duration(Time::parse("2ep")).microbatch_size(4).threads(1);
  Components plain = testing::tiny_components();
  Trainer without(options, plain);
  without.fit();

  Components c = testing::tiny_components();
  auto inputs = std::make_shared<FirstInputs>();
  auto recorder = std::make_shared<ImageRecorder>();
  c.callbacks = {inputs, std::make_shared<ImageVisualizer>(ImageVisualizerOptions().interval(5).num_images(3)),
                 recorder};
  Trainer trainer(options, c);
  trainer.fit();
  EXPECT_EQ(weights_fingerprint(*trainer.state().model), weights_fingerprint(*without.state().model))
      << "it only reads";

  std::vector<std::string> tags;
  std::vector<int64_t> batches;
  for (const auto& logged : recorder->images) {
    tags.push_back(logged.tag);
    batches.push_back(logged.batch);
  }
  EXPECT_EQ(tags, (std::vector<std::string>{"images/train", "images/train", "images/eval", "images/train",
                                            "images/eval"}));
  EXPECT_EQ(batches, (std::vector<int64_t>{0, 5, 6, 10, 12}));
  for (const auto& logged : recorder->images) {
    SCOPED_TRACE(logged.tag + " at " + std::to_string(logged.batch));
    const bool train = logged.tag == "images/train";
    const at::Tensor& input = train ? inputs->inputs.at(logged.batch) : inputs->eval_inputs.at(logged.batch);
    if (train) EXPECT_EQ(input.size(0), 4);  // the first microbatch
    EXPECT_TRUE(at::equal(logged.image, image_grid(input, 3, "test")));
    EXPECT_EQ(logged.image.sizes(), (std::vector<int64_t>{14, 14, 1}));  // 3 images of 4x4: 2 rows of 2
  }
}

}  // namespace
}  // namespace tessera
