// Byte-level BPE, WordPiece and SentencePiece-style BPE tokenizers from Python (include/tessera/data/tokenizer.h; docs/language-models.md "Tokenizers"),
// thinly bound as tessera.data.Tokenizer. Text is str (UTF-8) or bytes; decode gives str (bytes that are not UTF-8
// replaced) and decode_bytes the exact bytes.
#include <tessera/data/tokenizer.h>

#include "common.h"

namespace tessera::python {

void bind_tokenizer(py::module_& d) {
  using data::Tokenizer;
  py::class_<Tokenizer>(d, "Tokenizer",
                        "A byte-level BPE tokenizer (GPT-2's, Llama 3's, Qwen2's or GPT-4o's scheme, or Splits by "
                        "other regexes), a WordPiece one (BERT's), a "
                        "SentencePiece-style BPE one (Llama 2's) or a Unigram one (T5's, XLM-RoBERTa's), as Hugging "
                        "Face's tokenizer.json. Train a "
                        "byte-level BPE one with Tokenizer.train, or read any with Tokenizer.load.")
      .def_static(
          "train",
          [](const std::vector<std::string>& texts, int64_t vocab_size, int64_t min_frequency,
             const std::vector<std::string>& special_tokens, const std::string& single_template,
             const std::string& pattern, const std::string& split_regex, const std::string& normalizer) {
            const data::TokenizerTrainOptions options = data::TokenizerTrainOptions()
                                                            .vocab_size(vocab_size)
                                                            .min_frequency(min_frequency)
                                                            .special_tokens(special_tokens)
                                                            .single_template(single_template)
                                                            .pattern(pattern)
                                                            .split_regex(split_regex)
                                                            .normalizer(normalizer);
            py::gil_scoped_release release;
            return Tokenizer::train(texts, options);
          },
          py::arg("texts"), py::kw_only(), py::arg("vocab_size") = 4096, py::arg("min_frequency") = 2,
          py::arg("special_tokens") = std::vector<std::string>{}, py::arg("single_template") = "",
          py::arg("pattern") = "gpt2", py::arg("split_regex") = "", py::arg("normalizer") = "none",
          "Trains on `texts` (str or bytes each): the merges Hugging Face's BpeTrainer finds on the same text. "
          "single_template (such as '$A <|endoftext|>') is the post-processor's: the special tokens "
          "encode(text, add_special_tokens=True) puts around a text. pattern: 'gpt2' (GPT-2's pre-tokenizer), "
          "'llama3' (Llama 3's: numbers in runs of at most three digits), 'qwen2' (Llama 3's with single digits) or "
          "'o200k' (GPT-4o's); split_regex: a pre-tokenizer regex of your own instead (Hugging Face's Split, "
          "Oniguruma syntax); normalizer: 'none', 'nfc' (Qwen2's), 'nfd', 'nfkc' or 'nfkd'.")
      .def_static("load", &Tokenizer::load, py::arg("path"),
                  "Reads a tokenizer.json (byte-level BPE, WordPiece or SentencePiece-style BPE), or a folder with "
                  "tokenizer.json, "
                  "vocab.json + merges.txt (GPT-2's) or vocab.txt (BERT's).")
      .def("save", &Tokenizer::save, py::arg("path"), "Writes a Hugging Face tokenizer.json, atomically.")
      .def("to_json", &Tokenizer::to_json)
      .def(
          "encode",
          [](const Tokenizer& t, const std::string& text, bool add_special_tokens) {
            py::gil_scoped_release release;
            return t.encode(text, add_special_tokens);
          },
          py::arg("text"), py::arg("add_special_tokens") = false,
          "The token ids of `text` (str or bytes); add_special_tokens puts the post-processor's tokens around them "
          "(Hugging Face's default is True; here it is asked for).")
      .def(
          "decode",
          [](const Tokenizer& t, const std::vector<int64_t>& ids, bool skip_special_tokens) {
            const std::string bytes = t.decode(ids, skip_special_tokens);
            return py::reinterpret_steal<py::str>(PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "replace"));
          },
          py::arg("ids"), py::arg("skip_special_tokens") = false,
          "The text of `ids` (bytes that are not UTF-8 become U+FFFD; decode_bytes gives them as they are).")
      .def(
          "decode_bytes",
          [](const Tokenizer& t, const std::vector<int64_t>& ids, bool skip_special_tokens) {
            return py::bytes(t.decode(ids, skip_special_tokens));
          },
          py::arg("ids"), py::arg("skip_special_tokens") = false)
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("model", &Tokenizer::model, "'BPE' (byte-level or SentencePiece-style), 'Unigram' or 'WordPiece'")
      .def_property_readonly("byte_level", &Tokenizer::byte_level,
                             "True for byte-level BPE (GPT-2's, Llama 3's), False for WordPiece, SentencePiece-style "
                             "BPE (over characters, with byte fallback: Llama 2's, Mistral's) and Unigram")
      .def_property_readonly(
          "pattern", [](const Tokenizer& t) { return data::pattern_name(t.pattern()); },
          "a byte-level BPE tokenizer's pre-tokenizer pattern: 'gpt2', 'llama3', 'qwen2', 'o200k' or 'custom' (other "
          "Splits: pre_tokenizer_json)")
      .def_property_readonly("pre_tokenizer_json", &Tokenizer::pre_tokenizer_json,
                             "a byte-level BPE tokenizer's pre-tokenizer, as tokenizer.json writes it")
      .def_property_readonly("normalizer", &Tokenizer::normalizer,
                             "a byte-level BPE tokenizer's Unicode normalization: 'NFC', 'NFD', 'NFKC', 'NFKD' or '' "
                             "(none)")
      .def_property_readonly("ignore_merges", &Tokenizer::ignore_merges,
                             "whether a piece that is a token as a whole is that token, unmerged (Llama 3's)")
      .def_property_readonly("special_tokens", &Tokenizer::special_tokens, "the special added tokens' texts, by id")
      .def_property_readonly(
          "added_tokens",
          [](const Tokenizer& t) {
            py::list out;
            for (const data::AddedToken& a : t.added_tokens()) {
              out.append(py::dict(py::arg("id") = a.id, py::arg("content") = a.content, py::arg("special") = a.special,
                                  py::arg("lstrip") = a.lstrip, py::arg("rstrip") = a.rstrip,
                                  py::arg("single_word") = a.single_word, py::arg("normalized") = a.normalized));
            }
            return out;
          },
          "the added tokens, by id, as tokenizer.json's added_tokens")
      .def_property_readonly("prefix_ids", &Tokenizer::prefix_ids,
                             "the ids encode(text, add_special_tokens=True) puts before the text")
      .def_property_readonly("suffix_ids", &Tokenizer::suffix_ids, "... and after it")
      .def_property_readonly("merges", &Tokenizer::merges, "(left id, right id) per merge, in rank order")
      .def("token_to_string", &Tokenizer::token_to_string, py::arg("id"),
           "The token as tokenizer.json spells it (a space is 'Ġ').")
      .def("string_to_token", &Tokenizer::string_to_token, py::arg("spelling"), "The id of a spelling, or -1.")
      .def("is_special", &Tokenizer::is_special, py::arg("id"))
      .def("fingerprint", &Tokenizer::fingerprint)
      .def("__len__", &Tokenizer::vocab_size)
      .def("__repr__", [](const Tokenizer& t) { return "<tessera.data.Tokenizer: " + t.describe() + ">"; });
}

}  // namespace tessera::python
