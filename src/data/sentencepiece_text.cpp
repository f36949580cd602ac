// SentencePiece-style BPE's normalizer, Metaspace pre-tokenizer and decoder steps (sentencepiece_text.h), as Hugging
// Face `tokenizers` applies them.
#include "sentencepiece_text.h"

#include <fmt/format.h>

#include <tessera/error.h>

#include "bert_text.h"
#include "precompiled_charsmap.h"
#include "split_regex.h"
#include "unicode.h"

namespace tessera::data::sentencepiece {

namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& file, const std::string& what) {
  throw InputError("tokenizer " + file + ": " + what);
}

std::string type_of(const json& j) { return j.is_object() ? j.value("type", std::string("?")) : j.dump(); }

/// The items of a Sequence (`key` lists them), or the step itself.
std::vector<json> steps_of(const json& j, const char* key) {
  if (type_of(j) != "Sequence") return {j};
  const json& items = j.value(key, json::array());
  return std::vector<json>(items.begin(), items.end());
}

/// A string field of a step; `where` names the step in the error.
std::string text_of(const json& step, const char* key, const std::string& where, const std::string& file) {
  const json& v = step.value(key, json());
  if (!v.is_string()) bad(file, fmt::format("{} {} is {}, expected a string", where, key, v.dump()));
  return v.get<std::string>();
}

/// A Replace step's literal pattern ({"String": …}; a regex is refused).
std::string replace_pattern(const json& step, const std::string& where, const std::string& file) {
  const json& pattern = step.value("pattern", json());
  if (!pattern.is_object() || !pattern.contains("String") || !pattern["String"].is_string() ||
      pattern["String"].get<std::string>().empty())
    bad(file, where + " Replace's pattern is " + pattern.dump() +
                  "; Tessera reads a Replace of a non-empty string ({\"String\": \" \"}), not of a regex");
  return pattern["String"].get<std::string>();
}

/// One character: the step's `key` field, which must be a single character.
std::string one_character(const json& step, const char* key, const std::string& where, const std::string& file) {
  const std::string text = text_of(step, key, where, file);
  const auto [cp, size] = unicode::decode_utf8(text, 0);
  if (text.empty() || size != text.size())
    bad(file, fmt::format("{} {} is \"{}\", expected one character", where, key, text));
  return text;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t at = 0;
  for (size_t hit; (hit = s.find(from, at)) != std::string::npos; at = hit + from.size()) out.append(s, at, hit - at) += to;
  out.append(s, at, std::string::npos);
  s = std::move(out);
}

}  // namespace

std::vector<TextStep> read_normalizer(const json& normalizer, const std::string& file) {
  std::vector<TextStep> steps;
  if (normalizer.is_null()) return steps;
  for (const json& step : steps_of(normalizer, "normalizers")) {
    const std::string type = type_of(step);
    TextStep t;
    if (type == "Prepend") {
      t.kind = TextStep::Kind::prepend;
      t.text = text_of(step, "prepend", "normalizer Prepend's", file);
    } else if (type == "Replace") {
      const json& pattern = step.value("pattern", json());
      if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
        t.from = pattern["Regex"].get<std::string>();
        try {
          t.regex = std::make_shared<const SplitRegex>(t.from);
        } catch (const RegexError& e) {
          bad(file, "normalizer Replace's regex " + pattern.dump() + ": " + e.what());
        }
      } else {
        t.from = replace_pattern(step, "normalizer", file);
      }
      t.text = text_of(step, "content", "normalizer Replace's", file);
    } else if (type == "Strip") {
      t.kind = TextStep::Kind::strip;
      for (auto [key, flag] : {std::pair{"strip_left", &t.left}, {"strip_right", &t.right}}) {
        const json& v = step.value(key, json());
        if (!v.is_boolean())
          bad(file, fmt::format("normalizer Strip's {} is {}, expected true or false", key, v.dump()));
        *flag = v.get<bool>();
      }
    } else if (unicode::normal_form_from_name(type, t.form)) {
      t.kind = TextStep::Kind::normal_form;
    } else if (type == "StripAccents") {
      t.kind = TextStep::Kind::strip_accents;
    } else if (type == "Lowercase") {
      t.kind = TextStep::Kind::lowercase;
    } else if (type == "Precompiled") {
      t.kind = TextStep::Kind::precompiled;
      const json& map = step.value("precompiled_charsmap", json());
      if (!map.is_string())
        bad(file, "normalizer Precompiled's precompiled_charsmap is " + map.dump().substr(0, 80) +
                      ", expected base64 text");
      t.charsmap = std::make_shared<const PrecompiledCharsmap>(map.get<std::string>(), file);
    } else {
      bad(file, "SentencePiece-style tokenizer with normalizer " + type +
                    "; Tessera reads Prepend, Replace (Llama 2's \"▁\" before the text and for each space), Strip, "
                    "Precompiled (T5's, XLM-RoBERTa's), NFC, NFD, NFKC, NFKD, StripAccents and Lowercase (ALBERT's), "
                    "alone or in a Sequence, or none");
    }
    steps.push_back(std::move(t));
  }
  return steps;
}

