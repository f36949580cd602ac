"""Hugging Face `tokenizers` side of tests/core/tokenizer_interop_test.cpp (run with the streaming peers' venv,
which pins tokenizers; scripts/install-peers.sh streaming).

    tokenizer_interop.py train CORPUS VOCAB_SIZE MIN_FREQUENCY OUT.json [SPECIAL ...]
        trains byte-level BPE (BpeTrainer, all 256 bytes as the initial alphabet) on CORPUS's text, writes OUT.json
    tokenizer_interop.py encode TOKENIZER.json TEXT OUT.json
        writes {"ids": [...], "decoded_ok": bool}: TEXT's ids, and whether decoding them gives TEXT back
    tokenizer_interop.py decode TOKENIZER.json IDS.json OUT.txt
        writes the text of the ids in IDS.json (a JSON list)
    tokenizer_interop.py added CORPUS OUT_DIR
        trains a small byte-level BPE on CORPUS with special tokens <s> </s> <pad>, adds tokens with each of the
        added-token flags, and writes it with RoBERTa's post-processor (OUT_DIR/roberta.json) and with a template
        "<s> $A </s> <pad>" in a Sequence after ByteLevel (OUT_DIR/template.json)
    tokenizer_interop.py wordpiece CORPUS OUT_DIR
        trains WordPiece tokenizers (WordPieceTrainer, 700 tokens, special tokens [PAD] [UNK] [CLS] [SEP] [MASK])
        on CORPUS as BERT's are made: BertNormalizer, BertPreTokenizer, the WordPiece decoder; uncased with
        TemplateProcessing "[CLS] $A [SEP]" and two added tokens, one normalized (OUT_DIR/uncased.json), and cased
        (lowercase false) with BertProcessing (OUT_DIR/cased.json)
    tokenizer_interop.py llama3 CORPUS OUT_DIR
        trains byte-level BPE (BpeTrainer, 1200 tokens, special tokens <|begin_of_text|> <|end_of_text|>) on CORPUS
        with Llama 3's pre-tokenizer (a Split by its pattern, then ByteLevel with use_regex false) and its
        post-processor (ByteLevel, then TemplateProcessing "<|begin_of_text|> $A"); writes it with ignore_merges
        false (OUT_DIR/llama3-merges.json) and true, as Llama 3's (OUT_DIR/llama3.json), and both again with the
        merges in reverse order (OUT_DIR/llama3-reversed-merges.json, OUT_DIR/llama3-reversed.json)
    tokenizer_interop.py sentencepiece CORPUS OUT_DIR
        trains BPE over characters on CORPUS as Llama 2's tokenizer is made (normalizer Prepend "▁" then Replace
        " " by "▁", no pre-tokenizer, byte_fallback with the 256 <0xXX> tokens in the vocabulary, unk_token <unk>
        fused, decoder Replace, ByteFallback, Fuse, Strip; 800 tokens, 80 characters, template "<s> $A"):
        OUT_DIR/legacy.json; and variants of it (Metaspace, unknown tokens, reversed merges, added tokens, one of
        them normalized and in the vocabulary): OUT_DIR/<name>.json for each name printed, one per line
    tokenizer_interop.py pieces PATTERN TEXTS.json OUT.json
        writes the lengths in bytes of the pieces Hugging Face's pre-tokenizer of PATTERN (gpt2, llama3, qwen2, o200k)
        cuts each text of the JSON list into
    tokenizer_interop.py split CASES.json OUT.json
        CASES.json: {"texts": [...], "cases": [[[regex, behavior, invert], ...], ...]}: for each case (a Sequence of
        Splits), for each text, the [start, end) byte offsets of the pieces Hugging Face's Splits cut it into
    tokenizer_interop.py normalize TEXTS.json OUT.json
        writes {"nfc": [...], "nfd": [...], "nfkc": ..., "nfkd": ..., "strip_accents": ..., "lowercase": ...}: each
        text of the JSON list under Hugging Face's NFC, NFD, NFKC, NFKD, StripAccents and Lowercase normalizers
    tokenizer_interop.py qwen2 CORPUS OUT_DIR
        trains byte-level BPE (BpeTrainer, 1200 tokens, special token <|endoftext|>) on CORPUS as Qwen2's is made (NFC
        normalizer, a Split by Qwen2's pattern, ByteLevel without one): OUT_DIR/qwen2.json; the same with GPT-4o's
        pattern and no normalizer (OUT_DIR/o200k.json), and with DeepSeek V3's three Splits (OUT_DIR/deepseek.json)
    tokenizer_interop.py word-chars TOKENIZER_OUT.json OUT.json
        writes a byte-level BPE (bytes only) with the added token "word" (single_word), and the code points before
        which Hugging Face does not match it: its word characters (\\w)
    tokenizer_interop.py bert-vocab VOCAB.txt LOWERCASE OUT.json
        writes the tokenizer.json of Hugging Face's BertWordPieceTokenizer over BERT's vocab.txt (LOWERCASE: 1 or 0)
    tokenizer_interop.py unigram CORPUS OUT_DIR
        trains SentencePiece Unigram models on CORPUS's lines (PyPI's sentencepiece: <= 1000 pieces, nmt_nfkc) and
        converts them as transformers does for T5 (OUT_DIR/t5.json: prepend scheme first, 3 extra ids;
        OUT_DIR/t5-legacy.json), XLM-RoBERTa (OUT_DIR/xlmr.json), with byte fallback (OUT_DIR/t5-byte-fallback.json),
        with nmt_nfkc_cf (OUT_DIR/t5-case-folded.json), ALBERT (OUT_DIR/albert.json: lowercased, accents stripped),
        XLNet (OUT_DIR/xlnet.json), transformers' generic SpmConverter (OUT_DIR/spm-generic.json, of
        OUT_DIR/nfkc.model), and T5's as older transformers wrote it (OUT_DIR/t5-whitespace-split.json:
        WhitespaceSplit then Metaspace); and a Unigram trained by Hugging Face's UnigramTrainer
        with Metaspace and no normalizer (OUT_DIR/hf-trained.json); prints the names, one per line
    tokenizer_interop.py precompiled CORPUS TEXTS.json OUT.json
        writes {"charsmaps": {name: base64}, "normalized": {name: [...]}}: the precompiled_charsmap of SentencePiece
        models trained on CORPUS with nmt_nfkc, nmt_nfkc_cf and rules of this test's own (a to b, U+0600 to P,
        CR to R, "cd" to Z), and each text of the JSON list under Hugging Face's Precompiled normalizer of each
    tokenizer_interop.py encode-all TOKENIZER.json TEXTS.json OUT.json
        writes, for each text of the JSON list, {"plain": ids, "with_special": ids with the post-processor's tokens,
        "skipped": the text of the latter decoded with skip_special_tokens}
"""
import json
import sys

