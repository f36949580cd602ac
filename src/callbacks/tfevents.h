#pragma once
// TensorBoard's event files, written without TensorFlow or protobuf: each event is a protocol-buffer message
// (tensorboard/compat/proto/event.proto, summary.proto, tensor.proto; plugins' data in
// tensorboard/plugins/{text,hparams}/*.proto) encoded by hand, framed as a TFRecord:
//
//     uint64 length | uint32 masked_crc32c(length) | payload | uint32 masked_crc32c(payload)   (little-endian)
//
// where masked_crc32c(x) = rotate_right(crc32c(x), 15) + 0xa282ead8 and CRC-32C is the Castagnoli CRC.
// Used by TensorboardWriter (include/tessera/callbacks/metric_writers.h); every function returns one whole record.
#include <cstdint>
#include <map>
#include <string>

namespace tessera::callbacks::tfevents {

/// CRC-32C (Castagnoli) of `size` bytes.
uint32_t crc32c(const void* data, size_t size);
/// The masked CRC-32C that TFRecords store.
uint32_t masked_crc32c(const std::string& bytes);
/// `payload` framed as a TFRecord.
std::string record(const std::string& payload);

/// The first event of every file: {wall_time, file_version: "brain.Event:2"}.
std::string file_version(double wall_time);
/// One event holding a scalar summary per value ({tag: key, simple_value: value as float32}).
std::string scalars(double wall_time, int64_t step, const std::map<std::string, double>& values);
/// One event holding a text summary (the text plugin's; a string tensor of rank 0, shown as Markdown).
std::string text(double wall_time, int64_t step, const std::string& tag, const std::string& markdown);
/// One event holding an image summary: `png` (a PNG file) of `height` x `width` pixels with `channels` channels (1:
/// grayscale, 3: RGB), shown in TensorBoard's Images tab.
std::string image(double wall_time, int64_t step, const std::string& tag, const std::string& png, int64_t height,
                  int64_t width, int64_t channels);
/// One event holding the hparams plugin's session-start summary ("_hparams_/session_start_info"): each value
/// becomes a number when it reads as a finite number in full, a bool when it is "true" or "false", a string
/// otherwise; `start_time` is the session's start in seconds since the Unix epoch.
std::string session_start(double wall_time, int64_t step, const std::map<std::string, std::string>& hparams,
                          double start_time);

}  // namespace tessera::callbacks::tfevents
