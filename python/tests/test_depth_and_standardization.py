"""Stochastic Depth and Weight Standardization from Python: the classes and their keyword arguments, the functional
forms against torch and hand computation, weight standardization's surgery on a user's torch.nn.Module (the same
tensors), stochastic depth on the recipe ResNet and its refusal on a Python module."""
import math

import pytest
import torch
import torch.nn.functional as F

import tessera
import tessera.functional as TF
from conftest import tiny_components
from tessera.algorithms import StochasticDepth, WeightStandardization


def test_classes_take_their_options_and_refuse_bad_ones():
    assert StochasticDepth().options == {"stochastic_method": "block", "drop_rate": 0.2,
                                         "drop_distribution": "linear", "drop_warmup": 0.0}
    assert WeightStandardization().options == {"n_last_layers_ignore": 0, "eps": 1e-5}
    assert StochasticDepth(stochastic_method="sample").name == "stochastic_depth"
    assert WeightStandardization(n_last_layers_ignore=2).options["n_last_layers_ignore"] == 2
    with pytest.raises(tessera.InputError, match=r"stochastic_depth\.drop_rate: 1.5 is out of range"):
        StochasticDepth(drop_rate=1.5)
    with pytest.raises(tessera.InputError, match=r"stochastic_depth\.stochastic_method"):
        StochasticDepth(stochastic_method="layer")
    with pytest.raises(tessera.InputError, match=r"weight_standardization\.eps"):
        WeightStandardization(eps=0)
    assert isinstance(tessera.algorithms.make({"stochastic_depth": {"drop_rate": 0.1}}), StochasticDepth)
    assert isinstance(tessera.algorithms.make("weight_standardization"), WeightStandardization)
    assert {"stochastic_depth", "weight_standardization"} <= set(tessera.algorithms.registered())
    assert StochasticDepth().spec().required_on_load and WeightStandardization().spec().required_on_load


def test_drop_rates_and_the_gate_by_hand():
    assert TF.stochastic_depth_drop_rates(4, 0.2) == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert TF.stochastic_depth_drop_rates(3, 0.3, "uniform") == [0.3, 0.3, 0.3]
    torch.manual_seed(0)
    branch = torch.randn(6, 2, 3, 3)
    rng, copy = tessera.Rng(5), tessera.Rng(5)
    y = TF.stochastic_depth(branch, 0.5, "sample", True, rng)  # rng advanced in place: one draw per example
    mask = torch.tensor([math.floor(0.5 + copy.uniform()) for _ in range(6)], dtype=branch.dtype)
    assert torch.equal(y, branch * mask.view(6, 1, 1, 1))
    assert torch.equal(TF.stochastic_depth(branch, 0.25, "block", training=False), branch * 0.75)
    with pytest.raises(tessera.InputError, match='mode "layer" is not allowed'):
        TF.stochastic_depth(branch, 0.2, "layer")


def test_standardize_weight_has_zero_mean_and_unit_variance_and_matches_torch():
    torch.manual_seed(1)
    w = torch.randn(8, 3, 3, 3) * 4 + 1
    s = TF.standardize_weight(w)
    var, mean = torch.var_mean(w, dim=[1, 2, 3], keepdim=True, unbiased=False)
    assert torch.allclose(s, (w - mean) / torch.sqrt(var + 1e-5), atol=1e-6)
    assert s.view(8, -1).mean(1).abs().max() < 1e-5
    assert (s.view(8, -1).var(1, unbiased=False) - 1).abs().max() < 1e-4


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, 1, 1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, 2, 1, padding_mode="reflect")
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.head(x).mean((2, 3))


def test_weight_standardization_on_a_python_module_then_training(tmp_path):
    torch.manual_seed(0)
    module = Net()
    weight, keys = module.conv2.weight, set(module.state_dict())
    batch = tessera.data.synthetic(size=32, input_shape=[3, 8, 8], num_classes=4, seed=1)
    data = torch.utils.data.TensorDataset(batch["input"], batch["target"])
    ws = WeightStandardization(n_last_layers_ignore=1)
    trainer = tessera.Trainer(model=module, train_dataloader=torch.utils.data.DataLoader(data, batch_size=8),
                              optimizer={"sgd": {"lr": 0.1}}, algorithms=[ws], max_duration="1ep", seed=3,
                              run_dir=str(tmp_path))
    assert ws.replaced == 2, "conv1 and conv2; the head (the last conv) is ignored"
    assert type(module.conv2).__name__ == "WeightStandardizedConv" and type(module.head) is torch.nn.Conv2d
    assert module.conv2.weight is weight and set(module.state_dict()) == keys
    x = torch.randn(2, 8, 6, 6)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), TF.standardize_weight(weight), module.conv2.bias, 2)
    assert torch.allclose(module.conv2(x), expected, atol=1e-6)
    before = weight.detach().clone()
    trainer.fit()
    assert not torch.equal(weight, before), "the raw weight trains through the standardization"


def test_stochastic_depth_on_the_recipe_resnet_and_refused_on_a_python_module(tmp_path):
    sd = StochasticDepth(drop_rate=0.3)
    trainer = tessera.Trainer(**tiny_components(model={"resnet": {"depth": 8, "width": 4}}, algorithms=[sd],
                                                run_dir=str(tmp_path / "a")))
    trainer.fit()
    assert sd.drop_rates == pytest.approx([0.1, 0.2, 0.3])
    batch = tessera.data.synthetic(size=32, input_shape=[3, 8, 8], num_classes=4, seed=1)
    data = torch.utils.data.TensorDataset(batch["input"], batch["target"])
    with pytest.raises(tessera.InputError, match="stochastic_depth: changes the model's structure, and has no surgery "
                                                 "for Python modules"):
        tessera.Trainer(model=Net(), train_dataloader=torch.utils.data.DataLoader(data, batch_size=8),
                        optimizer={"sgd": {"lr": 0.1}}, algorithms=[StochasticDepth()], max_duration="1ep",
                        run_dir=str(tmp_path / "b"))
