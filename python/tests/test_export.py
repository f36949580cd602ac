"""Weights for other programs: trainer.export_weights writes a safetensors file under the module's own names, and a
safetensors file loads back into a run (weights_only)."""
import json
import struct

import pytest
import torch

import tessera


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


def trainer_for(module, tmp_path, steps=4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    return tessera.Trainer(model=module, train_dataloader=torch.utils.data.DataLoader(data, batch_size=16),
                           optimizer={"adam": {"lr": 0.01}}, max_duration=f"{steps}ba", threads=1, seed=0,
                           run_dir=str(tmp_path))


def read_safetensors(path):
    """A minimal reader of the format (PyPI's safetensors is not a dependency of these tests)."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": torch.float32, "I64": torch.int64}
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        begin, end = spec["data_offsets"]
        chunk = bytearray(raw[8 + n + begin:8 + n + end])
        out[name] = torch.frombuffer(chunk, dtype=dtypes[spec["dtype"]]).reshape(spec["shape"]) if chunk else \
            torch.empty(spec["shape"], dtype=dtypes[spec["dtype"]])
    return out, header.get("__metadata__", {})


def test_exported_weights_are_the_modules_state_dict_and_load_back(tmp_path):
    module = Net()
    trainer = trainer_for(module, tmp_path)
    trainer.fit()
    path = tmp_path / "export" / "weights.safetensors"
    trainer.export_weights(path)
    tensors, metadata = read_safetensors(path)
    state = module.state_dict()
    assert sorted(tensors) == sorted(state)
    for name, value in state.items():
        assert torch.equal(tensors[name], value), name
    assert metadata["format"] == "pt" and metadata["batch"] == "4"

    fresh = Net()
    other = trainer_for(fresh, tmp_path / "other")
    assert not torch.equal(fresh.head.weight, module.head.weight)
    other.load_checkpoint(path, weights_only=True)
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, state[name]), name
    with pytest.raises(tessera.InputError, match="holds weights only, not a run to resume; pass weights_only=true"):
        trainer_for(Net(), tmp_path / "third").load_checkpoint(path)
