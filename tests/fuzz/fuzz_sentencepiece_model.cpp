// Fuzz target: a SentencePiece model file (protobuf's wire format) as Tokenizer::load reads it
// (src/data/sentencepiece_model.h: a Unigram model becomes what transformers' SpmConverter makes of it), then a text
// encoded and decoded with it.
// Input: the file's bytes.
// Contract: load throws InputError naming the file (never another exception, crash or report); a tokenizer that
// loads encodes the text to ids inside its vocabulary (or refuses it with an InputError: no unknown token) and decodes
// them without a crash.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <tessera/data/tokenizer.h>
#include <tessera/error.h>

#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 20)) return 0;
  const std::string file = tessera::fuzz::scratch() + "/spiece.model";
  tessera::fuzz::write_bytes(file, std::string(reinterpret_cast<const char*>(data), size));
  try {
    const tessera::data::Tokenizer t = tessera::data::Tokenizer::load(file);
    const std::vector<int64_t> ids = t.encode("Hello w\xC3\xB6rld  \xEF\xBC\xA1 a\xCC\x81 <s>\xFF  ");
    for (int64_t id : ids)
      if (id < 0 || id >= t.vocab_size()) std::abort();
    t.decode(ids);
  } catch (const tessera::InputError&) {
  }
  return 0;
}
