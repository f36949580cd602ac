#pragma once
// Reading back the TensorBoard event files Tessera writes (src/callbacks/tfevents.h), for tests: callbacks_test.cpp
// (the writer) and composition_test.cpp (a stopped and resumed run's file against an uninterrupted run's).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../src/callbacks/tfevents.h"

namespace tessera::testing {

/// The payloads of the TFRecords in `bytes`, each checked (framing, both CRCs) and without its wall time (an
/// Event's first field, written first: the one thing that differs between two runs that log the same).
inline std::vector<std::string> tfevents_payloads(const std::string& bytes) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < bytes.size()) {
    uint64_t length = 0;
    uint32_t header_crc = 0, payload_crc = 0;
    if (at + 12 > bytes.size()) break;
    std::memcpy(&length, bytes.data() + at, 8);
    std::memcpy(&header_crc, bytes.data() + at + 8, 4);
    if (at + 16 + length > bytes.size()) break;
    std::string payload = bytes.substr(at + 12, length);
    std::memcpy(&payload_crc, bytes.data() + at + 12 + length, 4);
    EXPECT_EQ(header_crc, callbacks::tfevents::masked_crc32c(bytes.substr(at, 8))) << "record " << out.size();
    EXPECT_EQ(payload_crc, callbacks::tfevents::masked_crc32c(payload)) << "record " << out.size();
    if (!payload.empty() && payload[0] == '\x09') payload.erase(0, 9);  // field 1 (wall_time), a fixed64
    out.push_back(payload);
    at += 16 + length;
  }
  EXPECT_EQ(at, bytes.size()) << "a truncated record";
  return out;
}

namespace detail {
inline uint64_t read_varint(const std::string& s, size_t& at) {
  uint64_t v = 0;
  for (int shift = 0; at < s.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(s[at++]);
    v |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) break;
  }
  return v;
}
}  // namespace detail

/// The tag of the first value of an event's summary, from a payload of tfevents_payloads ("" for an event without a
/// summary: the file's version event). Each event Tessera writes holds values of one kind (scalars, a text, an
/// image, the hparams session), so the first tag tells what the event is.
inline std::string first_tag(const std::string& payload) {
  size_t at = 0;
  const auto field = [&](unsigned char key) {  // steps over the field key `key`; false when another comes
    if (at >= payload.size() || static_cast<unsigned char>(payload[at]) != key) return false;
    ++at;
    return true;
  };
  if (field(0x10)) detail::read_varint(payload, at);  // step
  if (!field(0x2a)) return "";                         // summary
  detail::read_varint(payload, at);
  if (!field(0x0a)) return "";  // its first value
  detail::read_varint(payload, at);
  if (!field(0x0a)) return "";  // the value's tag
  const uint64_t n = detail::read_varint(payload, at);
  return payload.substr(at, n);
}

}  // namespace tessera::testing