Metaspace read_metaspace(const json& pre_tokenizer, const std::string& file) {
  Metaspace m;
  m.replacement = one_character(pre_tokenizer, "replacement", "pre_tokenizer Metaspace's", file);
  const json& scheme = pre_tokenizer.value("prepend_scheme", json());
  if (scheme.is_null()) {  // files written before prepend_scheme: add_prefix_space says always or never
    const json& add = pre_tokenizer.value("add_prefix_space", json(true));
    if (!add.is_boolean()) bad(file, "pre_tokenizer Metaspace's add_prefix_space is " + add.dump() + ", expected true or false");
    m.prepend = add.get<bool>() ? Metaspace::Prepend::always : Metaspace::Prepend::never;
  } else if (scheme == "always" || scheme == "first" || scheme == "never") {
    m.prepend = scheme == "always" ? Metaspace::Prepend::always
                : scheme == "first" ? Metaspace::Prepend::first
                                    : Metaspace::Prepend::never;
  } else {
    bad(file, "pre_tokenizer Metaspace's prepend_scheme is " + scheme.dump() + ", expected always, first or never");
  }
  const json& split = pre_tokenizer.value("split", json(true));
  if (!split.is_boolean()) bad(file, "pre_tokenizer Metaspace's split is " + split.dump() + ", expected true or false");
  m.split = split.get<bool>();
  return m;
}

std::vector<DecodeStep> read_decoder(const json& decoder, const std::string& file) {
  std::vector<DecodeStep> steps;
  if (decoder.is_null()) return steps;
  for (const json& step : steps_of(decoder, "decoders")) {
    const std::string type = type_of(step);
    DecodeStep d;
    if (type == "Replace") {
      d.kind = DecodeStep::Kind::replace;
      d.from = replace_pattern(step, "decoder", file);
      d.text = text_of(step, "content", "decoder Replace's", file);
    } else if (type == "ByteFallback") {
      d.kind = DecodeStep::Kind::byte_fallback;
    } else if (type == "Fuse") {
      d.kind = DecodeStep::Kind::fuse;
    } else if (type == "Strip") {
      d.kind = DecodeStep::Kind::strip;
      d.from = one_character(step, "content", "decoder Strip's", file);
      for (auto [key, value] : {std::pair{"start", &d.start}, {"stop", &d.stop}}) {
        const json& v = step.value(key, json());
        if (!v.is_number_integer() || v.get<int64_t>() < 0)
          bad(file, fmt::format("decoder Strip's {} is {}, expected an integer >= 0", key, v.dump()));
        *value = v.get<int64_t>();
      }
    } else if (type == "Metaspace") {
      const Metaspace m = read_metaspace(step, file);
      d.kind = DecodeStep::Kind::metaspace;
      d.from = m.replacement;
      d.strip_first = m.prepend != Metaspace::Prepend::never;
    } else {
      bad(file, "SentencePiece-style BPE with decoder " + type +
                    "; Tessera reads Replace, ByteFallback, Fuse, Strip and Metaspace, alone or in a Sequence, or none");
    }
    steps.push_back(std::move(d));
  }
  return steps;
}

