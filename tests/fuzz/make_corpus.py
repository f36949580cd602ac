#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets (tests/fuzz/corpus/<target>/), small valid and nearly valid
inputs of each reader; the committed files are its output (docs/hardening.md), except regress_*: inputs that crashed
a reader or made a sanitizer report before it was fixed, kept as they were found. Standard library only."""
import base64
import gzip
import io
import json
import pathlib
import struct
import zlib

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"


def put(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# --- Time -----------------------------------------------------------------------------------------------
for i, text in enumerate(["10ep", "500ba", "2048sp", "3e4tok", "0.3dur", "1dur\x000.5dur", "7ba\x003ba",
                          "12ep\x005ep", "1e18ba\x001ba", "0ep", "1.5ba", "ep", "-1ep", "10min"]):
    put("fuzz_time", f"seed{i:02d}", text)

# --- Recipes ---------------------------------------------------------------------------------------------
for path in sorted((ROOT / "examples" / "recipes").glob("*.yaml")):
    put("fuzz_recipe", path.stem, path.read_text())
base = (ROOT / "examples" / "recipes" / "fashion_mnist_baseline.yaml").read_text()
put("fuzz_recipe", "overrides", base + "\0optimizer.sgd.lr=0.05\0max_duration=30ba\0algorithms=[]")
put("fuzz_recipe", "list_override", base + "\0schedulers[0].cosine.t_max=1dur\0model={mlp: {hidden: [64]}}")
put("fuzz_recipe", "options",
    "steps: 3\ndepth: 9\nsmall: 7\nlr: 0.5\nmomentum: 0.9\nnesterov: yes\nmode: eval\nname: x\n"
    "max_duration: 2ep\nshape: [1, 28, 28]\nweights: [0.5, 1e3]\nmilestones: [10ep, 20ep]\n"
    "columns: [a, b]\nmodel: {resnet: {depth: 20}}\n\0depth=100000000000000000000\0shape.0=4")
put("fuzz_recipe", "anchors", "a: &x {b: [1, 2, {c: ~}]}\nd: *x\ne: !!str 5\nf: |\n  text\n\0a.b[2].c=1")

# --- Checkpoints (mode byte 0: a whole file; 1: a payload; 2: metadata JSON, NUL, tensor bytes) ------------
timestamp = {k: 0 for k in ["iteration", "epoch", "batch", "sample", "token", "epoch_in_iteration",
                            "batch_in_epoch", "sample_in_epoch", "token_in_epoch"]}
timestamp.update({"total_wct": 0.0, "epoch_wct": 0.0, "batch_wct": 0.0, "batch": 3})
blob = struct.pack("<2f", 1.0, 2.0) + struct.pack("<q", 7) + bytes([1, 0])
meta = {"tensors": {"model.w": {"dtype": "float32", "shape": [2], "offset": 0, "nbytes": 8},
                    "rng": {"dtype": "int64", "shape": [], "offset": 8, "nbytes": 8},
                    "mask": {"dtype": "bool", "shape": [1, 2], "offset": 16, "nbytes": 2}},
        "timestamp": timestamp, "tessera_version": "0.1.0", "torch_version": "1.13.1", "recipe": "a: 1\n",
        "seed": 17, "world_size": 1}
meta_text = json.dumps(meta).encode()
payload = struct.pack("<Q", len(meta_text)) + meta_text + blob
header = b"TSRCKPT1" + struct.pack("<Q", len(payload)) + struct.pack("<I", zlib.crc32(payload)) + b"\0" * 4
put("fuzz_checkpoint", "file", b"\x00" + header + payload)
put("fuzz_checkpoint", "payload", b"\x01" + payload)
put("fuzz_checkpoint", "meta_blob", b"\x02" + meta_text + b"\0" + blob)
put("fuzz_checkpoint", "no_tensors", b"\x02" + json.dumps({"tensors": {}, "seed": 1}).encode() + b"\0")

# --- IDX (option byte, images file, "\0IDX\0", labels file) ----------------------------------------------
images = struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(range(256)) * 6 + bytes(32)
labels = struct.pack(">II", 0x801, 2) + bytes([3, 9])
sep = b"\0IDX\0"
put("fuzz_idx", "plain_train", b"\x01" + images + sep + labels)
put("fuzz_idx", "plain_test_limit1", b"\x02" + images + sep + labels)
put("fuzz_idx", "gzip", b"\x01" + gzip.compress(images, mtime=0) + sep + gzip.compress(labels, mtime=0))
put("fuzz_idx", "truncated", b"\x01" + images[:100] + sep + labels)

# --- MDS ---------------------------------------------------------------------------------------------------
def shard(records):
    """An MDS shard file: u32 count, u32 offsets (count + 1), the records."""
    start = 4 + 4 * (len(records) + 1)
    offsets, pos = [], start
    for r in records:
        offsets.append(pos)
        pos += len(r)
    offsets.append(pos)
    return struct.pack("<I", len(records)) + struct.pack(f"<{len(offsets)}I", *offsets) + b"".join(records)


def var(*values):
    """A record of variable-size columns: their u32 lengths, then the values."""
    return struct.pack(f"<{len(values)}I", *map(len, values)) + b"".join(values)


# A tiny PNG (2x1 RGB) and a PIL value (mode RGB, 1x1).
def png_rgb(w, h, pixels):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + pixels[y * w * 3:(y + 1) * w * 3] for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


png = png_rgb(2, 1, bytes([255, 0, 0, 0, 255, 0]))
pil = struct.pack("<III", 1, 1, 3) + b"RGB" + bytes([1, 2, 3])
nd_var = bytes([34, (2 << 2) | 0, 2, 1]) + struct.pack("<2f", 0.5, 1.5)  # float32, 2 dims of u8 width: [2, 1]

shard_sets = {
    0: [bytes(range(16)) + struct.pack("<q", 3), bytes(16) + struct.pack("<q", 9)],
    1: [var(nd_var), var(bytes([8, (1 << 2) | 0, 3]) + b"abc")],
    2: [var(b"hello", b"\x00\x01") + struct.pack("<H", 65535) + struct.pack("<e", 1.5)],
    3: [var(png)],
    5: [var(pil) + struct.pack("<Q", 2**63 - 1)],
    6: [var(struct.pack("<2f", 1, 2), struct.pack("<I", 4000000000))],
    7: [struct.pack("<I", 7) + b"\xff" + struct.pack("<d", 2.5) + struct.pack("<h", -3)],
}
for selector, records in shard_sets.items():
    put("fuzz_mds_shard", f"set{selector}", bytes([selector]) + shard(records))
raw0 = shard(shard_sets[0])
put("fuzz_mds_shard", "set0_empty", bytes([0]) + shard([]))
# Compressed (bit 3): u32 raw size, then a zstd frame holding the shard in one raw (stored) block.
def zstd_raw_frame(data):
    # Frame header: magic, descriptor (single segment, FCS 4 bytes), content size; one raw last block.
    fhd = bytes([0x20 | 0x80])  # Single_Segment_flag + FCS_Field_Size 2 -> 4 bytes
    frame = struct.pack("<I", 0xFD2FB528) + fhd + struct.pack("<I", len(data))
    block_header = (len(data) << 3) | (0 << 1) | 1  # Raw_Block, Last_Block
    return frame + struct.pack("<I", block_header)[:3] + data


put("fuzz_mds_shard", "set0_zstd", bytes([8]) + struct.pack("<I", len(raw0)) + zstd_raw_frame(raw0))

index = {"version": 2, "shards": [{
    "column_encodings": ["ndarray:uint8:4,4", "int"], "column_names": ["image", "label"],
    "column_sizes": [16, 8], "compression": None, "format": "mds", "hashes": ["xxh64"],
    "raw_data": {"basename": "shard.00000.mds", "bytes": len(raw0), "hashes": {}}, "samples": 2,
    "size_limit": 67108864, "version": 2, "zip_data": None}]}
put("fuzz_mds_index", "one_shard", json.dumps(index, sort_keys=True).encode() + b"\0" + raw0)
two = json.loads(json.dumps(index))
two["shards"].append(dict(two["shards"][0], raw_data={"basename": "shard.00001.mds", "bytes": 10}))
put("fuzz_mds_index", "two_shards", json.dumps(two, sort_keys=True).encode() + b"\0" + raw0)
put("fuzz_mds_index", "zstd", json.dumps(dict(index, shards=[dict(index["shards"][0], compression="zstd:7",
    zip_data={"basename": "shard.00000.mds.zstd", "bytes": 100})]), sort_keys=True).encode())
put("fuzz_mds_index", "ndarray_var", json.dumps(dict(index, shards=[dict(index["shards"][0],
    column_encodings=["ndarray", "str"], column_names=["x", "y"], column_sizes=[None, None])])).encode())

# --- Tokenizers (tokenizer.json, NUL, a text to encode) ----------------------------------------------------
def byte_level_char(b):
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    others = [c for c in range(256) if c not in printable]
    return chr(b) if b in printable else chr(256 + others.index(b))


def tokenizer_json(merges, added=(), prefix=False, merge_pairs=False, post_processor=None):
    """added: texts of special tokens, or (text, flags) pairs with Hugging Face's added-token flags."""
    vocab = {byte_level_char(b): i for i, b in enumerate(sorted(range(256), key=lambda b: ord(byte_level_char(b))))}
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    added_tokens = []
    for item in added:
        text, flags = (item, {}) if isinstance(item, str) else item
        vocab[text] = len(vocab)
        added_tokens.append(dict({"id": vocab[text], "content": text, "single_word": False, "lstrip": False,
                                  "rstrip": False, "normalized": False, "special": True}, **flags))
    level = {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": True}
    return json.dumps({"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
                       "normalizer": None, "pre_tokenizer": level, "post_processor": post_processor, "decoder": level,
                       "model": {"type": "BPE", "dropout": None, "unk_token": None,
                                 "continuing_subword_prefix": None, "end_of_word_suffix": None,
                                 "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                                 "merges": [m.split(" ") if merge_pairs else m for m in merges]}},
                      ensure_ascii=False).encode()


english = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "Ġthe Ġ"]
put("fuzz_tokenizer", "english", tokenizer_json(english) + b"\0The theory: in a sense, there's 42 of them.\n")
put("fuzz_tokenizer", "special", tokenizer_json(english, added=["<|endoftext|>", "<pad>"])
    + "\0the end<|endoftext|><pad> naïve café 🙂\t\r\n  ".encode())
put("fuzz_tokenizer", "prefix", tokenizer_json(english, prefix=True, merge_pairs=True) + b"\0in a word\xff\xfe")
flagged = [("<mask>", {"lstrip": True}), ("<r>", {"rstrip": True, "special": False}),
           ("the", {"single_word": True, "normalized": True, "special": False}), ("<mask>s", {"normalized": True})]
put("fuzz_tokenizer", "flags", tokenizer_json(english, added=flagged, post_processor={
    "type": "RobertaProcessing", "sep": ["<r>", 267], "cls": ["<mask>", 266]})
    + "\0the  <mask> x<r> \u3000 then the_ <mask>s théthe".encode())
put("fuzz_tokenizer", "template", tokenizer_json(english, added=["<s>"], post_processor={
    "type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [266], "tokens": ["<s>"]}}}]}) + b"\0in the <s>")
put("fuzz_tokenizer", "overlap", tokenizer_json(["a a", "aa a", "b c", "a b"]) + b"\0aaaaabcabcaaa")
put("fuzz_tokenizer", "gpt2_style_sequence", json.dumps({"model": {"vocab": {"a": 0}, "merges": []},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}]}}).encode())
llama3 = json.loads(tokenizer_json(english + ["1 2", "12 3"]))
llama3["model"]["ignore_merges"] = True
llama3["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "behavior": "Isolated", "invert": False, "pattern": {"Regex":
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
        r"\s*[\r\n]+|\s+(?!\S)|\s+"}},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
put("fuzz_tokenizer", "llama3", json.dumps(llama3, ensure_ascii=False).encode()
    + "\0They'RE in 1234567 rooms.\n\n  \r\nthe end\xa0x".encode())
sp_vocab = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "a", "b", "\u2581a", "ab"]
sp_replace = lambda a, b: {"type": "Replace", "pattern": {"String": a}, "content": b}
put("fuzz_tokenizer", "sentencepiece", json.dumps({
    "added_tokens": [{"id": i, "content": t, "special": True} for i, t in enumerate(sp_vocab[:3])],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                       sp_replace(" ", "\u2581")]},
    "pre_tokenizer": None,
    "decoder": {"type": "Sequence", "decoders": [sp_replace("\u2581", " "), {"type": "ByteFallback"}, {"type": "Fuse"},
                                                 {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
              "vocab": {t: i for i, t in enumerate(sp_vocab)}, "merges": ["\u2581 a", "a b"]}},
    ensure_ascii=False).encode() + "\0ab ba<s>x\xe9 \u2581\xff".encode())
