"""Language models from Python: the text dataset and the GPT model from recipe entries, per-token metrics and
perplexity, time in tokens, sequence-length warmup (the class, its functional forms, a run whose lengths follow
the schedule, and one stopped, saved and resumed that ends on the uninterrupted weights), a GPT with dropout,
stochastic depth and gyro dropout resumed bitwise, a GPT on token ids written to MDS from Python, text generation, a BERT learning masked bytes, and a BERT text
classifier fine-tuned from its checkpoint, and GPTs written as Hugging Face GPT-2 and Llama folders and read back."""
import json
import math

import pytest
import torch

import tessera
import tessera.functional as TF
from conftest import StopAt
from tessera.algorithms import SeqLengthWarmup


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("".join(f"the quick brown fox {'jumps' if i % 7 == 0 else 'runs'}\n" for i in range(200)))
    return str(path)


def gpt_components(text, **overrides):
    kwargs = dict(
        model={"gpt": {"d_model": 16, "n_layers": 2, "n_heads": 2}},
        train_data={"dataset": {"text": {"path": text, "seq_length": 16}}, "loader": {"batch_size": 8}},
        eval_data={"dataset": {"text": {"path": text, "split": "test", "seq_length": 16}},
                   "loader": {"batch_size": 8, "shuffle": False}, "metrics": ["accuracy", "perplexity"]},
        optimizer={"adamw": {"lr": 0.01}},
        max_duration="8ba",
        seed=0,
        threads=1,
    )
    kwargs.update(overrides)
    return kwargs


class Lengths(tessera.Callback):
    name = "lengths"

    def __init__(self):
        super().__init__()
        self.seen = []

    def before_forward(self, state, logger):
        self.seen.append(tuple(state.batch["input"].shape))


def test_class_takes_its_options_and_refuses_bad_ones():
    assert SeqLengthWarmup().options == {"duration": 0.3, "min_seq_length": 8, "max_seq_length": 0, "step_size": 8,
                                         "truncate": False}
    assert not SeqLengthWarmup().spec().required_on_load
    with pytest.raises(tessera.InputError, match="max_seq_length 4 is below min_seq_length 8"):
        SeqLengthWarmup(max_seq_length=4)
    assert isinstance(tessera.algorithms.make({"seq_length_warmup": {"duration": 0.5}}), SeqLengthWarmup)


def test_functional_forms():
    assert [TF.warmup_seq_length(b, 100, 0.3, 8, 64, 8) for b in (0, 4, 27, 28, 99)] == [8, 16, 56, 64, 64]
    x = torch.arange(16).view(2, 8)
    cut = TF.set_seq_length(tessera.Batch(x, x + 1), 3)
    assert torch.equal(cut["input"], x[:, :3]) and torch.equal(cut["target"], x[:, :3] + 1)
    chunks = TF.set_seq_length(tessera.Batch(x, x + 1), 3, truncate=False)
    assert torch.equal(chunks["input"], torch.arange(15).view(5, 3))
    assert torch.equal(chunks["target"], chunks["input"] + 1)


def test_a_gpt_trains_on_text_counts_tokens_and_reports_perplexity(text):
    trainer = tessera.Trainer(**gpt_components(text, max_duration="2048tok"))  # 2048 / (8 * 16) = 16 batches
    before = trainer.eval()
    trainer.fit()
    after = trainer.eval()
    assert trainer.state.timestamp.batch == 16 and trainer.state.timestamp.token == 2048
    assert before["metrics/eval/perplexity"] == pytest.approx(256, rel=0.15)  # uniform over the bytes
    assert after["metrics/eval/perplexity"] < 0.2 * before["metrics/eval/perplexity"]
    assert after["metrics/eval/accuracy"] > before["metrics/eval/accuracy"]
    assert math.isfinite(trainer.state.loss.item())


