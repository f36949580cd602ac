"""Byte-level BPE tokenizers from Python (tessera.data.Tokenizer): training, encoding and decoding any text,
tokenizer.json written and read back, refusals; a WordPiece tokenizer (BERT's) read, encoding and decoding; a GPT trained on the tokens of the text dataset with a tokenizer,
generating text through it (the generate callback and Trainer.generate)."""
import json

import pytest
import torch

import tessera
from tessera.data import Tokenizer


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("".join(f"the quick brown fox {'jumps' if i % 7 == 0 else 'runs'} café\n" for i in range(300)))
    return str(path)


def test_trains_the_most_frequent_pairs_first_and_round_trips_any_text(tmp_path):
    tok = Tokenizer.train(["ababab abab"], vocab_size=300)
    assert tok.vocab_size == len(tok) == 258
    assert [tok.token_to_string(i) for i in (256, 257)] == ["ab", "abab"]
    assert tok.merges == [(tok.string_to_token("a"), tok.string_to_token("b")), (256, 256)]
    assert tok.encode("ababab abab") == [257, 256, tok.string_to_token("Ġ"), 257]
    for sample in ["", "naïve café 🙂", "x" * 1000, "  \n\t end "]:
        assert tok.decode(tok.encode(sample)) == sample
    assert tok.decode_bytes(tok.encode(b"\xff\xfe ok")) == b"\xff\xfe ok"
    assert tok.decode(tok.encode(b"\xff ok")) == "\ufffd ok"
    path = tmp_path / "tok.json"
    tok.save(str(path))
    doc = json.loads(path.read_text())
    assert doc["model"]["type"] == "BPE" and doc["model"]["merges"] == ["a b", "ab ab"]
    back = Tokenizer.load(str(path))
    assert back.fingerprint() == tok.fingerprint() and back.to_json() == tok.to_json()
    assert "byte-level BPE, 258 tokens (0 special), 2 merges" in repr(back)


def test_special_tokens_are_matched_as_text_and_can_be_skipped():
    tok = Tokenizer.train(["xx<|end|>xx"], vocab_size=300, special_tokens=["<|end|>"])
    assert tok.special_tokens == ["<|end|>"] and tok.is_special(0) and not tok.is_special(1)
    ids = tok.encode("xx<|end|>q")
    assert ids[1] == 0 and tok.decode(ids) == "xx<|end|>q"
    assert tok.decode(ids, skip_special_tokens=True) == "xxq"


def test_added_tokens_flags_and_the_post_processors_tokens(tmp_path):
    doc = json.loads(Tokenizer.train(["xx<s>xx"], vocab_size=300, special_tokens=["<s>", "</s>"]).to_json())
    flags = dict(single_word=False, lstrip=False, rstrip=False, normalized=False, special=False)
    doc["added_tokens"].append(dict(flags, id=len(doc["model"]["vocab"]), content="<mask>", lstrip=True, special=True))
    doc["post_processor"] = {"type": "RobertaProcessing", "sep": ["</s>", 1], "cls": ["<s>", 0]}
    path = tmp_path / "roberta.json"
    path.write_text(json.dumps(doc))
    tok = Tokenizer.load(str(path))
    mask = tok.string_to_token("<mask>")
    assert tok.added_tokens[-1] == dict(flags, id=mask, content="<mask>", lstrip=True, special=True)
    assert tok.prefix_ids == [0] and tok.suffix_ids == [1]
    x = tok.string_to_token("x")
    assert tok.encode("x  <mask>") == [x, mask]  # lstrip: the mask takes the spaces before it
    assert tok.encode("x", add_special_tokens=True) == [0, x, 1]
    assert tok.decode([0, x, mask, 1], skip_special_tokens=True) == "x"
    assert "encode(text, true) gives <s> … </s>" in repr(tok)
    templated = Tokenizer.train(["xx"], vocab_size=300, special_tokens=["<|endoftext|>"],
                                single_template="$A <|endoftext|>")
    assert templated.suffix_ids == [0] and templated.encode("xx", add_special_tokens=True)[-1] == 0
    with pytest.raises(tessera.InputError, match="neither \\$A nor one of the special tokens"):
        Tokenizer.train(["xx"], vocab_size=300, single_template="$A <eos>")