put("fuzz_tokenizer", "metaspace", json.dumps({
    "model": {"type": "BPE", "unk_token": "<unk>", "vocab": {t: i for i, t in enumerate(sp_vocab)}, "merges": ["a b"]},
    "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True},
    "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}},
    ensure_ascii=False).encode() + b"\0ab  ab a\n")
# SentencePiece's character map of four rules (a -> b, U+0600 -> P, CR -> R, "cd" -> Z), compiled by PyPI's sentencepiece
# 0.2.3; tests/core/unigram_test.cpp reads the same file.
RULES_CHARSMAP = (ROOT / "tests" / "core" / "rules_charsmap.b64").read_text().strip()
put("fuzz_tokenizer", "unigram", json.dumps({
    "added_tokens": [{"id": 0, "content": "<unk>", "special": True}],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Precompiled", "precompiled_charsmap": RULES_CHARSMAP},
        {"type": "Strip", "strip_left": False, "strip_right": True},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "\u2581"}]},
    "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
    "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
    "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": True, "vocab": [
        ["<unk>", 0.0], ["\u2581", -3.0], ["a", -2.0], ["b", -2.0], ["ab", -1.5], ["\u2581ab", -1.0], ["<0xC3>", -4.0],
        ["<0xA9>", -4.0], ["bb", -3.9999999]]}},
    ensure_ascii=False).encode() + "\0ab  ab a\u0301\u0600x caf\u00e9 \r\n\u2581bb \xff".encode())