def test_a_gpt_trains_on_token_ids_written_from_python(tmp_path):
    """Ids from any tokenizer (here: counting by 3 from a random start, below 600), written to MDS from Python and
    streamed to a GPT whose vocabulary and sequence length come from the data (docs/streaming.md)."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    for split, n in (("train", 256), ("test", 32)):
        with tessera.data.MdsWriter(tmp_path / split, {"ids": "ndarray:uint16"}, size_limit=2000) as out:
            for _ in range(n):
                out.write({"ids": (int(rng.integers(0, 550)) + 3 * np.arange(17)).astype(np.uint16)})

    def data(split):
        return {"dataset": {"streaming": {"local": str(tmp_path / split), "input": "ids", "seq_length": 16,
                                          "num_classes": 600}},
                "loader": {"batch_size": 16, "shuffle": split == "train"}}
    eval_data = dict(data("test"), metrics=["accuracy", "perplexity"])
    trainer = tessera.Trainer(model={"gpt": {"d_model": 32, "n_layers": 1, "n_heads": 2}}, train_data=data("train"),
                              eval_data=eval_data, optimizer={"adamw": {"lr": 0.02}}, max_duration="2ep", seed=0,
                              threads=1)
    assert trainer.model.num_classes == 600  # the vocabulary, from num_classes
    before = trainer.eval()
    trainer.fit()
    after = trainer.eval()
    assert trainer.state.timestamp.token == 2 * 256 * 16
    assert before["metrics/eval/perplexity"] == pytest.approx(600, rel=0.2)
    assert after["metrics/eval/accuracy"] > 0.5
    ids = torch.tensor([[40 + 3 * i for i in range(16)]])
    predicted = trainer.model.forward(tessera.Batch(ids, ids)).argmax(1)  # logits [1, vocab, 16]
    assert (predicted[0, 4:] == ids[0, 4:] + 3).float().mean() > 0.8  # it learned the next id: the last plus 3
    assert after["metrics/eval/perplexity"] < 0.05 * before["metrics/eval/perplexity"]


def test_warmup_lengthens_the_sequences_on_schedule(text):
    lengths = Lengths()
    warmup = SeqLengthWarmup(duration=0.5, min_seq_length=4, step_size=4)
    trainer = tessera.Trainer(**gpt_components(text), algorithms=[warmup], callbacks=[lengths])
    trainer.fit()
    # 8 batches, duration 0.5: 4 warmup batches, (16 - 4) / 4 = 3 steps, one a batch.
    assert [s[1] for s in lengths.seen] == [4, 8, 12, 16, 16, 16, 16, 16]
    assert warmup.last_seq_length == 16


def test_warmup_on_images_is_refused_before_step_one():
    from conftest import tiny_components

    with pytest.raises(tessera.InputError, match=r"seq_length_warmup shortens token sequences and needs inputs \[S\]"):
        tessera.Trainer(**tiny_components(), algorithms=[SeqLengthWarmup()])


def stopped_at_3_and_resumed(components, path):
    """A trainer of `components()` stopped after batch 3 and saved, then a new one loaded from it and trained to the
    end: the second."""
    first = tessera.Trainer(**components(), callbacks=[StopAt(3)])
    first.fit()
    first.save_checkpoint(str(path))
    second = tessera.Trainer(**components())
    second.load_checkpoint(str(path))
    second.fit()
    return second


def test_stopped_saved_and_resumed_ends_on_the_uninterrupted_weights(text, tmp_path):
    def components():
        return gpt_components(text, algorithms=[SeqLengthWarmup(duration=0.5, min_seq_length=4, step_size=4,
                                                                truncate=False)])

    whole = tessera.Trainer(**components())
    whole.fit()
    second = stopped_at_3_and_resumed(components, tmp_path / "at3.ckpt")
    assert second.state.timestamp.batch == 8
    assert second.weights_fingerprint() == whole.weights_fingerprint()


def test_a_gpt_with_dropout_stochastic_depth_and_gyro_dropout_resumes_bitwise(text, tmp_path):
    made = []

    def components():
        made[:] = [tessera.algorithms.StochasticDepth(drop_rate=0.5),
                   tessera.algorithms.GyroDropout(p=0.1, sigma=8, tau=2)]
        return gpt_components(text, model={"gpt": {"d_model": 16, "n_layers": 2, "n_heads": 2, "dropout": 0.1,
                                                   "attention_dropout": 0.1}}, algorithms=list(made))

    whole = tessera.Trainer(**components())
    whole.fit()
    depth, gyro = made
    assert depth.drop_rates == [0.25, 0.5]  # one gate per block, linear in depth
    assert gyro.replaced == 5  # the embeddings' dropout and each block's two
    assert stopped_at_3_and_resumed(components, tmp_path / "at3.ckpt").weights_fingerprint() == \
        whole.weights_fingerprint()
    plain = tessera.Trainer(**gpt_components(text))
    plain.fit()
    assert plain.weights_fingerprint() != whole.weights_fingerprint()


def test_alibi_glu_and_low_precision_layernorm_from_python(text):
    alibi = tessera.algorithms.Alibi(train_sequence_length_scaling=0.5)
    glu = tessera.algorithms.GatedLinearUnits()
    lpln = tessera.algorithms.LowPrecisionLayerNorm()
    lengths = Lengths()
    trainer = tessera.Trainer(**gpt_components(text, precision="amp_bf16"), algorithms=[alibi, glu, lpln],
                              callbacks=[lengths])
    trainer.fit()
    assert alibi.counts == {"attentions": 2, "position_embeddings": 1}
    assert glu.replaced == 2 and lpln.replaced == 5
    assert {s for s in lengths.seen} == {(16, 8)}  # 8 x 16 tokens re-chunked into rows of 8
    state = trainer.state.model.state_dict()
    assert "blocks.0.mlp.fc_gated.weight" in state and "blocks.0.mlp.fc.weight" not in state
    assert torch.count_nonzero(state["pos_embed.weight"]) == 0
    with pytest.raises(tessera.InputError, match="without mixed precision it changes nothing"):
        tessera.Trainer(**gpt_components(text), algorithms=[tessera.algorithms.LowPrecisionLayerNorm()])


def test_sequence_method_functional_forms():
    assert TF.alibi_slopes(4).tolist() == [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]
    bias = TF.alibi_bias(2, 3)
    assert bias.shape == (2, 3, 3) and bias[0, 2, 0].item() == -2 * 2 ** -4
    x, wg, wl = torch.randn(2, 4), torch.randn(6, 4), torch.randn(6, 4)
    expected = torch.nn.functional.gelu(x @ wg.T) * (x @ wl.T)
    assert torch.allclose(TF.gated_linear_unit(x, wg, None, wl, None), expected, atol=1e-6)
    w, b = torch.ones(4), torch.zeros(4)
    assert torch.equal(TF.low_precision_layer_norm(x, [4], w, b), torch.nn.functional.layer_norm(x, [4], w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert TF.low_precision_layer_norm(x, [4], w, b).dtype == torch.bfloat16


def test_low_precision_layernorm_on_a_users_module():
    from conftest import tiny_components

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(64, 16)
            self.norm = torch.nn.LayerNorm(16)
            self.fc2 = torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(self.norm(self.fc1(x.flatten(1))))

    net = Net()
    weight = net.norm.weight
    dtypes = []
    trainer = tessera.Trainer(**tiny_components(model=net, precision="amp_bf16", max_duration="2ba"),
                              algorithms=[tessera.algorithms.LowPrecisionLayerNorm()])
    net.norm.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer.fit()
    assert type(net.norm).__name__ == "LowPrecisionLayerNorm" and net.norm.weight is weight
    assert set(dtypes) == {torch.bfloat16}
    assert set(net.state_dict()) == {"fc1.weight", "fc1.bias", "norm.weight", "norm.bias", "fc2.weight", "fc2.bias"}


def test_a_trained_gpt_generates_text_bytes_and_ids(text):
    trainer = tessera.Trainer(**gpt_components(text, max_duration="40ba"))
    trainer.fit()
    greedy = trainer.generate(b"the quick ", max_new_tokens=12, temperature=0)
    assert isinstance(greedy, bytes) and len(greedy) == 22 and greedy.startswith(b"the quick ")
    # It has learnt the pattern of the text: the most likely continuation is mostly its bytes.
    assert set(greedy[10:]) <= set(b"the quick brown fox jumps runs\n")
    as_text = trainer.generate("the ", max_new_tokens=5, seed=3)
    assert isinstance(as_text, str) and as_text.startswith("the ")
    assert trainer.generate("the ", max_new_tokens=5, seed=3) == as_text  # the same seed, the same text
    # The key/value cache (on by default) gives the tokens of running the whole sequence each step, also past the
    # context (16 tokens): 10 + 12 = 22.
    assert trainer.generate(b"the quick ", max_new_tokens=12, temperature=0, kv_cache=False) == greedy
    assert trainer.generate("the ", max_new_tokens=5, seed=3, kv_cache=False) == as_text
    ids = torch.tensor([[116, 104], [102, 111]])
    out = trainer.generate(ids, max_new_tokens=4, top_k=5, top_p=0.9)
    assert out.shape == (2, 6) and torch.equal(out[:, :2], ids)
    one = trainer.generate(ids[0], max_new_tokens=4, temperature=0)
    assert one.shape == (6,)
    assert torch.equal(TF.generate(trainer.model, ids[:1], max_new_tokens=4, temperature=0)[0], one)
    with pytest.raises(tessera.InputError, match="top_p"):
        trainer.generate("the ", top_p=0)
    with pytest.raises(tessera.InputError, match='unknown option "top"; did you mean "top_k"'):
        trainer.generate("the ", top=3)


def test_the_generate_callback_logs_what_the_model_writes(text, capfd):
    callback = {"generate": {"prompts": ["the ", "fox"], "interval": "4ba", "max_new_tokens": 6}}
    plain = tessera.Trainer(**gpt_components(text))
    plain.fit()
    trainer = tessera.Trainer(**gpt_components(text), callbacks=[callback])
    trainer.fit()
    assert trainer.weights_fingerprint() == plain.weights_fingerprint()  # generation leaves training alone
    captured = capfd.readouterr()
    shown = captured.out + captured.err
    assert shown.count("generate @") == 4  # batches 4 and 8, two prompts
    assert 'generate @ 0ep 8ba: "fox" -> "' in shown
    with pytest.raises(tessera.InputError, match="the model's vocabulary has 4 tokens"):
        from conftest import tiny_components

        tessera.Trainer(**tiny_components(), callbacks=[callback]).fit()


def bert_components(text, **overrides):
    """The GPT's run as masked language modelling: the bert model, every data section masked."""
    kwargs = gpt_components(text, model={"bert": {"d_model": 16, "n_layers": 2, "n_heads": 2}})
    kwargs["train_data"]["transforms"] = ["mask_tokens"]
    kwargs["eval_data"]["transforms"] = ["mask_tokens"]
    kwargs.update(overrides)
    return kwargs


