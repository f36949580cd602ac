// PNG (libpng's simplified API) and JPEG (libjpeg-turbo) for image columns: file bytes <-> uint8 [H, W, C].
#include <csetjmp>
#include <cstdio>
#include <cstdlib>

#include <ATen/ATen.h>
#include <jpeglib.h>
#include <png.h>

#include "data/mds/detail.h"

namespace tessera::data::mds {

namespace {

at::Tensor checked_pixels(const at::Tensor& pixels, const char* format, int max_channels) {
  at::Tensor t = pixels.dim() == 2 ? pixels.unsqueeze(2) : pixels;
  if (t.scalar_type() != at::kByte || t.dim() != 3 || t.size(0) < 1 || t.size(1) < 1 || t.size(2) < 1 ||
      t.size(2) > max_channels || (std::string(format) == "JPEG" && t.size(2) == 2))
    throw InputError(std::string("encode ") + format + ": pixels must be a non-empty uint8 tensor [H, W] or [H, W, C] " +
                     "with C in " + (max_channels == 4 ? "1..4" : "{1, 3}") + ", got " +
                     std::string(c10::toString(pixels.scalar_type())) + " " + c10::str(pixels.sizes()));
  if (t.size(0) > 65535 || t.size(1) > 65535)
    throw InputError(std::string("encode ") + format + ": images are at most 65535 pixels wide and high");
  return t.contiguous().cpu();
}

// libjpeg reports fatal errors through error_exit, which must not return: jump back with the message.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};
void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}
void jpeg_quiet(j_common_ptr, int) {}  // warnings are counted (num_warnings) and turned into errors below

}  // namespace

at::Tensor decode_png(Bytes file, const std::string& what) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, file.data, file.size))
    throw InputError(what + ": not a valid PNG file (libpng: " + image.message + ")");
  const bool color = (image.format & PNG_FORMAT_FLAG_COLOR) != 0;
  const bool alpha = (image.format & PNG_FORMAT_FLAG_ALPHA) != 0;
  image.format = (color ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY) | (alpha ? PNG_FORMAT_FLAG_ALPHA : 0);
  const int64_t channels = PNG_IMAGE_SAMPLE_CHANNELS(image.format);
  at::Tensor out = at::empty({image.height, image.width, channels}, at::TensorOptions(at::kByte));
  if (!png_image_finish_read(&image, nullptr, out.data_ptr<uint8_t>(), 0, nullptr)) {
    const std::string message = image.message;
    png_image_free(&image);
    throw InputError(what + ": corrupt PNG data (libpng: " + message + ")");
  }
  return out;
}

std::string encode_png(const at::Tensor& pixels) {
  const at::Tensor t = checked_pixels(pixels, "PNG", 4);
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(t.size(1));
  image.height = static_cast<png_uint_32>(t.size(0));
  static constexpr png_uint_32 kFormats[] = {PNG_FORMAT_GRAY, PNG_FORMAT_GA, PNG_FORMAT_RGB, PNG_FORMAT_RGBA};
  image.format = kFormats[t.size(2) - 1];
  png_alloc_size_t size = 0;
  if (!png_image_write_get_memory_size(image, size, 0, t.data_ptr<uint8_t>(), 0, nullptr))
    throw Error(std::string("encode PNG: libpng: ") + image.message);
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, t.data_ptr<uint8_t>(), 0, nullptr))
    throw Error(std::string("encode PNG: libpng: ") + image.message);
  out.resize(size);
  return out;
}

at::Tensor decode_jpeg(Bytes file, const std::string& what) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  at::Tensor out;  // declared before setjmp: a longjmp must not skip any destructor
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_quiet;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw InputError(what + ": corrupt JPEG data (libjpeg: " + err.message + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, file.data, static_cast<unsigned long>(file.size));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out = at::empty({cinfo.output_height, cinfo.output_width, cinfo.output_components}, at::TensorOptions(at::kByte));
  uint8_t* base = out.data_ptr<uint8_t>();
  const size_t stride = static_cast<size_t>(cinfo.output_width) * static_cast<size_t>(cinfo.output_components);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = base + cinfo.output_scanline * stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  const long warnings = err.mgr.num_warnings;
  if (warnings > 0) (*err.mgr.format_message)(reinterpret_cast<j_common_ptr>(&cinfo), err.message);
  jpeg_destroy_decompress(&cinfo);
  if (warnings > 0) throw InputError(what + ": corrupt or truncated JPEG data (libjpeg: " + err.message + ")");
  return out;
}

std::string encode_jpeg(const at::Tensor& pixels, int quality) {
  const at::Tensor t = checked_pixels(pixels, "JPEG", 3);
  jpeg_compress_struct cinfo{};
  JpegError err{};
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buffer);
    throw Error(std::string("encode JPEG: libjpeg: ") + err.message);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(t.size(1));
  cinfo.image_height = static_cast<JDIMENSION>(t.size(0));
  cinfo.input_components = static_cast<int>(t.size(2));
  cinfo.in_color_space = t.size(2) == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const uint8_t* base = t.data_ptr<uint8_t>();
  const size_t stride = static_cast<size_t>(t.size(1) * t.size(2));
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(base + cinfo.next_scanline * stride);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return out;
}

}  // namespace tessera::data::mds
