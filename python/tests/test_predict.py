"""Trainer.predict: the model's outputs on new data, with the predict_* events."""
import pytest
import torch

import tessera
from conftest import tiny_components


class PredictEvents(tessera.Callback):
    """Records the predict_* events in order."""

    name = "predict_events"

    def __init__(self):
        super().__init__()
        self.seen = []

    def run_event(self, event, state, logger):
        if str(event).startswith("predict"):
            self.seen.append(str(event))


def _trained(**overrides):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Dropout(0.5),
                                torch.nn.Linear(16, 4))
    kwargs = tiny_components(max_duration="2ba", **overrides)
    del kwargs["model"]
    events = PredictEvents()
    trainer = tessera.Trainer(**kwargs, model=model, callbacks=[events])
    trainer.fit()
    return trainer, model, events


def test_predict_returns_the_outputs_of_each_batch_in_evaluation_mode():
    trainer, model, events = _trained()
    inputs = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    loader = torch.utils.data.DataLoader(inputs, batch_size=16)  # bare input tensors: no targets
    model.train()
    outputs = trainer.predict(loader)
    assert model.training, "predict restores the module's mode"
    assert [tuple(o.shape) for o in outputs] == [(16, 4), (16, 4), (8, 4)]
    model.eval()  # dropout off: what predict ran in
    with torch.no_grad():
        want = [model(batch) for batch in loader]
    assert all(torch.equal(o, w) for o, w in zip(outputs, want))
    assert not any(o.requires_grad for o in outputs)
    per_batch = ["predict_batch_start", "predict_before_forward", "predict_after_forward", "predict_batch_end"]
    assert events.seen == ["predict_start"] + 3 * per_batch + ["predict_end"]

    first = trainer.predict(loader, subset_batches=1)
    assert len(first) == 1 and torch.equal(first[0], outputs[0])


def test_predict_takes_tuples_and_runs_in_eval_precision():
    trainer, _, _ = _trained(eval_precision="amp_bf16")
    data = [(torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    outputs = trainer.predict(data)
    assert [o.dtype for o in outputs] == [torch.bfloat16, torch.bfloat16]


def test_predict_refuses_what_is_not_a_loader():
    trainer, _, _ = _trained()
    with pytest.raises(tessera.InputError, match="predict: data is a dict; expected a torch.utils.data.DataLoader"):
        trainer.predict({"input": torch.randn(4, 1, 8, 8)})
    with pytest.raises(tessera.InputError, match="predict: data is a Tensor"):
        trainer.predict(torch.randn(4, 1, 8, 8))
