#pragma once
// Table-driven reflected CRC-32s, one per polynomial (in reversed form): 0xedb88320 is ISO 3309's (PNG chunks, zip,
// png::crc32), 0x82f63b78 Castagnoli's (CRC-32C, TFRecords, tfevents::crc32c).
#include <array>
#include <cstddef>
#include <cstdint>

namespace tessera::callbacks {

template <uint32_t Polynomial>
uint32_t reflected_crc32(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ Polynomial : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

}  // namespace tessera::callbacks
