// The generate callback (include/tessera/callbacks/generate.h).
#include <tessera/callbacks/generate.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>
#include <tessera/models/model.h>
#include <tessera/state.h>

namespace tessera::callbacks {
namespace {

constexpr int64_t kByteVocabulary = 256;

/// Bytes `s` starting at `i` that form one valid UTF-8 character of 2 to 4 bytes, else 0.
size_t utf8_length(const std::string& s, size_t i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  const size_t n = lead >= 0xC2 && lead <= 0xDF ? 2 : lead >= 0xE0 && lead <= 0xEF ? 3 : lead >= 0xF0 && lead <= 0xF4 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  }
  return n;
}

/// `s` in double quotes, readable on one line: C escapes for quotes, backslashes and control bytes, \xHH for bytes
/// that are not valid UTF-8 (a model may produce any byte sequence).
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else if (const size_t n = c >= 0x80 ? utf8_length(s, i) : 0; n > 0) {
      out.append(s, i, n);
      i += n;
      continue;
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
    ++i;
  }
  return out + "\"";
}

}  // namespace

Generate::Generate(GenerateCallbackOptions options) : options_(std::move(options)) {
  validate_options(options_, "generate");
  if (options_.prompts().empty()) {
    throw InputError("generate.prompts: no prompts; expected a list of texts to continue, such as [\"The \"]");
  }
  for (size_t i = 0; i < options_.prompts().size(); ++i) {
    if (options_.prompts()[i].empty()) {
      throw InputError(fmt::format("generate.prompts[{}]: an empty prompt; expected at least one character", i));
    }
  }
  const Time& every = options_.interval();
  if (every.unit() == TimeUnit::Token || !(every.as_double() > 0)) {
    throw InputError("generate.interval: " + every.str() + "; expected a time greater than 0 in ep, ba, sp or dur");
  }
  if (!options_.tokenizer().empty()) {
    tokenizer_ = std::make_shared<const data::Tokenizer>(data::Tokenizer::load(options_.tokenizer()));
  }
  static_cast<GenerateOptions&>(options_) = resolve_eos_text(options_, tokenizer_.get());
}

at::Tensor Generate::encode(const std::string& text) const { return text_to_tokens(text, tokenizer_.get()); }

std::string Generate::decode(const at::Tensor& tokens) const { return tokens_to_text(tokens, tokenizer_.get()); }

void Generate::run_event(Event event, State& state, Logger& logger) {
  if (state.rank != 0) return;
  const Time& every = options_.interval();
  switch (event) {
    case Event::FitStart: {
      previous_ = state.timestamp;
      const int64_t vocab = state.model->num_classes();
      if (tokenizer_ && vocab != tokenizer_->vocab_size()) {
        throw InputError(fmt::format("generate: the model's vocabulary has {} tokens (Model::num_classes) but the "
                                     "tokenizer {} has {}; give generate the tokenizer the model's data was "
                                     "tokenized with",
                                     vocab, options_.tokenizer(), tokenizer_->vocab_size()));
      }
      if (!tokenizer_ && vocab != kByteVocabulary) {
        throw InputError(fmt::format("generate: the model's vocabulary has {} tokens (Model::num_classes); expected "
                                     "the byte-level vocabulary of 256 tokens (the text dataset's), in which the "
                                     "prompts and generations are text; for a model trained on a tokenizer's tokens, "
                                     "give generate its `tokenizer`",
                                     vocab));
      }
      // A trial of one token, before step 1: a model that is not a language model is refused here, not later.
      try {
        tessera::generate(*state.model, encode(options_.prompts().front()).unsqueeze(0),
                          GenerateOptions(options_).max_new_tokens(1));
      } catch (const std::exception& e) {
        std::string what = e.what();
        what = what.substr(0, what.find('\n'));
        throw InputError("generate: cannot generate with this model (" + what +
                         "); expected a language model whose outputs are next-token logits [N, vocab, S] for token "
                         "ids [N, S], such as the gpt model");
      }
      return;
    }
    case Event::BatchEnd: {
      const bool due = every.unit() != TimeUnit::Epoch && interval_crossed(every, previous_, state.timestamp, state.time);
      previous_ = state.timestamp;
      if (due) generate(state, logger);
      return;
    }
    case Event::EpochEnd:
      if (every.unit() == TimeUnit::Epoch && state.timestamp.epoch % every.value() == 0) generate(state, logger);
      return;
    case Event::FitEnd:
      if (generated_at_ != state.timestamp.batch) generate(state, logger);
      return;
    default:
      return;
  }
}

void Generate::generate(State& state, Logger& logger) {
  generated_at_ = state.timestamp.batch;
  last_.clear();
  for (const auto& prompt : options_.prompts()) {
    const at::Tensor prompt_ids = encode(prompt);
    const at::Tensor tokens = tessera::generate(*state.model, prompt_ids.unsqueeze(0), options_)[0];
    last_.push_back(decode(tokens));
    const std::string continuation = decode(tokens.narrow(0, prompt_ids.numel(), tokens.numel() - prompt_ids.numel()));
    logger.info(fmt::format("generate @ {}ep {}ba: {} -> {}", state.timestamp.epoch, state.timestamp.batch,
                            quoted(prompt), quoted(continuation)));
  }
}

}  // namespace tessera::callbacks
