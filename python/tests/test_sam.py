"""SAM from Python: keyword arguments, the functional form in a plain PyTorch loop against a hand computation, and
the algorithm object training like its recipe entry (and not like the run without it)."""
import copy

import pytest
import torch

import tessera
import tessera.functional as TF
from tessera.algorithms import SAM


def test_keyword_arguments_defaults_and_validation():
    assert SAM().options == {"rho": 0.05, "epsilon": 1e-12, "interval": 1}
    assert SAM(rho=0.5, interval=10).options == {"rho": 0.5, "epsilon": 1e-12, "interval": 10}
    assert SAM().name == "sam" == SAM().spec().name
    with pytest.raises(tessera.InputError, match=r"sam\.rho"):
        SAM(rho=0)
    with pytest.raises(tessera.InputError, match=r"sam\.interval"):
        SAM(interval=0)


def test_sam_gradients_in_a_torch_loop_matches_the_hand_computation():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    reference = copy.deepcopy(net)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))

    def loss_of(model):
        return torch.nn.functional.cross_entropy(model(x), y)

    # By hand: g at w, the point w + rho g / ||g||, the gradient there.
    rho = 0.3
    grads = torch.autograd.grad(loss_of(reference), list(reference.parameters()))
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    weights = [p.detach().clone() for p in reference.parameters()]
    with torch.no_grad():
        for p, g in zip(reference.parameters(), grads):
            p.add_(rho * g / norm)
    expected = torch.autograd.grad(loss_of(reference), list(reference.parameters()))

    loss_of(net).backward()

    def closure():
        net.zero_grad()
        loss_of(net).backward()

    got_norm = TF.sam_gradients(net.parameters(), closure, rho=rho, epsilon=0.0)
    assert got_norm.item() == pytest.approx(norm.item(), rel=1e-6)
    for p, w, g in zip(net.parameters(), weights, expected):
        assert torch.equal(p.detach(), w)  # the exact weights are back
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)
    with pytest.raises(tessera.InputError, match="rho"):
        TF.sam_gradients(net.parameters(), closure, rho=-1.0)
    assert TF.sam_gradients([torch.zeros(2, requires_grad=True)], closure) is None


def test_the_algorithm_trains_like_its_recipe_entry_and_unlike_the_run_without_it():
    from conftest import tiny_components

    a = tessera.Trainer(**tiny_components(max_duration="4ba"), algorithms=[SAM(rho=0.2, interval=2)])
    a.fit()
    b = tessera.Trainer(**tiny_components(max_duration="4ba"), algorithms=[{"sam": {"rho": 0.2, "interval": 2}}])
    b.fit()
    plain = tessera.Trainer(**tiny_components(max_duration="4ba"))
    plain.fit()
    assert a.weights_fingerprint() == b.weights_fingerprint() != plain.weights_fingerprint()
