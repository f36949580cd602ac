"""Low-precision GroupNorm from Python: on the resnet model with GroupNorms (recipe options, the surgery's count,
refused without mixed precision), its functional form, and on a user's torch.nn.Module (the same Parameters under
the same names, bf16 outputs under amp_bf16)."""
import pytest
import torch

import tessera
import tessera.functional as TF
from conftest import tiny_components

GROUP_RESNET = {"resnet": {"depth": 8, "width": 4, "norm": "group", "groups": 2}}


def test_on_the_resnet_with_group_norms():
    algorithm = tessera.algorithms.LowPrecisionGroupNorm()
    trainer = tessera.Trainer(**tiny_components(model=GROUP_RESNET, precision="amp_bf16", max_duration="2ba"),
                              algorithms=[algorithm])
    trainer.fit()
    assert algorithm.replaced == 9  # the stem's, two per block, the projections of stages 2 and 3
    assert torch.isfinite(trainer.state.loss).item()
    with pytest.raises(tessera.InputError, match="without mixed precision it changes nothing"):
        tessera.Trainer(**tiny_components(model=GROUP_RESNET), algorithms=[tessera.algorithms.LowPrecisionGroupNorm()])
    with pytest.raises(tessera.InputError, match="the model has no torch::nn::GroupNorm in a slot"):
        tessera.Trainer(**tiny_components(precision="amp_bf16"),
                        algorithms=[tessera.algorithms.LowPrecisionGroupNorm()])
    with pytest.raises(tessera.InputError, match="does not divide the width"):
        tessera.Trainer(**tiny_components(model={"resnet": {"width": 6, "norm": "group", "groups": 4}}))


def test_functional_form():
    x, w, b = torch.randn(2, 6, 3, 3), torch.randn(6), torch.randn(6)
    assert torch.equal(TF.low_precision_group_norm(x, 3, w, b), torch.nn.functional.group_norm(x, 3, w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = TF.low_precision_group_norm(x, 3, w, b)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, torch.nn.functional.group_norm(x.bfloat16(), 3, w.bfloat16(), b.bfloat16()))


def test_on_a_users_module():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.norm = torch.nn.GroupNorm(4, 8)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(self.norm(self.conv(x)).relu().mean((2, 3)))

    net = Net()
    weight = net.norm.weight
    dtypes = []
    trainer = tessera.Trainer(**tiny_components(model=net, precision="amp_bf16", max_duration="2ba"),
                              algorithms=[tessera.algorithms.LowPrecisionGroupNorm()])
    net.norm.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer.fit()
    assert type(net.norm).__name__ == "LowPrecisionGroupNorm" and net.norm.weight is weight
    assert set(dtypes) == {torch.bfloat16}
    assert set(net.state_dict()) == {"conv.weight", "conv.bias", "norm.weight", "norm.bias", "fc.weight", "fc.bias"}