def test_a_bert_learns_masked_bytes_resumes_bitwise_and_does_not_generate(text, tmp_path):
    trainer = tessera.Trainer(**bert_components(text, max_duration="40ba"))
    before = trainer.eval()
    trainer.fit()
    after = trainer.eval()
    assert before["metrics/eval/perplexity"] == pytest.approx(256, rel=0.15)  # uniform over the bytes
    assert after["metrics/eval/perplexity"] < 0.2 * before["metrics/eval/perplexity"]
    with pytest.raises(tessera.InputError, match="the bert model is bidirectional"):
        trainer.generate("the ", max_new_tokens=2)
    # Masks are drawn per batch from the run's seed: stopped, saved and resumed, it ends on the same weights.
    def components():
        return bert_components(text, algorithms=[tessera.algorithms.Alibi(), tessera.algorithms.GatedLinearUnits()])

    whole = tessera.Trainer(**components())
    whole.fit()
    assert stopped_at_3_and_resumed(components, tmp_path / "at3.ckpt").weights_fingerprint() == \
        whole.weights_fingerprint()
    with pytest.raises(tessera.InputError, match="the bert model learns from masked tokens"):
        tessera.Trainer(**gpt_components(text, model={"bert": {"d_model": 16, "n_layers": 2, "n_heads": 2}}))


