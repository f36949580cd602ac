#pragma once
// SentencePiece's own model files (T5's spiece.model, XLM-RoBERTa's sentencepiece.bpe.model: a ModelProto in
// protobuf's wire format) read as transformers' SpmConverter converts them to a Hugging Face tokenizer.json, for
// Unigram models: the pieces and their scores, unk_id, the control and user-defined pieces as added tokens (control
// ones special), the normalizer Precompiled (the model's character map, when it has one), Strip (right) and Replace
// " {2,}" by "▁", Metaspace (prepend scheme always) as pre-tokenizer and decoder, no post-processor. Used by
// Tokenizer::load (src/data/tokenizer.cpp) for a `.model` file.
#include <string>

#include <nlohmann/json.hpp>

namespace tessera::data::sentencepiece {

/// The tokenizer.json document of the SentencePiece model `bytes` (the contents of `file`). InputError "tokenizer
/// FILE: …" for bytes that are not a ModelProto, and for BPE, word or character models (convert those with
/// transformers: their merges are not in the file).
nlohmann::json model_to_tokenizer_json(const std::string& bytes, const std::string& file);

}  // namespace tessera::data::sentencepiece