from tokenizers import (AddedToken, BertWordPieceTokenizer, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")


QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n/]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"])
# DeepSeek V3's pre-tokenizer: three Splits, one after the other (then ByteLevel without a pattern).
DEEPSEEK_PATTERNS = [r"\p{N}{1,3}", "[一-龥\u3040-ゟ゠-ヿ]+",
                     r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|"
                     r"\s*[\r\n]+|\s+(?!\S)|\s+"]
PATTERNS = {"llama3": [LLAMA3_PATTERN], "qwen2": [QWEN2_PATTERN], "o200k": [O200K_PATTERN],
            "deepseek": DEEPSEEK_PATTERNS}


def pre_tokenizer(pattern):
    if pattern == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False)
                                    for p in PATTERNS[pattern]] +
                                   [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def _byte_level_chars():
    """GPT-2's byte-level character of each byte, by byte (the alphabet of ByteLevel.alphabet(), in byte order)."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    out, extra = [], 256
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(extra))
            extra += 1
    return out


def sentencepiece(corpus, out_dir):
    """Writes Llama 2-style BPE over characters trained on `corpus` (legacy.json) and variants of it; returns their
    names."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]  # in the vocabulary, after the three special tokens
    trainer = trainers.BpeTrainer(vocab_size=800, min_frequency=2, show_progress=False, limit_alphabet=80,
                                  special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens)
    tok.train_from_iterator([corpus], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    base = json.loads(tok.to_str())
    base["added_tokens"] = [a for a in base["added_tokens"] if not a["content"].startswith("<0x")]
    # Trained on words (Metaspace's split), as SentencePiece trains, then written as Llama 2's: no token holds "▁"
    # after another character, and Tessera encodes such a text word by word.
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator([corpus], trainer)
    words = json.loads(tok.to_str())
    words["added_tokens"] = [a for a in words["added_tokens"] if not a["content"].startswith("<0x")]
    words.update(pre_tokenizer=None, normalizer=base["normalizer"])
    meta = lambda scheme, split: {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme,
                                  "split": split}
    old_meta = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}
    flag = dict(single_word=False, lstrip=False, rstrip=False)
    word = min((t for t in base["model"]["vocab"] if t.isascii() and t.isalpha()), key=lambda t: (-len(t), t))
    variants = {
        "legacy": lambda d: None,
        "legacy-words": lambda d: d.update(words),
        "metaspace-first": lambda d: d.update(normalizer=None, pre_tokenizer=meta("first", False)),
        "metaspace-always-split": lambda d: d.update(normalizer=None, pre_tokenizer=meta("always", True),
                                                     decoder=meta("always", True)),
        "metaspace-never-split": lambda d: d.update(normalizer=None, pre_tokenizer=meta("never", True),
                                                    decoder=meta("never", True)),
        "metaspace-add-prefix-space": lambda d: d.update(normalizer=None, pre_tokenizer=old_meta, decoder=old_meta),
        "unk-fused": lambda d: d["model"].update(byte_fallback=False),
        "unk-each": lambda d: d["model"].update(byte_fallback=False, fuse_unk=False),
        "no-unk": lambda d: d["model"].update(byte_fallback=False, unk_token=None),
        "no-decoder": lambda d: d.update(decoder=None),
        # Words (Metaspace's split) whose merges, reversed, no longer make the vocabulary's tokens: ignore_merges
        # then matters.
        "reversed-merges": lambda d: (d["model"]["merges"].reverse(),
                                      d.update(normalizer=None, pre_tokenizer=meta("first", True))),
        "reversed-ignore-merges": lambda d: (d["model"]["merges"].reverse(), d["model"].update(ignore_merges=True),
                                             d.update(normalizer=None, pre_tokenizer=meta("first", True))),
        "added": lambda d: d["added_tokens"].extend([
            dict(flag, id=d["model"]["vocab"][word], content=word, normalized=True, special=False),
            dict(flag, id=len(d["model"]["vocab"]), content="<mask>", lstrip=True, normalized=False, special=True)]),
    }
    for name, change in variants.items():
        doc = json.loads(json.dumps(base))
        change(doc)
        with open(f"{out_dir}/{name}.json", "w") as f:
            json.dump(doc, f, ensure_ascii=False)
    return list(variants)


def spm_unigram(corpus, **options):
    """The bytes of a SentencePiece Unigram model (at most 1000 pieces) trained on the lines of `corpus`."""
    import io
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([line for line in corpus.splitlines() if line.strip()]),
                                   model_writer=model, model_type="unigram", vocab_size=1000, hard_vocab_limit=False,
                                   minloglevel=2, **options)
    return model.getvalue()


