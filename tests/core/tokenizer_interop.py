"""Hugging Face `tokenizers` side of tests/core/tokenizer_interop_test.cpp (run with the streaming peers' venv,
which pins tokenizers; scripts/install-peers.sh streaming).

    tokenizer_interop.py train CORPUS VOCAB_SIZE MIN_FREQUENCY OUT.json [SPECIAL ...]
        trains byte-level BPE (BpeTrainer, all 256 bytes as the initial alphabet) on CORPUS's text, writes OUT.json
    tokenizer_interop.py encode TOKENIZER.json TEXT OUT.json
        writes {"ids": [...], "decoded_ok": bool}: TEXT's ids, and whether decoding them gives TEXT back
    tokenizer_interop.py decode TOKENIZER.json IDS.json OUT.txt
        writes the text of the ids in IDS.json (a JSON list)
"""
import json
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


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
    else:
        sys.exit(f"unknown command {what}")


if __name__ == "__main__":
    main(sys.argv)
