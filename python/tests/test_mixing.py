"""MixUp and CutMix from Python: the classes, the functional forms against hand computation, and a training run
whose loss is the interpolated cross-entropy."""
import pytest
import torch
import torch.nn.functional as F

import tessera
import tessera.functional as TF
from tessera.algorithms import CutMix, MixUp


def test_classes_take_their_options_and_refuse_bad_ones():
    assert MixUp().options == {"alpha": 0.2}
    assert CutMix().options == {"alpha": 1.0, "uniform_sampling": False}
    assert MixUp(alpha=1.0).name == "mixup" == MixUp().spec().name
    assert CutMix(uniform_sampling=True).name == "cutmix"
    assert "    alpha (" in MixUp.__doc__ and "    uniform_sampling (" in CutMix.__doc__
    with pytest.raises(tessera.InputError, match=r"mixup\.alpha: -1 is out of range"):
        MixUp(alpha=-1)
    assert isinstance(tessera.algorithms.make({"cutmix": {"alpha": 0.5}}), CutMix)
    assert {"cutmix", "mixup"} <= set(tessera.algorithms.registered())
    with pytest.raises(tessera.InputError, match="cutmix and mixup cannot be combined|mixup and cutmix cannot be combined"):
        tessera.plan([MixUp(), CutMix()])


def test_mixup_batch_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = torch.tensor([0, 1, 2])
    mixed, y_perm, mixing = TF.mixup_batch(x, y, mixing=0.25, indices=torch.tensor([2, 0, 1]))
    assert torch.equal(mixed, torch.tensor([[4.0, 5.0], [1.5, 2.5], [3.5, 4.5]]))
    assert torch.equal(y_perm, torch.tensor([2, 0, 1])) and mixing == 0.25
    # drawn: the same draws from the same seed, and a tessera.Rng advances in place
    a = TF.mixup_batch(x, y, alpha=1.0, rng=7)
    b = TF.mixup_batch(x, y, alpha=1.0, rng=7)
    assert torch.equal(a[0], b[0]) and a[2] == b[2] and 0.0 <= a[2] <= 1.0
    rng = tessera.Rng(7)
    first = TF.mixup_batch(x, y, alpha=1.0, rng=rng)
    assert first[2] == a[2] and TF.mixup_batch(x, y, alpha=1.0, rng=rng)[2] != a[2]
    assert TF.sample_mixing(0.0) == 1.0
    with pytest.raises(tessera.InputError, match=r"mixup_batch\.indices"):
        TF.mixup_batch(x, y, mixing=0.5, indices=torch.tensor([0, 1]))


def test_cutmix_batch_by_hand():
    x = torch.arange(32.0).view(2, 1, 4, 4)
    y = torch.tensor([0, 1])
    mixed, y_perm, lam, bbox = TF.cutmix_batch(x, y, bbox=(1, 2, 3, 3), indices=torch.tensor([1, 0]))
    expected = x.clone()
    expected[:, :, 1:3, 2:3] = x.flip(0)[:, :, 1:3, 2:3]
    assert torch.equal(mixed, expected)
    assert torch.equal(y_perm, torch.tensor([1, 0])) and lam == 1 - 2 / 16 and bbox == (1, 2, 3, 3)
    drawn = TF.cutmix_batch(x, y, alpha=1.0, rng=3)
    top, left, bottom, right = drawn[3]
    assert drawn[2] == 1 - (bottom - top) * (right - left) / 16
    with pytest.raises(tessera.InputError, match="give both bbox and indices"):
        TF.cutmix_batch(x, y, bbox=(0, 0, 1, 1))


def test_mixed_loss_is_the_interpolated_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    y = torch.randint(0, 4, (6,))
    _, y_perm, lam = TF.mixup_batch(torch.randn(6, 3), y, alpha=1.0, rng=1)
    loss = TF.mixed_loss(F.cross_entropy(logits, y), F.cross_entropy(logits, y_perm), lam)
    assert torch.equal(loss, F.cross_entropy(logits, y) * lam + F.cross_entropy(logits, y_perm) * (1 - lam))
    dense = F.one_hot(y, 4).float() * lam + F.one_hot(y_perm, 4).float() * (1 - lam)
    assert torch.allclose(loss, F.cross_entropy(logits, dense), atol=1e-6)


@pytest.mark.parametrize("cls", [MixUp, CutMix], ids=lambda c: c.__name__)
def test_training_with_a_torch_module(cls):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(64, 3))
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(32, 1, 4, 4), torch.randint(0, 3, (32,))), batch_size=8)
    alg = cls(alpha=1.0)
    trainer = tessera.Trainer(model=net, train_dataloader=data, optimizer={"sgd": {"lr": 0.1}}, algorithms=[alg],
                              max_duration="1ep", threads=1)
    trainer.fit()
    assert 0.0 <= alg.last_lambda <= 1.0
    assert trainer.trace[alg.name + "/after_dataloader"]["count"] == 4
