#include "png.h"
#include "crc32.h"

#include <algorithm>
#include <stdexcept>

namespace tessera::callbacks::png {
namespace {

void big_endian(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
}

/// length | type | data | CRC-32 of type and data.
void chunk(std::string& out, const char* type, const std::string& data) {
  big_endian(out, static_cast<uint32_t>(data.size()));
  const std::string typed = std::string(type, 4) + data;
  out += typed;
  big_endian(out, crc32(typed.data(), typed.size()));
}

}  // namespace

uint32_t crc32(const void* data, size_t size) { return reflected_crc32<0xedb88320u>(data, size); }

uint32_t adler32(const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t a = 1, b = 0;
  for (size_t i = 0; i < size; ++i) {
    a = (a + p[i]) % 65521u;
    b = (b + a) % 65521u;
  }
  return (b << 16) | a;
}

std::string encode(const uint8_t* pixels, int64_t height, int64_t width, int64_t channels) {
  if (height < 1 || width < 1 || height > 0x7fffffff || width > 0x7fffffff || (channels != 1 && channels != 3)) {
    throw std::invalid_argument("png::encode: expected a positive size and 1 or 3 channels");
  }
  // The scanlines: filter type 0 (none) and the row's bytes.
  const auto row = static_cast<size_t>(width * channels);
  std::string raw;
  raw.reserve(static_cast<size_t>(height) * (row + 1));
  for (int64_t y = 0; y < height; ++y) {
    raw += '\0';
    raw.append(reinterpret_cast<const char*>(pixels) + static_cast<size_t>(y) * row, row);
  }
  // zlib: CMF 0x78 (deflate, 32K window), FLG 0x01 (check bits; no dictionary, fastest level), stored blocks of at
  // most 65535 bytes (BFINAL on the last, BTYPE 00, LEN, NLEN little-endian), Adler-32 big-endian.
  std::string z = "\x78\x01";
  size_t at = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - at);
    z += static_cast<char>(at + n == raw.size() ? 1 : 0);
    z += static_cast<char>(n & 0xff);
    z += static_cast<char>(n >> 8);
    z += static_cast<char>(~n & 0xff);
    z += static_cast<char>((~n >> 8) & 0xff);
    z.append(raw, at, n);
    at += n;
  } while (at < raw.size());
  big_endian(z, adler32(raw.data(), raw.size()));

  std::string header;
  big_endian(header, static_cast<uint32_t>(width));
  big_endian(header, static_cast<uint32_t>(height));
  header += '\x08';                              // bit depth
  header += static_cast<char>(channels == 1 ? 0 : 2);  // color type: grayscale or truecolour
  header += std::string(3, '\0');                // deflate, adaptive filtering, no interlace
  std::string out = "\x89PNG\r\n\x1a\n";
  chunk(out, "IHDR", header);
  chunk(out, "IDAT", z);
  chunk(out, "IEND", "");
  return out;
}

}  // namespace tessera::callbacks::png