def test_qwen2_o200k_and_a_regex_of_ones_own_train_save_and_read_back(tmp_path):
    texts = ["HTTPServer don't DON'T 1234567 cafe\u0301 caf\u00e9 x/y " * 20]
    qwen2 = Tokenizer.train(texts, vocab_size=300, pattern="qwen2", normalizer="nfc")
    assert qwen2.pattern == "qwen2" and qwen2.normalizer == "NFC"
    assert qwen2.encode("cafe\u0301") == qwen2.encode("caf\u00e9")
    o200k = Tokenizer.train(texts, vocab_size=300, pattern="o200k")
    assert o200k.pattern == "o200k" and o200k.normalizer == ""
    own = Tokenizer.train(texts, vocab_size=300, split_regex=r"\p{L}+|\p{N}|\s+|.")
    assert own.pattern == "custom" and '"Split"' in own.pre_tokenizer_json
    for tok in (qwen2, o200k, own):
        tok.save(str(tmp_path / "t.json"))
        back = Tokenizer.load(str(tmp_path / "t.json"))
        assert back.fingerprint() == tok.fingerprint() and back.encode(texts[0]) == tok.encode(texts[0])
    with pytest.raises(tessera.InputError, match=r"at character 0: the anchor \^"):
        Tokenizer.train(texts, vocab_size=300, split_regex="^a")


def test_llama3s_pattern_trains_saves_and_reads_back(tmp_path):
    texts = ["In 2024, 12345 people wrote 'hello' 3 times.\n\nThey'RE here."] * 20
    tok = Tokenizer.train(texts, vocab_size=300, pattern="llama3")
    assert tok.pattern == "llama3" and not tok.ignore_merges
    assert Tokenizer.train(texts, vocab_size=300).pattern == "gpt2"
    assert all(not (t.isdigit() and len(t) > 3) for t in (tok.token_to_string(i) for i in range(tok.vocab_size)))
    path = tmp_path / "llama3.json"
    tok.save(str(path))
    doc = json.loads(path.read_text())
    assert [p["type"] for p in doc["pre_tokenizer"]["pretokenizers"]] == ["Split", "ByteLevel"]
    doc["model"]["ignore_merges"] = True
    path.write_text(json.dumps(doc))
    back = Tokenizer.load(str(path))
    assert back.pattern == "llama3" and back.ignore_merges
    assert back.decode(back.encode(texts[0])) == texts[0]
    assert "Llama 3's pattern" in repr(back)
    with pytest.raises(tessera.InputError, match="pattern"):
        Tokenizer.train(texts, vocab_size=300, pattern="gpt4")


