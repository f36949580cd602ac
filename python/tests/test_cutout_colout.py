"""CutOut and ColOut from Python: the classes with their keyword arguments, the functional forms against hand
computation, and training runs on a torch module."""
import pytest
import torch

import tessera
import tessera.functional as TF
from tessera.algorithms import CutOut


def test_cutout_class_takes_its_options_and_refuses_bad_ones():
    assert CutOut().options == {"num_holes": 1, "length": 0.5, "uniform_sampling": False}
    assert CutOut(num_holes=3, length=4).options["num_holes"] == 3
    assert CutOut().name == "cutout" == CutOut().spec().name
    assert "    length (" in CutOut.__doc__
    with pytest.raises(tessera.InputError, match=r"cutout\.num_holes: 0 is out of range"):
        CutOut(num_holes=0)
    assert isinstance(tessera.algorithms.make({"cutout": {"length": 8}}), CutOut)
    assert "cutout" in tessera.algorithms.registered()


def test_cutout_batch_by_hand():
    x = torch.arange(1.0, 2 * 3 * 5 * 6 + 1).view(2, 3, 5, 6)
    cut, holes = TF.cutout_batch(x, holes=[(1, 1, 3, 4), (2, 3, 5, 5)])
    expected = x.clone()
    expected[..., 1:3, 1:4] = 0
    expected[..., 2:5, 3:5] = 0
    assert torch.equal(cut, expected) and holes == [(1, 1, 3, 4), (2, 3, 5, 5)]
    assert int((cut == 0).sum()) == 11 * 6  # the union of the holes in every plane
    # drawn: side ⌊0.5·5⌋ = 2, from a seed or a tessera.Rng advanced in place
    a, holes_a = TF.cutout_batch(x, num_holes=2, length=0.5, rng=7)
    b, _ = TF.cutout_batch(x, num_holes=2, length=0.5, rng=tessera.Rng(7))
    assert torch.equal(a, b) and len(holes_a) == 2
    for top, left, bottom, right in holes_a:
        assert 0 <= top <= bottom <= 5 and 0 <= left <= right <= 6 and bottom - top <= 2 and right - left <= 2
        assert bool((a[..., top:bottom, left:right] == 0).all())
    with pytest.raises(tessera.InputError, match=r"cutout_batch\.holes: rows \[4, 6\)"):
        TF.cutout_batch(x, holes=[(4, 0, 6, 1)])


def test_cutout_trains_a_torch_module_and_leaves_the_labels():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(64, 3))
    seen = []

    def loss_fn(outputs, batch):
        seen.append((batch[0].clone(), batch[1].clone()))
        return torch.nn.functional.cross_entropy(outputs, batch[1])

    x, y = torch.rand(16, 1, 4, 4) + 0.5, torch.randint(0, 3, (16,))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    alg = CutOut(length=2)
    trainer = tessera.Trainer(model=net, train_dataloader=data, optimizer={"sgd": {"lr": 0.1}}, algorithms=[alg],
                              max_duration="1ep", loss_fn=loss_fn, threads=1)
    trainer.fit()
    assert trainer.trace["cutout/after_dataloader"]["count"] == 2
    (top, left, bottom, right), = alg.last_holes
    inputs, targets = seen[-1]
    assert torch.equal(targets, y[8:])
    assert bool((inputs[..., top:bottom, left:right] == 0).all())
    assert torch.equal(inputs, TF.cutout_batch(x[8:], holes=alg.last_holes)[0])


def test_colout_class_and_functional_form():
    from tessera.algorithms import ColOut

    assert ColOut().options == {"p_row": 0.15, "p_col": 0.15, "batch": True, "resize_target": "auto"}
    assert ColOut(batch=False).name == "colout"
    with pytest.raises(tessera.InputError, match=r"colout\.p_row: 1 is out of range"):
        ColOut(p_row=1)
    with pytest.raises(tessera.InputError, match=r"colout\.resize_target"):
        ColOut(resize_target="maybe")
    x = torch.arange(2 * 3 * 10 * 8, dtype=torch.float32).view(2, 3, 10, 8)
    y = torch.tensor([1, 0])
    small, y_out = TF.colout_batch(x, y, p_row=0.3, p_col=0.5, rng=4)
    assert small.shape == (2, 3, 7, 4) and torch.equal(y_out, y)  # class targets unchanged
    # the kept rows and columns are in order: each kept pixel is the original at a strictly increasing position
    rows = (small[0, 0, :, 0] // 8).long()
    assert torch.all(rows[1:] > rows[:-1])
    assert torch.equal(small, TF.colout_batch(x, y, p_row=0.3, p_col=0.5, rng=tessera.Rng(4))[0])
    masks = torch.arange(2 * 10 * 8).view(2, 10, 8)
    each, masks_out = TF.colout_batch(x, masks, p_row=0.3, p_col=0.5, batch=False, rng=1)
    assert each.shape == (2, 3, 7, 4) and masks_out.shape == (2, 7, 4)
    # each example its own rows and columns, the same in its mask: the mask holds the pixels' flat positions
    pos = masks_out - torch.arange(2).view(2, 1, 1) * 80
    assert torch.equal(each[:, 0], x[:, 0].flatten(1).gather(1, pos.flatten(1)).view(2, 7, 4))
    assert TF.colout_batch(x, p_row=0.0, p_col=0.0)[1] is None


def test_colout_trains_a_torch_module_on_smaller_images():
    from tessera.algorithms import ColOut

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    shapes = []
    net.register_forward_pre_hook(lambda m, inp: shapes.append(tuple(inp[0].shape)))
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(16, 1, 20, 20), torch.randint(0, 3, (16,))), batch_size=8)
    alg = ColOut(p_row=0.25, p_col=0.5)
    trainer = tessera.Trainer(model=net, train_dataloader=data, optimizer={"sgd": {"lr": 0.1}}, algorithms=[alg],
                              max_duration="1ep", threads=1)
    trainer.fit()
    assert shapes == [(8, 1, 15, 10), (8, 1, 15, 10)]
    (rows, cols), = alg.last_kept
    assert len(rows) == 15 and len(cols) == 10 and rows == sorted(rows)
