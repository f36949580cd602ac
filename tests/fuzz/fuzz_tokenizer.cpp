// Fuzz target: a tokenizer.json as Tokenizer::load reads it, then a text encoded and decoded with it.
// Input: the tokenizer.json text, then optionally a NUL and the text to encode (any bytes).
// Contract: load throws InputError naming the file (never another exception, crash or report); a tokenizer that
// loads encodes any text to ids inside its vocabulary, and encode(text, true) is the post-processor's ids around
// encode(text). A byte-level BPE tokenizer's ids decode to the text exactly (tokenizers whose add_prefix_space adds
// spaces: the text but for spaces; with added tokens that lstrip or rstrip: the text less some of its bytes, in
// order; with an NFC or NFD normalizer: the same text once normalized; with a Split that removes its matches: not
// checked); WordPiece, SentencePiece-style BPE and Unigram tokenizers (normalized text, unknown tokens) encode and
// decode without a crash (a Unigram without an unknown token may refuse a text with an InputError).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <tessera/data/tokenizer.h>
#include <tessera/error.h>

#include "data/normalization.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 20)) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string file = tessera::fuzz::scratch() + "/tokenizer.json";
  tessera::fuzz::write_bytes(file, std::string(input.substr(0, nul)));
  const std::string text(nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1));
  try {
    const tessera::data::Tokenizer t = tessera::data::Tokenizer::load(file);
    const std::vector<int64_t> ids = t.encode(text);
    for (int64_t id : ids)
      if (id < 0 || id >= t.vocab_size()) std::abort();
    std::string back = t.decode(ids), want = text;
    const bool strips = std::any_of(t.added_tokens().begin(), t.added_tokens().end(),
                                    [](const tessera::data::AddedToken& a) { return a.lstrip || a.rstrip; });
    // WordPiece, SentencePiece-style: no round trip (normalized, unknown tokens); nor for a Split that removes text.
    if (!t.byte_level() || t.pre_tokenizer_json().find("\"Removed\"") != std::string::npos ||
        (strips && !t.normalizer().empty()))
      want = back;
    if (!t.normalizer().empty()) {  // the text between added tokens normalized: the same text once normalized
      tessera::data::unicode::NormalForm form;
      if (!tessera::data::unicode::normal_form_from_name(t.normalizer(), form)) std::abort();
      back = tessera::data::unicode::normalize(back, form);
      want = tessera::data::unicode::normalize(want, form);
    }
    if (t.add_prefix_space()) {  // spaces may have been added: compare what is not a space
      back.erase(std::remove(back.begin(), back.end(), ' '), back.end());
      want.erase(std::remove(want.begin(), want.end(), ' '), want.end());
    }
    size_t matched = 0;  // how much of `back` is a subsequence of `want`
    for (size_t i = 0; i < want.size() && matched < back.size(); ++i)
      if (want[i] == back[matched]) ++matched;
    if (strips ? matched != back.size() : back != want) {
      std::fprintf(stderr, "fuzz_tokenizer: decode(encode(text)) differs from the text\n");
      std::abort();
    }
    std::vector<int64_t> around = t.prefix_ids();
    around.insert(around.end(), ids.begin(), ids.end());
    around.insert(around.end(), t.suffix_ids().begin(), t.suffix_ids().end());
    if (t.encode(text, true) != around) {
      std::fprintf(stderr, "fuzz_tokenizer: encode(text, true) is not the post-processor's ids around encode(text)\n");
      std::abort();
    }
  } catch (const tessera::Error&) {
  }
  return 0;
}