wordpiece_vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "hello", "world", ",", "!",
                   "caf", "##e", "中"]
put("fuzz_tokenizer", "wordpiece", json.dumps({
    "added_tokens": [{"id": i, "content": t, "special": True} for i, t in enumerate(wordpiece_vocab[:5])],
    "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None,
                   "lowercase": True},
    "pre_tokenizer": {"type": "BertPreTokenizer"},
    "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
    "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
              "max_input_chars_per_word": 12, "vocab": {t: i for i, t in enumerate(wordpiece_vocab)}}},
    ensure_ascii=False).encode() + "\0UNAFFABLE Café,中中 hello\x01\t[MASK]world! \u0130 \uac00 x".encode() + b"\xff")
O200K = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
         r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
         r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
qwen2 = json.loads(tokenizer_json(english + ["1 2"]))
qwen2["normalizer"] = {"type": "NFC"}
qwen2["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "behavior": "Isolated", "invert": False, "pattern": {"Regex": O200K}},
    {"type": "Split", "behavior": "MergedWithNext", "invert": True, "pattern": {"Regex": r"(?:\p{Lu}|\d)+?(?=\s)"}},
    {"type": "Split", "behavior": "Removed", "invert": False, "pattern": {"String": "zz"}},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
put("fuzz_tokenizer", "splits_nfc", json.dumps(qwen2, ensure_ascii=False).encode()
    + "\0HTTPServer don'T 1234 caf\u00e9 cafe\u0301 \u1100\u1161 zz x/y\n\xff".encode())

# --- SentencePiece model files (protobuf's wire format) -------------------------------------------------------
def varint(v):
    out = b""
    while v >= 0x80:
        out, v = out + bytes([(v & 0x7F) | 0x80]), v >> 7
    return out + bytes([v])


def field(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def sp_piece(text, score, kind):
    return field(1, text.encode()) + varint(2 << 3 | 5) + struct.pack("<f", score) + varint(3 << 3) + varint(kind)


spm_pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("\u2581", -3.0, 1), ("a", -2.0, 1),
              ("\u2581a", -1.0, 1), ("ell", -2.5, 1), ("<mask>", 0.0, 4), ("<0x41>", -5.0, 6)]
spm_model = b"".join(field(1, sp_piece(*p)) for p in spm_pieces)
put("fuzz_sentencepiece_model", "unigram", spm_model + field(2, varint(3 << 3) + varint(1) + varint(40 << 3) + varint(0))
    + field(3, field(1, b"nmt_nfkc") + field(2, base64.b64decode(RULES_CHARSMAP))))
put("fuzz_sentencepiece_model", "bpe", spm_model + field(2, varint(3 << 3) + varint(2)))

# --- Split pre-tokenizer regexes (the pattern, NUL, a text) ----------------------------------------------------
put("fuzz_split_regex", "o200k", O200K.encode() + "\0HTTPServer don'T 1234567 x/y\n\n  z\u00e9\u0301".encode())
put("fuzz_split_regex", "constructs", r"(?i:[a-c]x)+?|(?>\s+)\S|a{2,}+|\p{^L}{1,3}?(?=\d)|(?!\h)[\w\-.]|\x{41}|(?:a|\s)*+".encode()
    + b"\0ABXabx  7e! aaaaa -.\xff\x80")
put("fuzz_split_regex", "deepseek", r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+".encode()
    + "\0.Net (x) \u6f22\u5b57 \u0915\u093c!!\r\n".encode())