def test_a_bert_classifier_fine_tunes_from_a_bert_runs_checkpoint_folder(text, tmp_path):
    # Masked language modelling on sequences of 16, its checkpoint in a folder; then a classifier of the word that
    # ends each line ("jumps" or "runs") whose encoder loads from the folder's newest checkpoint (not its head).
    pretraining = tessera.Trainer(**bert_components(text, max_duration="4ba"))
    pretraining.fit()
    (tmp_path / "ckpts").mkdir()
    pretraining.save_checkpoint(str(tmp_path / "ckpts" / "ep0-ba4.ckpt"))
    labels = tmp_path / "labels.tsv"
    labels.write_text("".join(f"{w}\tfox {w}\n" for i in range(200) for w in ["jumps" if i % 3 == 0 else "runs"]))

    def classifier(max_seq_length):
        data = {"path": str(labels), "seq_length": 12}
        return tessera.Trainer(
            model={"bert_classifier": {"d_model": 16, "n_layers": 2, "n_heads": 2, "max_seq_length": max_seq_length}},
            train_data={"dataset": {"text_classification": data}, "loader": {"batch_size": 16}},
            eval_data={"dataset": {"text_classification": dict(data, split="test")},
                       "loader": {"batch_size": 20, "shuffle": False}, "metrics": ["accuracy"]},
            optimizer={"adamw": {"lr": 0.01}}, max_duration="2ep", seed=0, threads=1)

    # Position embeddings for 32 positions do not take the pretrained 16: refused, naming the weight.
    with pytest.raises(tessera.InputError, match=r"shapes differ from the model's: pos_embed\.weight"):
        classifier(32).load_checkpoint(str(tmp_path / "ckpts"), weights_only=True, strict=False)
    trainer = classifier(16)
    trainer.load_checkpoint(str(tmp_path / "ckpts"), weights_only=True, strict=False)
    loaded = pretraining.model.named_parameters()
    for name, value in trainer.model.named_parameters().items():
        if not name.startswith("classifier."):
            assert torch.equal(value, loaded[name]), name
    trainer.fit()
    assert trainer.eval()["metrics/eval/accuracy"] == 1.0  # the last word says it