def test_a_sentencepiece_style_bpe_falls_back_to_bytes_and_decodes_as_llama2(tmp_path):
    vocab = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "a", "b", "\u2581a", "\u2581ab"]
    replace = lambda a, b: {"type": "Replace", "pattern": {"String": a}, "content": b}
    doc = {"added_tokens": [{"id": i, "content": t, "special": True} for i, t in enumerate(vocab[:3])],
           "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                              replace(" ", "\u2581")]},
           "pre_tokenizer": None,
           "decoder": {"type": "Sequence", "decoders": [replace("\u2581", " "), {"type": "ByteFallback"},
                                                        {"type": "Fuse"},
                                                        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
           "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                       {"Sequence": {"id": "A", "type_id": 0}}],
                              "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
           "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
                     "vocab": {t: i for i, t in enumerate(vocab)}, "merges": ["\u2581 a", "\u2581a b"]}}
    path = tmp_path / "llama2.json"
    path.write_text(json.dumps(doc))
    tok = Tokenizer.load(str(path))
    assert tok.model == "BPE" and not tok.byte_level and tok.vocab_size == 264
    assert tok.encode("ab b") == [263, 259, 261]
    assert tok.encode("ab\u00e9", add_special_tokens=True) == [1, 263, 3 + 0xC3, 3 + 0xA9]
    assert tok.decode(tok.encode("ab b\u00e9 x", add_special_tokens=True), skip_special_tokens=True) == "ab b\u00e9 x"
    assert tok.decode([3 + 0xC3]) == "\ufffd"
    assert "SentencePiece-style BPE, 264 tokens (3 special), 2 merges, byte fallback" in repr(tok)
    assert Tokenizer.load(str(path)).fingerprint() == tok.fingerprint()
    assert Tokenizer.train(["xx"], vocab_size=300).byte_level


def test_a_unigram_tokenizer_cuts_words_into_the_best_scoring_pieces_as_t5s(tmp_path):
    # T5's steps as transformers converts them (without the character map): Strip, Replace " {2,}", Metaspace. The
    # ids are Hugging Face tokenizers 0.22.2's for the same file.
    vocab = [["<unk>", 0.0], ["</s>", 0.0], ["\u2581", -3.0], ["a", -2.0], ["b", -2.0], ["\u2581ab", -1.0],
             ["ab", -1.5], ["<0xC3>", -4.0], ["<0xA9>", -4.0]]
    meta = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    doc = {"added_tokens": [{"id": i, "content": t, "special": True} for i, (t, _) in enumerate(vocab[:2])],
           "normalizer": {"type": "Sequence", "normalizers": [
               {"type": "Strip", "strip_left": False, "strip_right": True},
               {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "\u2581"}]},
           "pre_tokenizer": meta, "decoder": meta,
           "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}},
                                                                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                              "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
           "model": {"type": "Unigram", "unk_id": 0, "vocab": vocab, "byte_fallback": True}}
    path = tmp_path / "t5.json"
    path.write_text(json.dumps(doc))
    tok = Tokenizer.load(str(path))
    assert tok.model == "Unigram" and not tok.byte_level and tok.vocab_size == 9
    assert tok.encode("ab  ab ", add_special_tokens=True) == [5, 5, 1]
    assert tok.encode("ab\u00e9 ba") == [5, 7, 8, 2, 4, 3]  # é: its bytes' tokens; "ba": no piece holds it whole
    assert tok.encode("x") == [2, 0]
    assert tok.decode([5, 7, 8, 2, 4, 3, 1], skip_special_tokens=True) == "ab<0xC3><0xA9> ba"  # no ByteFallback step
    assert "Unigram, 9 tokens (2 special), byte fallback, unknown <unk>" in repr(tok)
    assert json.loads(tok.to_json())["model"] == doc["model"]


def test_a_wordpiece_tokenizer_lowercases_cuts_words_into_pieces_and_decodes_as_bert(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "hello", "world", ",", "!"]
    doc = {
        "added_tokens": [{"id": i, "content": t, "special": True} for i, t in enumerate(vocab[:5])],
        "normalizer": {"type": "BertNormalizer", "lowercase": True, "strip_accents": None},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {t: i for i, t in enumerate(vocab)}},
    }
    path = tmp_path / "bert.json"
    path.write_text(json.dumps(doc))
    tok = Tokenizer.load(str(path))
    assert tok.model == "WordPiece" and tok.vocab_size == 12 and tok.merges == []
    ids = tok.encode("UnAffable Hélló,WORLD! xyz", add_special_tokens=True)
    assert ids == [2, 5, 6, 7, 8, 10, 9, 11, 1, 3]
    assert tok.decode(ids) == "[CLS] unaffable hello, world! [UNK] [SEP]"
    assert tok.decode(ids, skip_special_tokens=True) == "unaffable hello, world!"
    assert tok.token_to_string(6) == "##aff" and tok.string_to_token("##able") == 7
    assert "WordPiece, 12 tokens (5 special), lowercased, accents stripped" in repr(tok)
    tok.save(str(tmp_path / "again.json"))
    assert Tokenizer.load(str(tmp_path / "again.json")).fingerprint() == tok.fingerprint()
    doc["pre_tokenizer"] = {"type": "Whitespace"}
    path.write_text(json.dumps(doc))
    with pytest.raises(tessera.InputError, match="bert.json: WordPiece with pre_tokenizer Whitespace"):
        Tokenizer.load(str(path))


