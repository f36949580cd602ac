"""Python plugins keep plain Python values in checkpoints, exactly, and unstorable values fail before step 1."""
import math

import pytest
import torch

import tessera
from conftest import tiny_components


class Counting(tessera.Algorithm):
    """What a Composer user writes: plain numbers in state_dict()."""

    spec = tessera.AlgorithmSpec(name="counting", accesses=[tessera.Access("batch_end")])

    def __init__(self):
        super().__init__()
        self.n = 0
        self.extra = {}

    def apply(self, event, state, logger):
        self.n += 1

    def state_dict(self):
        return {"n": self.n, **self.extra}

    def load_state_dict(self, state):
        self.loaded = state
        self.n = state["n"]


class CountingCallback(tessera.Callback):
    def __init__(self):
        super().__init__()
        self.seen = 0

    def batch_end(self, state, logger):
        self.seen += 1

    def state_dict(self):
        return {"seen": self.seen, "history": [self.seen, "batches"]}

    def load_state_dict(self, state):
        self.loaded = state


def test_plain_values_round_trip_exactly_through_a_checkpoint(tmp_path):
    algorithm, callback = Counting(), CountingCallback()
    weights = torch.arange(3, dtype=torch.float64)
    algorithm.extra = {
        "rate": 0.1, "third": 1 / 3, "big": 2**70, "flag": True, "off": False, "label": "warm",
        "none": None, "nan": math.nan, "nested": {"a": [1, 2.5, {"b": "c"}], "t": weights}, "top": weights * 2,
        "pair": (1, 2),
    }
    trainer = tessera.Trainer(**tiny_components(max_duration="1ep"), algorithms=[algorithm], callbacks=[callback])
    trainer.fit()
    assert algorithm.n == 4
    path = tmp_path / "c.pt"
    trainer.save_checkpoint(path)

    fresh, fresh_cb = Counting(), CountingCallback()
    other = tessera.Trainer(**tiny_components(max_duration="1ep"), algorithms=[fresh], callbacks=[fresh_cb])
    other.load_checkpoint(path)
    got = fresh.loaded
    assert fresh.n == 4 and type(got["n"]) is int
    for key in ("rate", "third", "big", "flag", "off", "label", "none"):
        assert got[key] == algorithm.extra[key] and type(got[key]) is type(algorithm.extra[key]), key
    assert math.isnan(got["nan"])
    assert got["nested"]["a"] == [1, 2.5, {"b": "c"}] and type(got["nested"]["a"][0]) is int
    assert torch.equal(got["nested"]["t"], weights) and got["nested"]["t"].dtype == torch.float64
    assert torch.equal(got["top"], weights * 2)
    assert got["pair"] == [1, 2]  # tuples come back as lists
    assert fresh_cb.loaded == {"seen": 4, "history": [4, "batches"]}


def test_a_value_a_checkpoint_cannot_store_fails_at_construction_naming_plugin_key_and_type():
    algorithm = Counting()
    algorithm.extra = {"nested": {"ok": 1, "bad": [0, {1, 2}]}}
    with pytest.raises(tessera.InputError) as info:
        tessera.Trainer(**tiny_components(), algorithms=[algorithm])
    message = str(info.value)
    assert 'algorithm "counting"' in message
    assert "state_dict()['nested']['bad'][1]" in message
    assert "(set)" in message and "int, float, bool, str" in message
    assert algorithm.n == 0  # refused before step 1

    class BadKeys(tessera.Callback):
        name = "bad_keys"

        def state_dict(self):
            return {"ok": {3: "three"}}

    with pytest.raises(tessera.InputError, match=r'callback "bad_keys": state_dict\(\)\[\'ok\'\] has the key 3 \(int\)'):
        tessera.Trainer(**tiny_components(), callbacks=[BadKeys()])

    class NotADict(tessera.Callback):
        name = "not_a_dict"

        def state_dict(self):
            return [1, 2]

    with pytest.raises(tessera.InputError, match=r'callback "not_a_dict": state_dict\(\) must return a dict, got \[1, 2\] \(list\)'):
        tessera.Trainer(**tiny_components(), callbacks=[NotADict()])


def test_tensor_only_state_is_stored_as_before(tmp_path):
    class Tensors(tessera.Callback):
        def state_dict(self):
            return {"w": torch.ones(2)}

        def load_state_dict(self, state):
            self.loaded = state

    trainer = tessera.Trainer(**tiny_components(max_duration="1ba"), callbacks=[Tensors()])
    trainer.save_checkpoint(tmp_path / "c.pt")
    fresh = Tensors()
    tessera.Trainer(**tiny_components(max_duration="1ba"), callbacks=[fresh]).load_checkpoint(tmp_path / "c.pt")
    assert list(fresh.loaded) == ["w"] and torch.equal(fresh.loaded["w"], torch.ones(2))
