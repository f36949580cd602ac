#pragma once
// PNG files without a compression library: 8-bit grayscale or RGB, one IDAT chunk whose zlib stream holds stored
// (uncompressed) deflate blocks (RFC 1950, 1951; the PNG specification, 2nd edition). Any PNG reader reads them; they
// are as large as the pixels (plus a filter byte per row), which is small for the image grids loggers write.
#include <cstdint>
#include <string>

namespace tessera::callbacks::png {

/// CRC-32 (ISO 3309, as PNG chunks and zip use) of `size` bytes.
uint32_t crc32(const void* data, size_t size);
/// Adler-32 (zlib's checksum) of `size` bytes.
uint32_t adler32(const void* data, size_t size);

/// The PNG file of `height` rows of `width` pixels of `channels` bytes each (1: gray, 3: RGB), row after row.
std::string encode(const uint8_t* pixels, int64_t height, int64_t width, int64_t channels);

}  // namespace tessera::callbacks::png