def test_refusals_say_what_and_where(tmp_path):
    with pytest.raises(tessera.InputError, match="vocab_size 100 is below the 0 special tokens"):
        Tokenizer.train(["x"], vocab_size=100)
    with pytest.raises(tessera.InputError, match="does not exist"):
        Tokenizer.load(str(tmp_path / "missing.json"))
    bad = tmp_path / "wordlevel.json"
    doc = json.loads(Tokenizer.train([""], vocab_size=256).to_json())
    doc["model"]["type"] = "WordLevel"
    bad.write_text(json.dumps(doc))
    with pytest.raises(tessera.InputError, match=r"wordlevel.json: model type WordLevel; Tessera reads BPE \(byte-level "
                                                 r"or SentencePiece-style\), Unigram and WordPiece tokenizers"):
        Tokenizer.load(str(bad))
    with pytest.raises(tessera.InputError, match="outside the vocabulary"):
        Tokenizer.train([""], vocab_size=256).decode([256])


def test_a_gpt_trains_on_bpe_tokens_and_generates_text_through_them(text, tmp_path, capfd):
    tok_path = str(tmp_path / "tok.json")
    tok = Tokenizer.train([open(text).read()], vocab_size=300)
    tok.save(tok_path)
    data = {"text": {"path": text, "seq_length": 8, "tokenizer": tok_path}}
    trainer = tessera.Trainer(
        model={"gpt": {"d_model": 16, "n_layers": 2, "n_heads": 2}},
        train_data={"dataset": data, "loader": {"batch_size": 8}},
        eval_data={"dataset": {"text": dict(data["text"], split="test")}, "loader": {"batch_size": 8, "shuffle": False},
                   "metrics": ["accuracy", "perplexity"]},
        optimizer={"adamw": {"lr": 0.01}}, max_duration="30ba", seed=0, threads=1,
        callbacks=[{"generate": {"prompts": ["the quick"], "interval": "30ba", "max_new_tokens": 4,
                                 "tokenizer": tok_path}}])
    assert 256 < tok.vocab_size <= 300 and trainer.model.num_classes == tok.vocab_size
    trainer.fit()
    shown = "".join(capfd.readouterr())
    assert 'generate @ 0ep 30ba: "the quick" -> "' in shown
    greedy = trainer.generate("the quick", tokenizer=tok, max_new_tokens=3, temperature=0)
    assert isinstance(greedy, str) and greedy.startswith("the quick") and len(greedy) > len("the quick")
    # eos_text: the text of one token of the tokenizer (here its last merge); a row stops right after it.
    last = tok.vocab_size - 1
    prompt = torch.tensor(tok.encode("the quick"))
    ids = trainer.generate(prompt, tokenizer=tok, max_new_tokens=12, temperature=0, eos_text=tok.decode([last]))
    new = ids[len(prompt):].tolist()
    assert last not in new or new.index(last) == len(new) - 1
    with pytest.raises(tessera.InputError, match=r'eos_text: "\\x00\\x01" is 2 tokens in the tokenizer'):
        trainer.generate("the", tokenizer=tok, eos_text="\x00\x01")
    with pytest.raises(tessera.InputError, match="are both given"):
        trainer.generate("the", tokenizer=tok, eos_text=tok.decode([last]), eos_token=last)
    # Without the tokenizer the callback refuses the model: its vocabulary is not the 256 bytes.
    with pytest.raises(tessera.InputError, match=f"the model's vocabulary has {tok.vocab_size} tokens"):
        tessera.Trainer(
            model={"gpt": {"d_model": 16, "n_layers": 2, "n_heads": 2}},
            train_data={"dataset": data, "loader": {"batch_size": 8}},
            optimizer={"adamw": {"lr": 0.01}}, max_duration="2ba", seed=0, threads=1,
            callbacks=[{"generate": {"prompts": ["the"]}}]).fit()
