"""Ghost BatchNorm and Squeeze-Excite from Python: the classes and their keyword arguments, the functional forms
against torch and hand computation, the surgery on a user's torch.nn.Module (the same tensors for Ghost BatchNorm,
the new SE parameters in the optimizer), and a recipe model."""
import pytest
import torch
import torch.nn.functional as F

import tessera
import tessera.functional as TF
from tessera.algorithms import GhostBatchNorm, SqueezeExcite


def test_classes_take_their_options_and_refuse_bad_ones():
    assert GhostBatchNorm().options == {"ghost_batch_size": 32}
    assert SqueezeExcite().options == {"latent_channels": 64.0, "min_channels": 128}
    assert GhostBatchNorm(ghost_batch_size=8).name == "ghost_batchnorm"
    assert SqueezeExcite(latent_channels=0.25, min_channels=16).options["latent_channels"] == 0.25
    assert "    ghost_batch_size (" in GhostBatchNorm.__doc__ and "    min_channels (" in SqueezeExcite.__doc__
    with pytest.raises(tessera.InputError, match=r"ghost_batchnorm\.ghost_batch_size: 0 is out of range"):
        GhostBatchNorm(ghost_batch_size=0)
    with pytest.raises(tessera.InputError, match='did you mean "min_channels"'):
        SqueezeExcite(min_channel=3)
    assert isinstance(tessera.algorithms.make({"squeeze_excite": {"min_channels": 8}}), SqueezeExcite)
    assert {"ghost_batchnorm", "squeeze_excite"} <= set(tessera.algorithms.registered())
    assert GhostBatchNorm().spec().required_on_load and SqueezeExcite().spec().required_on_load


def test_ghost_batch_norm_is_torch_batch_norm_per_chunk():
    torch.manual_seed(0)
    x = torch.randn(10, 3, 4, 4)
    w, b = torch.rand(3) + 0.5, torch.randn(3)
    mean, var = torch.randn(3), torch.rand(3) + 0.5
    ref_mean, ref_var = mean.clone(), var.clone()
    expected = torch.cat([F.batch_norm(c, ref_mean, ref_var, w, b, training=True, momentum=0.1 / 3)
                          for c in x.chunk(3)])
    counter = torch.tensor(0)
    y = TF.ghost_batch_norm(x, mean, var, w, b, training=True, momentum=0.1, ghost_batch_size=4,
                            num_batches_tracked=counter)
    assert torch.equal(y, expected)
    assert torch.equal(mean, ref_mean) and torch.equal(var, ref_var) and counter.item() == 3
    # evaluation: torch's batch norm with the running statistics, whole batch
    assert torch.equal(TF.ghost_batch_norm(x, mean, var, w, b, training=False, ghost_batch_size=4),
                       F.batch_norm(x, mean, var, w, b, training=False))


def test_squeeze_excite_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0]).view(1, 2, 2, 2)
    w1, w2 = torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0], [-4.0]])
    y = TF.squeeze_excite(x, w1, w2)  # hidden relu(2.5 - 2) = 0.5: gates sigmoid(1), sigmoid(-2)
    gates = torch.sigmoid(torch.tensor([1.0, -2.0])).view(1, 2, 1, 1)
    assert torch.allclose(y, x * gates)
    assert TF.squeeze_excite_latent(0.25, 10) == 2 and TF.squeeze_excite_latent(64, 10) == 64


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, 1, 1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, 2, 1)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def test_surgery_on_a_python_module_then_training(tmp_path):
    torch.manual_seed(0)
    module = Net()
    bn_weight = module.bn1.weight
    keys_before = set(module.state_dict())
    batch = tessera.data.synthetic(size=32, input_shape=[3, 8, 8], num_classes=4, seed=1)
    data = torch.utils.data.TensorDataset(batch["input"], batch["target"])
    ghost, squeeze = GhostBatchNorm(ghost_batch_size=4), SqueezeExcite(min_channels=8, latent_channels=2)
    trainer = tessera.Trainer(model=module, train_dataloader=torch.utils.data.DataLoader(data, batch_size=8),
                              optimizer={"sgd": {"lr": 0.1}}, algorithms=[ghost, squeeze], max_duration="1ep",
                              seed=3, run_dir=str(tmp_path))
    assert ghost.replaced == 2 and squeeze.replaced == 1  # conv2 (8 -> 8); conv1 has 3 input channels
    assert type(module.bn1).__name__ == "GhostBatchNorm" and module.bn1.weight is bn_weight
    assert type(module.conv2).__name__ == "SqueezeExciteConv2d" and type(module.conv1) is torch.nn.Conv2d
    assert set(module.state_dict()) - keys_before == {"conv2.conv.weight", "conv2.conv.bias", "conv2.se.fc1.weight",
                                                       "conv2.se.fc2.weight"}
    fc1_before = module.conv2.se.fc1.weight.detach().clone()
    trainer.fit()
    assert not torch.equal(module.conv2.se.fc1.weight, fc1_before), "the SE parameters are in the optimizer"
    assert module.bn1.num_batches_tracked.item() == 4 * 2  # 4 batches of 8, two ghost batches each
    # evaluation is the batch norm
    module.eval()
    x = torch.randn(5, 8, 4, 4)
    assert torch.equal(module.bn2(x), F.batch_norm(x, module.bn2.running_mean, module.bn2.running_var,
                                                   module.bn2.weight, module.bn2.bias, training=False))