def charsmap(model):
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    return proto.normalizer_spec.precompiled_charsmap


def unigram(corpus, out_dir):
    """Writes Unigram tokenizers as transformers converts SentencePiece's (T5's, XLM-RoBERTa's) and as Hugging Face
    trains them; returns their names."""
    import warnings
    warnings.filterwarnings("ignore")
    from transformers import AlbertTokenizer, T5Tokenizer, XLMRobertaTokenizer, XLNetTokenizer
    from transformers.convert_slow_tokenizer import SpmConverter, convert_slow_tokenizer
    files = {}
    # ALBERT's and XLNet's special tokens are pieces of their models, as in theirs.
    for name, options in [("nfkc", {"control_symbols": ["[CLS]", "[SEP]", "<sep>", "<cls>"]}),
                          ("bytes", {"byte_fallback": True}),
                          ("nfkc-cf", {"normalization_rule_name": "nmt_nfkc_cf"})]:
        files[name] = f"{out_dir}/{name}.model"
        with open(files[name], "wb") as f:
            f.write(spm_unigram(corpus, **options))
    names = []

    def save(name, slow, change=None):
        doc = json.loads(convert_slow_tokenizer(slow).to_str())
        if change is not None:
            change(doc)
        with open(f"{out_dir}/{name}.json", "w") as f:
            json.dump(doc, f, ensure_ascii=False)
        names.append(name)

    save("t5", T5Tokenizer(files["nfkc"], extra_ids=3, legacy=False))
    save("t5-legacy", T5Tokenizer(files["nfkc"], extra_ids=0, legacy=True))
    save("xlmr", XLMRobertaTokenizer(files["nfkc"]))
    save("t5-byte-fallback", T5Tokenizer(files["bytes"], extra_ids=0, legacy=False),
         lambda d: d["model"].update(byte_fallback=True))
    save("t5-case-folded", T5Tokenizer(files["nfkc-cf"], extra_ids=0, legacy=False))
    save("albert", AlbertTokenizer(files["nfkc"]))  # NFKD, StripAccents, Lowercase before the character map
    save("xlnet", XLNetTokenizer(files["nfkc"]))
    # As transformers 4.0 to 4.2 wrote T5's: WhitespaceSplit, then Metaspace with add_prefix_space (published files).
    old_meta = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}
    # transformers' generic conversion of a SentencePiece model (what Tessera makes of OUT_DIR/nfkc.model itself).
    generic = SpmConverter(T5Tokenizer(files["nfkc"], extra_ids=0, legacy=True)).converted()
    with open(f"{out_dir}/spm-generic.json", "w") as f:
        f.write(generic.to_str())
    names.append("spm-generic")
    save("t5-whitespace-split", T5Tokenizer(files["nfkc"], extra_ids=0, legacy=True), lambda d: d.update(
        pre_tokenizer={"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, old_meta]},
        decoder=old_meta))
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([corpus], trainers.UnigramTrainer(vocab_size=600, show_progress=False,
                                                              special_tokens=["<unk>", "<s>"], unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(f"{out_dir}/hf-trained.json")
    names.append("hf-trained")
    return names


def main(argv):
    what = argv[1]
    if what == "train":
        corpus, vocab_size, min_frequency, out = argv[2], int(argv[3]), int(argv[4]), argv[5]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=argv[6:])
        tok.train_from_iterator([read_text(corpus)], trainer)
        tok.save(out)
    elif what == "encode":
        tok = Tokenizer.from_file(argv[2])
        text = read_text(argv[3])
        ids = tok.encode(text, add_special_tokens=False).ids
        with open(argv[4], "w") as f:
            json.dump({"ids": ids, "decoded_ok": tok.decode(ids, skip_special_tokens=False) == text}, f)
    elif what == "decode":
        tok = Tokenizer.from_file(argv[2])
        with open(argv[3]) as f:
            ids = json.load(f)
        with open(argv[4], "wb") as f:
            f.write(tok.decode(ids, skip_special_tokens=False).encode("utf-8"))
    elif what == "added":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=500, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=["<s>", "</s>", "<pad>"])
        tok.train_from_iterator([read_text(argv[2])], trainer)
        tok.add_tokens([AddedToken("<mask>", lstrip=True, normalized=False, special=True),
                        AddedToken("word", single_word=True),
                        AddedToken("ing", normalized=True),  # in the vocabulary already: merges make it too
                        AddedToken("<r>", rstrip=True, normalized=False),
                        AddedToken("é x", normalized=False),
                        AddedToken("<mask>x", normalized=True)])
        tok.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))
        tok.save(argv[3] + "/roberta.json")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(),
            processors.TemplateProcessing(single="<s> $A </s> <pad>", pair="<s> $A </s> $B:1 </s>:1",
                                          special_tokens=[("<s>", 0), ("</s>", 1), ("<pad>", 2)])])
        tok.save(argv[3] + "/template.json")
    elif what == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        for name, lowercase in (("uncased", True), ("cased", False)):
            tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
            tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tok.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(vocab_size=700, show_progress=False, special_tokens=specials)
            tok.train_from_iterator([read_text(argv[2])], trainer)
            if lowercase:
                tok.add_tokens([AddedToken("Héllo", normalized=True), AddedToken("<keep>", normalized=False)])
                tok.post_processor = processors.TemplateProcessing(
                    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                    special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
            else:
                tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                               ("[CLS]", tok.token_to_id("[CLS]")))
            tok.save(argv[3] + "/" + name + ".json")
    elif what == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizer("llama3")
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=1200, min_frequency=2, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=specials)
        tok.train_from_iterator([read_text(argv[2])], trainer)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                          special_tokens=[("<|begin_of_text|>", 0)])])
        tok.save(argv[3] + "/llama3-merges.json")
        with open(argv[3] + "/llama3-merges.json") as f:
            doc = json.load(f)
        doc["model"]["ignore_merges"] = True
        with open(argv[3] + "/llama3.json", "w") as f:
            json.dump(doc, f, ensure_ascii=False)
        # Merges in reverse order, as a vocabulary not learnt in the merges' order (tiktoken's, converted) has them:
        # then many words of the vocabulary are not what their merges make, and ignore_merges matters.
        doc["model"]["merges"].reverse()
        with open(argv[3] + "/llama3-reversed.json", "w") as f:
            json.dump(doc, f, ensure_ascii=False)
        doc["model"]["ignore_merges"] = False
        with open(argv[3] + "/llama3-reversed-merges.json", "w") as f:
            json.dump(doc, f, ensure_ascii=False)
    elif what == "sentencepiece":
        for name in sentencepiece(read_text(argv[2]), argv[3]):
            print(name)
    elif what == "pieces":
        split = pre_tokenizer(argv[2])
        with open(argv[3]) as f:
            texts = json.load(f)
        pieces = [[piece for piece, _ in split.pre_tokenize_str(text)] for text in texts]
        pieces = [[len(piece) for piece in one] for one in pieces]  # ByteLevel spells each byte as one character
        with open(argv[4], "w") as f:
            json.dump(pieces, f)
    elif what == "split":
        with open(argv[2]) as f:
            doc = json.load(f)
        starts = []  # per text, the byte offset of each character (and of its end)
        for text in doc["texts"]:
            offsets, at = [0], 0
            for c in text:
                at += len(c.encode("utf-8"))
                offsets.append(at)
            starts.append(offsets)
        out = []
        for case in doc["cases"]:
            split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior=behavior, invert=invert)
                                             for regex, behavior, invert in case])
            out.append([[[offsets[s], offsets[e]] for _, (s, e) in split.pre_tokenize_str(text)]
                        for text, offsets in zip(doc["texts"], starts)])
        with open(argv[3], "w") as f:
            json.dump(out, f)
    elif what == "normalize":
        with open(argv[2]) as f:
            texts = json.load(f)
        steps = {"nfc": normalizers.NFC(), "nfd": normalizers.NFD(), "nfkc": normalizers.NFKC(),
                 "nfkd": normalizers.NFKD(), "strip_accents": normalizers.StripAccents(),
                 "lowercase": normalizers.Lowercase()}
        with open(argv[3], "w") as f:
            json.dump({name: [step.normalize_str(t) for t in texts] for name, step in steps.items()}, f,
                      ensure_ascii=False)
    elif what == "qwen2":
        for name, normalizer in [("qwen2", normalizers.NFC()), ("o200k", None), ("deepseek", None)]:
            tok = Tokenizer(models.BPE())
            if normalizer is not None:
                tok.normalizer = normalizer
            tok.pre_tokenizer = pre_tokenizer(name)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=1200, min_frequency=2, show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                          special_tokens=["<|endoftext|>"])
            tok.train_from_iterator([read_text(argv[2])], trainer)
            tok.save(argv[3] + "/" + name + ".json")
    elif what == "word-chars":
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(_byte_level_chars())}, merges=[]))
        tok.pre_tokenizer = pre_tokenizer("gpt2")
        tok.decoder = decoders.ByteLevel()
        tok.add_tokens([AddedToken("word", single_word=True, normalized=False)])
        tok.save(argv[2])
        word = tok.token_to_id("word")
        code_points = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
        encodings = tok.encode_batch([chr(cp) + "word" for cp in code_points], add_special_tokens=False)
        with open(argv[3], "w") as f:
            json.dump([cp for cp, e in zip(code_points, encodings) if word not in e.ids], f)
    elif what == "bert-vocab":
        BertWordPieceTokenizer(argv[2], lowercase=argv[3] == "1").save(argv[4])
    elif what == "unigram":
        for name in unigram(read_text(argv[2]), argv[3]):
            print(name)
    elif what == "precompiled":
        import base64
        import os
        import tempfile
        corpus = read_text(argv[2])
        with tempfile.TemporaryDirectory() as tmp:
            rules = os.path.join(tmp, "rules.tsv")
            with open(rules, "w") as f:
                f.write("61\t62\n600\t50\nD\t52\n63 64\t5A\n")
            maps = {"nmt_nfkc": charsmap(spm_unigram(corpus)),
                    "nmt_nfkc_cf": charsmap(spm_unigram(corpus, normalization_rule_name="nmt_nfkc_cf")),
                    "rules": charsmap(spm_unigram(corpus, normalization_rule_tsv=rules))}
        with open(argv[3]) as f:
            texts = json.load(f)
        out = {"charsmaps": {name: base64.b64encode(m).decode() for name, m in maps.items()}, "normalized": {}}
        for name, m in maps.items():
            precompiled = normalizers.Precompiled(m)
            out["normalized"][name] = [precompiled.normalize_str(t) for t in texts]
        with open(argv[4], "w") as f:
            json.dump(out, f, ensure_ascii=False)
    elif what == "encode-all":
        tok = Tokenizer.from_file(argv[2])
        with open(argv[3]) as f:
            texts = json.load(f)
        out = []
        for text in texts:
            with_special = tok.encode(text).ids
            out.append({"plain": tok.encode(text, add_special_tokens=False).ids, "with_special": with_special,
                        "skipped": tok.decode(with_special, skip_special_tokens=True)})
        with open(argv[4], "w") as f:
            json.dump(out, f)
    else:
        sys.exit(f"unknown command {what}")


if __name__ == "__main__":
    main(sys.argv)