std::string normalize(std::string_view text, const std::vector<TextStep>& steps) {
  std::string out(text);
  for (const TextStep& step : steps) {
    switch (step.kind) {
      case TextStep::Kind::prepend:
        if (!out.empty()) out = step.text + out;
        break;
      case TextStep::Kind::replace:
        if (!step.regex) {
          replace_all(out, step.from, step.text);
        } else if (!out.empty()) {  // Hugging Face's Replace finds no match in an empty text
          std::string replaced;
          size_t at = 0;
          for (const auto& [start, end] : step.regex->matches(out)) {
            replaced.append(out, at, start - at) += step.text;
            at = end;
          }
          out = std::move(replaced.append(out, at, std::string::npos));
        }
        break;
      case TextStep::Kind::strip: {  // Rust's char::is_whitespace: Unicode's White_Space
        size_t begin = 0, end = out.size();
        while (step.left && begin < end) {
          const auto [cp, n] = unicode::decode_utf8(out, begin);
          if (n == 0 || !unicode::is_space(cp)) break;
          begin += n;
        }
        while (step.right && end > begin) {
          size_t start = end - 1;  // the start of the character that ends at `end`
          while (start > begin && (static_cast<unsigned char>(out[start]) & 0xC0) == 0x80) --start;
          const auto [cp, n] = unicode::decode_utf8(out, start);
          if (n != end - start || !unicode::is_space(cp)) break;
          end = start;
        }
        out = out.substr(begin, end - begin);
        break;
      }
      case TextStep::Kind::precompiled:
        out = step.charsmap->normalize(out);
        break;
      case TextStep::Kind::normal_form:
        out = unicode::normalize(out, step.form);
        break;
      case TextStep::Kind::strip_accents:
        out = unicode::strip_marks(out);
        break;
      case TextStep::Kind::lowercase:
        out = bert::lowercase(out);
        break;
    }
  }
  return out;
}

std::vector<std::string_view> whitespace_split(std::string_view text) {
  return unicode::cut_words(text, [](uint32_t cp) {
    return unicode::is_space(cp) ? unicode::Cut::drop : unicode::Cut::none;
  });
}

std::vector<std::string> pre_tokenize(std::string_view text, const Metaspace& metaspace, bool first) {
  std::string s(text);
  replace_all(s, " ", metaspace.replacement);
  const bool starts = s.compare(0, metaspace.replacement.size(), metaspace.replacement) == 0;
  if (!starts && (metaspace.prepend == Metaspace::Prepend::always || (metaspace.prepend == Metaspace::Prepend::first && first)))
    s = metaspace.replacement + s;
  if (!metaspace.split) return {s};
  std::vector<std::string> pieces;  // a piece starts at each replacement (MergedWithNext)
  size_t from = 0;
  for (size_t at = s.find(metaspace.replacement, 1); at != std::string::npos; at = s.find(metaspace.replacement, at + 1)) {
    pieces.push_back(s.substr(from, at - from));
    from = at;
  }
  if (from < s.size()) pieces.push_back(s.substr(from));
  return pieces;
}

int byte_of_token(std::string_view token) {
  // Hugging Face's test: six bytes, "<0x", two characters that Rust's from_str_radix(…, 16) reads, ">".
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  const auto digit = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
  };
  const int hi = digit(token[3]), lo = digit(token[4]);
  if (token[3] == '+' && lo >= 0) return lo;  // from_str_radix takes a leading plus sign
  return hi >= 0 && lo >= 0 ? hi * 16 + lo : -1;
}

std::string decode(std::vector<std::string> tokens, const std::vector<DecodeStep>& steps) {
  if (steps.empty()) {  // no decoder: Hugging Face joins the tokens with spaces
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i > 0 ? " " : "") + tokens[i];
    return out;
  }
  for (const DecodeStep& step : steps) {
    switch (step.kind) {
      case DecodeStep::Kind::replace:
        for (std::string& t : tokens) replace_all(t, step.from, step.text);
        break;
      case DecodeStep::Kind::byte_fallback: {
        std::vector<std::string> out;
        std::string bytes;
        const auto flush = [&] {
          if (bytes.empty()) return;
          if (unicode::valid_utf8(bytes)) {
            out.push_back(bytes);
          } else {
            for (size_t k = 0; k < bytes.size(); ++k) out.emplace_back("\uFFFD");
          }
          bytes.clear();
        };
        for (std::string& t : tokens) {
          const int b = byte_of_token(t);
          if (b >= 0) {
            bytes += static_cast<char>(b);
            continue;
          }
          flush();
          out.push_back(std::move(t));
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case DecodeStep::Kind::fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens = {all};
        break;
      }
      case DecodeStep::Kind::strip:
        for (std::string& t : tokens) {
          size_t begin = 0, end = t.size();
          for (int64_t k = 0; k < step.start && t.compare(begin, step.from.size(), step.from) == 0; ++k)
            begin += step.from.size();
          for (int64_t k = 0; k < step.stop && end >= begin + step.from.size() &&
                              t.compare(end - step.from.size(), step.from.size(), step.from) == 0;
               ++k)
            end -= step.from.size();
          t = t.substr(begin, end - begin);
        }
        break;
      case DecodeStep::Kind::metaspace:  // the first token drops every replacement, the others make spaces of them
        for (size_t i = 0; i < tokens.size(); ++i) replace_all(tokens[i], step.from, i == 0 && step.strip_first ? "" : " ");
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace tessera::data::sentencepiece