def test_mask_tokens_masks_a_users_batch_as_the_transform_does():
    ids = torch.randint(0, 256, (16, 64))
    before = ids.clone()
    inputs, targets = TF.mask_tokens(ids, seed=3)
    assert torch.equal(ids, before)  # the caller's tensor is left alone
    assert inputs.shape == targets.shape == (16, 64) and targets.dtype == torch.int64
    hidden = targets != -100
    assert 0.1 < hidden.float().mean().item() < 0.2
    assert torch.equal(targets[hidden], ids[hidden]) and torch.equal(inputs[~hidden], ids[~hidden])
    assert (inputs[hidden] == 256).float().mean().item() > 0.6  # most hidden bytes became the mask token
    again = TF.mask_tokens(ids, seed=3)
    assert torch.equal(again[0], inputs) and torch.equal(again[1], targets)  # a function of the seed
    assert not torch.equal(TF.mask_tokens(ids, seed=4)[1], targets)
    kept, _ = TF.mask_tokens(ids, probability=0.5, replace_with_mask=0.0, replace_with_random=0.0)
    assert torch.equal(kept, ids)
    with pytest.raises(tessera.InputError, match=r"expected integer token ids \[N, S\]"):
        TF.mask_tokens(torch.zeros(2, 4))
    with pytest.raises(tessera.InputError, match='unknown option "probabilty"'):
        TF.mask_tokens(ids, probabilty=0.2)


