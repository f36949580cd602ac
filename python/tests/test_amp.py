"""Mixed precision, loss scaling and automatic microbatching from Python (issue 15)."""
import pytest
import torch

import tessera
from conftest import tiny_components


class OutputDtype(tessera.Callback):
    """Records the dtype of the model's outputs at every after_forward."""

    name = "output_dtype"

    def __init__(self):
        super().__init__()
        self.seen = set()

    def run_event(self, event, state, logger):
        if str(event) == "after_forward":
            self.seen.add(state.outputs.dtype)


def test_amp_bf16_runs_the_forward_in_bfloat16_and_keeps_the_weights_float32():
    dtypes = OutputDtype()
    trainer = tessera.Trainer(**tiny_components(precision="amp_bf16", max_duration="2ba"), callbacks=[dtypes])
    trainer.fit()
    assert dtypes.seen == {torch.bfloat16}
    assert trainer.state.precision == "amp_bf16"
    assert trainer.options["precision"] == "amp_bf16"
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert trainer.loss_scale is None  # bfloat16 needs no loss scaling unless asked


def test_a_python_model_runs_under_autocast_too():
    dtypes = OutputDtype()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    kwargs = tiny_components(precision="amp_bf16", max_duration="2ba")
    del kwargs["model"]
    trainer = tessera.Trainer(**kwargs, model=model, callbacks=[dtypes])
    trainer.fit()
    assert dtypes.seen == {torch.bfloat16}


def test_a_python_model_with_group_and_layer_norms_trains_under_autocast():
    # A GroupNorm after a convolution and a LayerNorm after a linear layer get bfloat16 inputs with float32 weights
    # (torch 1.13's CPU kernels refuse that mix by themselves; Tessera's autocast fills it in there).
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.GroupNorm(2, 4), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(256, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    before = [p.detach().clone() for p in model.parameters()]
    dtypes = OutputDtype()
    kwargs = tiny_components(precision="amp_bf16", max_duration="2ba")
    del kwargs["model"]
    trainer = tessera.Trainer(**kwargs, model=model, callbacks=[dtypes])
    trainer.fit()
    assert dtypes.seen == {torch.bfloat16}
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_eval_precision_autocasts_the_evaluation_forward_only():
    class Dtypes(tessera.Callback):
        name = "dtypes"

        def __init__(self):
            super().__init__()
            self.seen = {}

        def run_event(self, event, state, logger):
            if str(event) in ("after_forward", "eval_after_forward"):
                self.seen.setdefault(str(event), set()).add(state.outputs.dtype)

    dtypes = Dtypes()
    eval_data = tiny_components()["train_data"]
    trainer = tessera.Trainer(**tiny_components(eval_precision="amp_bf16", max_duration="2ba", eval_interval="1ba"),
                              eval_data=eval_data, callbacks=[dtypes])
    trainer.fit()
    assert dtypes.seen == {"after_forward": {torch.float32}, "eval_after_forward": {torch.bfloat16}}
    assert trainer.options["eval_precision"] == "amp_bf16"
    with pytest.raises(tessera.InputError, match="eval_precision: amp_fp16 cannot run on cpu"):
        tessera.Trainer(**tiny_components(eval_precision="amp_fp16", device="cpu"))


def test_loss_scaling_dynamic_reports_the_scale_and_skipped_steps():
    trainer = tessera.Trainer(**tiny_components(loss_scaling="dynamic", max_duration="2ba"))
    trainer.fit()
    assert trainer.loss_scale == 65536.0
    assert trainer.skipped_steps == 0


def test_amp_fp16_on_the_cpu_is_refused_with_the_reason():
    with pytest.raises(tessera.InputError, match="amp_fp16 cannot run on cpu.*amp_bf16"):
        tessera.Trainer(**tiny_components(precision="amp_fp16", device="cpu"))
    with pytest.raises(tessera.InputError, match="precision"):
        tessera.Trainer(**tiny_components(precision="fp16"))


def test_microbatch_size_takes_auto_or_a_number():
    trainer = tessera.Trainer(**tiny_components(microbatch_size="auto", max_duration="2ba"))
    assert trainer.options["microbatch_size"] == "auto"
    trainer.fit()
    assert trainer.state.microbatch_size == 0  # no out-of-memory error: the whole batch at once
    assert tessera.Trainer(**tiny_components(microbatch_size=4)).options["microbatch_size"] == 4
    with pytest.raises(tessera.InputError, match="microbatch_size.*\"half\".*auto"):
        tessera.Trainer(**tiny_components(microbatch_size="half"))
    with pytest.raises(tessera.InputError, match="microbatch_size"):
        tessera.Trainer(**tiny_components(microbatch_size=-1))


def test_auto_microbatching_with_injected_out_of_memory_equals_the_found_size(monkeypatch):
    fixed = tessera.Trainer(**tiny_components(microbatch_size=4))
    fixed.fit()
    monkeypatch.setenv("TESSERA_TEST_OOM_ABOVE", "5")  # 16 fails, 8 fails, 4 fits
    auto = tessera.Trainer(**tiny_components(microbatch_size="auto"))
    auto.fit()
    assert auto.state.microbatch_size == 4
    assert auto.weights_fingerprint() == fixed.weights_fingerprint()
