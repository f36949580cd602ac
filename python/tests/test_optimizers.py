"""Optimizers from Python: Tessera's own by recipe entry (adam, lion, parameter groups by name or shape), and a
torch.optim optimizer translated into the Tessera optimizer with the same updates, groups included."""
import pytest
import torch
import torch.nn.functional as F

import tessera
from tessera._optimizers import from_torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def plain_loop(model, optimizer, steps):
    """The same training in a plain PyTorch loop (batches of 16 in order)."""
    loader = torch.utils.data.DataLoader(data(), batch_size=16)
    done = 0
    while done < steps:
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    return model


def tessera_run(model, optimizer, steps, tmp_path):
    trainer = tessera.Trainer(model=model, train_dataloader=torch.utils.data.DataLoader(data(), batch_size=16),
                              optimizer=optimizer, max_duration=f"{steps}ba", threads=1, seed=0,
                              run_dir=str(tmp_path))
    trainer.fit()
    return trainer


def no_decay_groups(model, make, **kw):
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    return make([{"params": decay}, {"params": rest, "weight_decay": 0.0}], **kw)


CASES = {
    "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam_amsgrad": lambda m: torch.optim.Adam(m.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=0.01,
                                               amsgrad=True),
    "adamw_groups": lambda m: no_decay_groups(m, torch.optim.AdamW, lr=0.01, weight_decay=0.1),
    "sgd_head_lr": lambda m: torch.optim.SGD([{"params": m.body.parameters()},
                                              {"params": m.head.parameters(), "lr": 0.3}], lr=0.1, momentum=0.5),
    "rmsprop_centered": lambda m: torch.optim.RMSprop(m.parameters(), lr=0.003, alpha=0.9, momentum=0.5,
                                                      weight_decay=1e-3, centered=True),
    "adagrad_groups": lambda m: no_decay_groups(m, torch.optim.Adagrad, lr=0.05, lr_decay=0.01, weight_decay=1e-3,
                                                initial_accumulator_value=0.1),
    "nadam": lambda m: torch.optim.NAdam(m.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=1e-2,
                                         momentum_decay=0.01),
    "radam_groups": lambda m: no_decay_groups(m, torch.optim.RAdam, lr=0.01, weight_decay=1e-2),
    "adamax": lambda m: torch.optim.Adamax(m.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
    "adadelta_groups": lambda m: no_decay_groups(m, torch.optim.Adadelta, lr=0.5, rho=0.8, weight_decay=1e-2),
    # matrices factored, vectors not; eps1 None (the machine epsilon)
    "adafactor_groups": lambda m: no_decay_groups(m, getattr(torch.optim, "Adafactor", None), lr=0.05, d=1.5,
                                                  weight_decay=1e-2),
}


TORCH_1 = int(torch.__version__.split(".")[0]) < 2


def _skip(case):
    if case == "nadam" and TORCH_1:
        return pytest.mark.skip(reason="torch 1.x's NAdam multiplies mu_k twice into its look-ahead product (fixed in "
                                       "torch 2.0); Tessera's is 2.x's")
    if case == "adafactor_groups" and not hasattr(torch.optim, "Adafactor"):
        return pytest.mark.skip(reason="torch.optim.Adafactor is in torch 2.5 and later")
    return []


@pytest.mark.parametrize("case", [pytest.param(c, marks=_skip(c)) for c in sorted(CASES)])
def test_a_torch_optimizer_trains_as_it_does_in_a_plain_loop(case, tmp_path):
    plain = Net()
    plain_loop(plain, CASES[case](plain), 8)
    model = Net()
    trainer = tessera_run(model, CASES[case](model), 8, tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (case, name, (a - b).abs().max().item())
    assert not torch.equal(model.head.weight, Net().head.weight)  # it trained
    groups = trainer.state.optimizer.param_groups
    assert len(groups) == (2 if case.endswith("_groups") or case == "sgd_head_lr" else 1)
    fresh = Net()
    assert trainer.state.optimizer.name == next(iter(from_torch(CASES[case](fresh), fresh)))


@pytest.mark.skipif(not TORCH_1, reason="torch 1.x only")
def test_a_torch_1_nadam_is_translated_with_a_warning_that_it_becomes_torch_2s():
    model = Net()
    with pytest.warns(UserWarning, match="multiplies mu_k twice"):
        assert "nadam" in from_torch(torch.optim.NAdam(model.parameters()), model)


def test_the_translation_names_the_groups_parameters():
    model = Net()
    entry = from_torch(CASES["adamw_groups"](model), model)
    assert entry == {"adamw": {"lr": 0.01, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                               "amsgrad": False,
                               "groups": [{"names": ["body.0.bias", "body.1.weight", "body.1.bias", "head.bias"],
                                           "weight_decay": 0.0}]}}
    # A group with group 0's settings needs no entry; its parameters join group 0.
    same = torch.optim.SGD([{"params": model.body.parameters()}, {"params": model.head.parameters()}], lr=0.1)
    assert from_torch(same, model) == {"sgd": {"lr": 0.1, "weight_decay": 0.0, "momentum": 0.0, "dampening": 0.0,
                                               "nesterov": False}}


def test_what_cannot_be_translated_is_refused_with_the_reason(tmp_path):
    model = Net()
    with pytest.raises(tessera.InputError, match="no equivalent of torch.optim.asgd.ASGD"):
        from_torch(torch.optim.ASGD(model.parameters()), model)
    with pytest.raises(tessera.InputError, match="maximize=True"):
        from_torch(torch.optim.SGD(model.parameters(), lr=0.1, maximize=True), model)
    if hasattr(torch.optim, "Adafactor"):  # Tessera's eps1 0 means torch's None
        with pytest.raises(tessera.InputError, match=r"has eps=\(0.0, ...\); Tessera's Adafactor takes eps1 > 0"):
            from_torch(torch.optim.Adafactor(model.parameters(), eps=(0.0, 1e-3)), model)
        assert from_torch(torch.optim.Adafactor(model.parameters()), model)["adafactor"]["eps1"] == 0.0
    stepped = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    stepped.step()
    with pytest.raises(tessera.InputError, match="already taken steps"):
        from_torch(stepped, model)
    adagrad = torch.optim.Adagrad(model.parameters())  # its state is made at construction, with step 0
    assert "adagrad" in from_torch(adagrad, model)
    adagrad.step()
    with pytest.raises(tessera.InputError, match="Adagrad has already taken steps"):
        from_torch(adagrad, model)
    with pytest.raises(tessera.InputError, match=r"3 trainable parameters of the model are in none of the SGD's "
                                                 r"groups \(head.weight, head.bias, body.1.weight|trainable parameters"):
        from_torch(torch.optim.SGD(model.body[0].parameters(), lr=0.1), model)
    with pytest.raises(tessera.InputError, match="not a parameter of the model"):
        from_torch(torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1), model)
    with pytest.raises(tessera.InputError, match="group 1 has momentum=0.5 and group 0 0.9"):
        from_torch(torch.optim.SGD([{"params": model.body.parameters()},
                                    {"params": model.head.parameters(), "momentum": 0.5}], lr=0.1, momentum=0.9),
                   model)
    # torch's lr 0 keeps a group as it is; Tessera's means the optimizer's lr: refused, not trained.
    with pytest.raises(tessera.InputError, match=r"group 1 has lr=0, which keeps its parameters \(head.weight, "
                                                 r"head.bias\) as they are"):
        from_torch(torch.optim.SGD([{"params": model.body.parameters()},
                                    {"params": model.head.parameters(), "lr": 0.0, "weight_decay": 0.0}],
                                   lr=0.1, weight_decay=1e-3), model)
    with pytest.raises(tessera.InputError, match="translated for a model given as a torch.nn.Module"):
        tessera.Trainer(model={"mlp": {}}, train_dataloader=torch.utils.data.DataLoader(data(), batch_size=16),
                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_recipe_groups_select_a_python_modules_parameters_by_name_and_shape(tmp_path):
    model = Net()
    trainer = tessera_run(model, {"lion": {"lr": 1e-3, "weight_decay": 1.0, "groups": [
        {"names": ["head.*"], "lr": 3e-3}, {"max_dims": 1, "weight_decay": 0}]}}, 4, tmp_path)
    groups = trainer.state.optimizer.param_groups
    assert [len(g["params"]) for g in groups] == [1, 2, 3]  # body weight | head | body bias and norm
    assert [(g["initial_lr"], g["weight_decay"]) for g in groups] == [(1e-3, 1.0), (3e-3, 1.0), (1e-3, 0.0)]
    assert groups[1]["params"][0] is model.head.weight
    with pytest.raises(tessera.InputError, match=r"optimizer.adam.groups\[0\]: names \[head.wieght\] selects none "
                                                 r"of the model's 6 parameters; the parameters are named like "
                                                 r"body.0.weight, body.0.bias, body.1.weight, body.1.bias"):
        tessera_run(Net(), {"adam": {"groups": [{"names": ["head.wieght"], "lr": 1.0}]}}, 1, tmp_path)


needs_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon is in torch 2.9 and later")


class Both:
    """Muon on the matrices and AdamW on the rest, stepped together in the plain loop."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers

    def zero_grad(self):
        for o in self.optimizers:
            o.zero_grad()

    def step(self):
        for o in self.optimizers:
            o.step()


def muon_pair(model):
    matrices = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("head.")]
    rest = [p for n, p in model.named_parameters() if p.dim() != 2 or n.startswith("head.")]
    return (torch.optim.Muon(matrices, lr=0.02, weight_decay=0.01),
            torch.optim.AdamW([{"params": rest[:-2]}, {"params": rest[-2:], "lr": 3e-3}], lr=1e-2, betas=(0.9, 0.95),
                              weight_decay=0.05))


@needs_muon
def test_muon_with_an_adamw_for_the_rest_trains_as_the_pair_does_in_a_plain_loop(tmp_path):
    plain = Net()
    plain_loop(plain, Both(*muon_pair(plain)), 8)
    model = Net()
    trainer = tessera_run(model, muon_pair(model), 8, tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        # Muon's Newton-Schulz runs in bfloat16: the AdamW's last-bit differences from torch's (it uses lerp for the
        # first moment, Tessera torch::optim's multiply-add) can round a matrix's update to a neighbouring bfloat16.
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), (name, (a - b).abs().max().item())
    assert not torch.equal(model.body[0].weight, Net().body[0].weight)  # it trained
    assert trainer.state.optimizer.name == "muon"


@needs_muon
def test_the_muon_pair_becomes_one_muon_entry():
    model = Net()
    entry = from_torch(muon_pair(model), model)
    assert entry == {"muon": {
        "lr": 0.02, "weight_decay": 0.01, "momentum": 0.95, "nesterov": True,
        "ns_coefficients": [3.4445, -4.775, 2.0315], "eps": 1e-7, "ns_steps": 5, "adjust_lr": "original",
        "adamw_lr": 1e-2, "adamw_weight_decay": 0.05, "adamw_beta1": 0.9, "adamw_beta2": 0.95, "adamw_eps": 1e-8,
        "adamw_names": ["head.weight"],
        "groups": [{"names": ["head.weight", "head.bias"], "lr": 3e-3}]}}
    # Either order; Muon alone over every parameter would be refused by torch itself (matrices only).
    assert from_torch(tuple(reversed(muon_pair(model))), model) == entry
    muon, _ = muon_pair(model)
    with pytest.raises(tessera.InputError, match=r"none of the Muon's groups .* optimizer=\(muon, adamw\)"):
        from_torch(muon, model)
    matrices = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() != 2]
    with pytest.raises(tessera.InputError, match="Muon's partner, torch's Adam, has L2 weight decay"):
        from_torch((torch.optim.Muon(matrices), torch.optim.Adam(rest)), model)
    class DecoupledAdamW(torch.optim.AdamW):  # Composer's, as the translation recognises it (Composer is not needed)
        pass
    DecoupledAdamW.__module__ = "composer.optim.decoupled_weight_decay"
    with pytest.raises(tessera.InputError, match=r"Muon's partner, composer's DecoupledAdamW, decays by \(lr / "):
        from_torch((torch.optim.Muon(matrices), DecoupledAdamW(rest)), model)
    with pytest.raises(tessera.InputError, match="only as Muon's pair"):
        from_torch((torch.optim.SGD(matrices, lr=0.1), torch.optim.SGD(rest, lr=0.1)), model)
    with pytest.raises(tessera.InputError, match="is in the Muon and in the AdamW"):
        from_torch((torch.optim.Muon(matrices), torch.optim.AdamW(list(model.parameters()))), model)


def test_a_sparse_gradient_is_refused_by_the_optimizers_that_do_not_take_one_before_any_change(tmp_path):
    """As torch: SGD takes an nn.Embedding(sparse=True)'s gradient; the others refuse it before touching anything."""
    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embed = torch.nn.Embedding(20, 8, sparse=True)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.embed(x).mean(1))

    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 20, (32, 4), generator=g)
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, 0] % 3), batch_size=8)
    for make, ok in [(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), True),
                     (lambda m: torch.optim.Adagrad(m.parameters(), lr=0.1), False),
                     (lambda m: torch.optim.AdamW(m.parameters(), lr=0.01), False)]:
        model = Bag()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = tessera.Trainer(model=model, train_dataloader=batches, optimizer=make(model), max_duration="2ba",
                                  threads=1, run_dir=str(tmp_path))
        if ok:
            trainer.fit()
            assert not torch.equal(model.embed.weight, before["embed.weight"])
            continue
        with pytest.raises(tessera.InputError, match=r"optimizer (adagrad|adamw): a parameter of shape 20x8 has a "
                                                     r"sparse gradient"):
            trainer.fit()
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k  # no decay, no step: nothing moved