def test_a_gpt_exported_as_a_hugging_face_gpt2_starts_a_new_run_where_it_ended(text, tmp_path):
    # GPT-2's shape (tied embeddings, tanh GELU) trained 8 batches, written as a Hugging Face GPT-2 folder, read back
    # as the start of another run: the same weights and evaluation; options that disagree with the folder's
    # config.json are refused, so is exporting a model GPT-2 cannot hold (writing nothing).
    gpt2 = {"d_model": 16, "n_layers": 2, "n_heads": 2, "tie_embeddings": True, "activation": "gelu_tanh"}
    trainer = tessera.Trainer(**gpt_components(text, model={"gpt": gpt2}))
    trainer.fit()
    folder = tmp_path / "gpt2"
    trainer.export_huggingface(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    resumed = tessera.Trainer(**gpt_components(text, model={"gpt": {"pretrained": str(folder)}}))
    assert "head.weight" not in resumed.model.named_parameters()
    for name, value in trainer.model.named_parameters().items():
        assert torch.equal(resumed.model.named_parameters()[name], value), name
    assert resumed.evaluate() == trainer.evaluate()
    with pytest.raises(tessera.InputError, match=r"model\.gpt\.d_model: 32 given, but the pretrained checkpoint's"):
        tessera.Trainer(**gpt_components(text, model={"gpt": {"pretrained": str(folder), "d_model": 32}}))
    glu = tessera.Trainer(**gpt_components(text, model={"gpt": gpt2}),
                          algorithms=[tessera.algorithms.GatedLinearUnits()])
    with pytest.raises(tessera.InputError, match="fc_gated.weight' has no place in a GPT-2 checkpoint"):
        glu.export_huggingface(tmp_path / "glu")
    assert not (tmp_path / "glu").exists()


def test_a_llama_shaped_gpt_exported_as_a_hugging_face_llama_starts_a_new_run_where_it_ended(text, tmp_path):
    # Llama's architecture (RMSNorm, rotary positions, SwiGLU, no biases, grouped-query attention) trained 8 batches,
    # written as a Hugging Face Llama folder, read back as the start of another run: the same weights and evaluation.
    llama = {"d_model": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "norm": "rms_norm", "positions": "rotary",
             "gated": True, "activation": "silu", "bias": False}
    trainer = tessera.Trainer(**gpt_components(text, model={"gpt": llama}))
    assert "pos_embed.weight" not in trainer.model.named_parameters()
    trainer.fit()
    folder = tmp_path / "llama"
    trainer.export_huggingface(folder)
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["num_key_value_heads"], config["hidden_act"]) == ("llama", 2, "silu")
    resumed = tessera.Trainer(**gpt_components(text, model={"gpt": {"pretrained": str(folder)}}))
    for name, value in trainer.model.named_parameters().items():
        assert torch.equal(resumed.model.named_parameters()[name], value), name
    assert resumed.evaluate() == trainer.evaluate()
    with pytest.raises(tessera.InputError, match=r"model\.gpt\.n_kv_heads: 4 given, but the pretrained checkpoint's"):
        tessera.Trainer(**gpt_components(text, model={"gpt": {"pretrained": str(folder), "n_kv_heads": 4}}))
    with pytest.raises(tessera.InputError, match="the model encodes positions by rotary embeddings"):
        tessera.Trainer(**gpt_components(text, model={"gpt": llama}), algorithms=[tessera.algorithms.Alibi()])
