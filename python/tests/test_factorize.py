"""Factorize from Python: the class and its keyword arguments, the functional forms against torch's SVD, the surgery
on a user's torch.nn.Module (the factors initialised from the SVD, in the optimizer, inside Squeeze-Excite's conv),
the refusal of a model with nothing to factorize, and a recipe model."""
import pytest
import torch
import torch.nn.functional as F

import tessera
import tessera.functional as TF
from conftest import tiny_components
from tessera.algorithms import Factorize, SqueezeExcite


def test_class_takes_its_options_and_refuses_bad_ones():
    assert Factorize().options == {"factorize_convs": True, "factorize_linears": True, "min_channels": 256,
                                   "latent_channels": 0.25, "min_features": 256, "latent_features": 128.0}
    assert Factorize(min_channels=16, latent_channels=0.5).options["latent_channels"] == 0.5
    assert Factorize().name == "factorize" and Factorize().spec().required_on_load
    assert "    min_features (" in Factorize.__doc__
    with pytest.raises(tessera.InputError, match=r"factorize\.latent_channels: 0 is out of range"):
        Factorize(latent_channels=0)
    with pytest.raises(tessera.InputError, match="both false"):
        Factorize(factorize_convs=False, factorize_linears=False)
    assert isinstance(tessera.algorithms.make({"factorize": {"min_channels": 8}}), Factorize)
    assert "factorize" in tessera.algorithms.registered()


def test_factorize_matrix_is_the_truncated_svd():
    torch.manual_seed(0)
    w = torch.randn(7, 5, dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    for rank in range(1, 6):
        first, second = TF.factorize_matrix(w, rank)
        assert first.shape == (rank, 5) and second.shape == (7, rank)
        error = torch.linalg.norm(w - second @ first).item()
        assert error == pytest.approx(s[rank:].pow(2).sum().sqrt().item(), abs=1e-12)
        assert torch.allclose(first @ first.T, torch.diag(s[:rank]), atol=1e-12)  # the even split
    first, second = TF.factorize_matrix(w, 5)
    assert torch.allclose(second @ first, w, atol=1e-12)
    with pytest.raises(tessera.InputError, match="rank 6 is out of range for a \\[7, 5\\] matrix; expected 1 to 5"):
        TF.factorize_matrix(w, 6)
    assert TF.factorize_latent(0.25, 64, 32) == 8 and TF.factorize_latent(128, 784, 256) == 128
    assert TF.factorize_reduces_cost(784, 256, 1, 128) and not TF.factorize_reduces_cost(256, 256, 1, 128)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, 1, 1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, 2, 1)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def test_surgery_on_a_python_module_then_training(tmp_path):
    torch.manual_seed(0)
    module = Net()
    conv2_weight, conv2_bias = module.conv2.weight.detach().clone(), module.conv2.bias.detach().clone()
    batch = tessera.data.synthetic(size=32, input_shape=[3, 8, 8], num_classes=4, seed=1)
    data = torch.utils.data.TensorDataset(batch["input"], batch["target"])
    factorize = Factorize(min_channels=8, latent_channels=0.25, min_features=4, latent_features=2)
    squeeze = SqueezeExcite(min_channels=8, latent_channels=2)
    trainer = tessera.Trainer(model=module, train_dataloader=torch.utils.data.DataLoader(data, batch_size=8),
                              optimizer={"sgd": {"lr": 0.1}}, algorithms=[factorize, squeeze], max_duration="1ep",
                              seed=3, run_dir=str(tmp_path))
    # squeeze_excite first (its rule), then the conv it keeps is factorized: conv2 (8 -> 16, rank 2), fc (16 -> 4,
    # rank 2); conv1 has 3 input channels.
    assert factorize.counts == {"convs": 1, "linears": 1} and squeeze.replaced == 1
    assert type(module.conv1) is torch.nn.Conv2d
    assert type(module.conv2).__name__ == "SqueezeExciteConv2d"
    factors = module.conv2.conv
    assert type(factors).__name__ == "FactorizedConv2d" and factors.rank == 2
    assert factors.module0.weight.shape == (2, 8, 3, 3) and factors.module0.stride == (2, 2)
    assert factors.module0.bias is None and factors.module1.weight.shape == (16, 2, 1, 1)
    assert torch.equal(factors.module1.bias, conv2_bias)
    # The product of the factors is the rank-2 truncation of the conv's weight.
    u, s, vh = torch.linalg.svd(conv2_weight.reshape(16, -1).double(), full_matrices=False)
    best = (u[:, :2] * s[:2]) @ vh[:2]
    product = factors.module1.weight.reshape(16, 2).double() @ factors.module0.weight.reshape(2, -1).double()
    assert torch.allclose(product, best, atol=1e-5)
    assert type(module.fc).__name__ == "FactorizedLinear" and module.fc.module0.weight.shape == (2, 16)
    assert {"conv2.conv.module0.weight", "conv2.conv.module1.weight", "conv2.conv.module1.bias", "fc.module0.weight",
            "fc.module1.weight", "fc.module1.bias"} <= set(module.state_dict())
    before = factors.module0.weight.detach().clone()
    trainer.fit()
    assert not torch.equal(factors.module0.weight, before), "the factors are in the optimizer"
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_model_with_nothing_to_factorize_is_refused(tmp_path):
    batch = tessera.data.synthetic(size=16, input_shape=[3, 8, 8], num_classes=4, seed=1)
    data = torch.utils.data.TensorDataset(batch["input"], batch["target"])
    with pytest.raises(tessera.InputError, match=r"no Conv2d with at least 256 input and output channels \(min_channels\) "
                                                 r"and no Linear with at least 256 input and output features \(min_features\)"):
        tessera.Trainer(model=Net(), train_dataloader=torch.utils.data.DataLoader(data, batch_size=8),
                        optimizer={"sgd": {"lr": 0.1}}, algorithms=[Factorize()], max_duration="1ep",
                        run_dir=str(tmp_path))


def test_recipe_model(tmp_path):
    # CNN width 4: conv2 (4 -> 8) and conv3 (8 -> 16) at rank 2.
    factorize = Factorize(min_channels=4, latent_channels=2, factorize_linears=False)
    trainer = tessera.Trainer(**tiny_components(algorithms=[factorize], run_dir=str(tmp_path)))
    assert factorize.counts == {"convs": 2, "linears": 0}
    trainer.fit()
