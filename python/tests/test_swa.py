"""SWA from Python: keyword arguments, the functional forms (the running mean against torch's own mean, the annealed
learning rate against its formula), and the algorithm object training like its recipe entry, with its average
replacing the weights at swa_end; a PyTorch model whose batch-norm statistics it cannot recompute is refused before
step 1 with the reason."""
import copy
import math

import pytest
import torch

import tessera
import tessera.functional as TF
from tessera.algorithms import SWA


def test_keyword_arguments_defaults_and_validation():
    assert SWA().options == {
        "swa_start": "0.7dur",
        "swa_end": "0.97dur",
        "update_interval": "1ep",
        "schedule_swa_lr": False,
        "anneal_strategy": "linear",
        "anneal_steps": 10,
        "swa_lr": 0.0,
        "recompute_batchnorm": True,
    }
    assert SWA(swa_start="2ep", swa_end="4ep").options["swa_end"] == "4ep"
    assert SWA().name == "swa" == SWA().spec().name
    with pytest.raises(tessera.InputError, match=r"swa\.anneal_strategy"):
        SWA(anneal_strategy="step")
    with pytest.raises(tessera.InputError, match=r"swa\.swa_end: 0\.5dur is not after swa_start 0\.8dur"):
        SWA(swa_start="0.8dur", swa_end="0.5dur")
    with pytest.raises(tessera.InputError, match=r'swa\.update_interval: "0\.1dur" is not supported'):
        SWA(update_interval="0.1dur")


def test_swa_update_is_the_running_mean_of_the_snapshots():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    average = copy.deepcopy(net)
    snapshots = []
    for count in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net[1].running_mean.normal_()
            net[1].num_batches_tracked.fill_(count + 7)
        snapshots.append({n: t.clone() for n, t in net.state_dict().items()})
        TF.swa_update(average, net, count)
    for name, t in average.state_dict().items():
        if name.endswith("num_batches_tracked"):
            assert t.item() == 10  # integer buffers are copied
        else:
            mean = torch.stack([s[name] for s in snapshots]).mean(0)
            assert torch.allclose(t, mean, rtol=1e-5, atol=1e-6), name
    with pytest.raises(tessera.InputError, match="swa_update: count must be >= 0"):
        TF.swa_update(average, net, -1)


def test_swa_annealed_lr_is_the_formula():
    assert TF.swa_annealed_lr(0.1, 0.02, 0.0) == 0.1
    assert TF.swa_annealed_lr(0.1, 0.02, 1.0, "cos") == 0.02
    assert TF.swa_annealed_lr(0.1, 0.02, 0.5) == pytest.approx(0.06, rel=1e-15)
    f = (1 - math.cos(math.pi * 0.25)) / 2
    assert TF.swa_annealed_lr(0.1, 0.02, 0.25, "cos") == pytest.approx((1 - f) * 0.1 + f * 0.02, rel=1e-15)
    assert TF.swa_annealed_lr(0.1, 0.02, 7.0) == 0.02  # progress is clamped
    with pytest.raises(tessera.InputError, match=r"swa_annealed_lr\.anneal_strategy"):
        TF.swa_annealed_lr(0.1, 0.02, 0.5, "cosine")


def test_the_algorithm_trains_like_its_recipe_entry_and_applies_its_average():
    from conftest import tiny_components

    options = {"swa_start": "2ba", "swa_end": "6ba", "update_interval": "1ba", "schedule_swa_lr": True,
               "anneal_steps": 2, "swa_lr": 0.01}
    swa = SWA(**options)
    a = tessera.Trainer(**tiny_components(max_duration="8ba"), algorithms=[swa])
    a.fit()
    assert swa.finished and swa.count == 5  # after batches 2 to 6
    assert swa.averages() == {}  # applied, not kept
    b = tessera.Trainer(**tiny_components(max_duration="8ba"), algorithms=[{"swa": options}])
    b.fit()
    plain = tessera.Trainer(**tiny_components(max_duration="8ba"))
    plain.fit()
    assert a.weights_fingerprint() == b.weights_fingerprint() != plain.weights_fingerprint()


def test_a_torch_model_with_batch_norm_needs_recompute_batchnorm_off():
    torch.manual_seed(0)

    def make(recompute):
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8),
                                  torch.nn.ReLU(), torch.nn.Linear(8, 3))
        data = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.randn(48, 1, 4, 4), torch.randint(0, 3, (48,))), batch_size=8)
        swa = SWA(swa_start="2ba", swa_end="5ba", update_interval="1ba", recompute_batchnorm=recompute)
        trainer = tessera.Trainer(model=net, train_dataloader=data, optimizer={"sgd": {"lr": 0.1}},
                                  algorithms=[swa], max_duration="1ep", threads=1)
        return net, swa, trainer

    with pytest.raises(tessera.InputError, match=r"keeps running statistics.*set recompute_batchnorm: false"):
        make(True)
    net, swa, trainer = make(False)
    trainer.fit()
    assert swa.finished and swa.count == 4
