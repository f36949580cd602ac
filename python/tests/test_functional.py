"""tessera.functional: the C++ functional forms on plain torch tensors, checked against stock torch."""
import copy

import pytest
import torch
import torch.nn.functional as F

import tessera
import tessera.functional as TF


def test_smooth_labels_matches_the_formula():
    y = torch.tensor([0, 2, 1, 2])
    out = TF.smooth_labels(y, num_classes=3, alpha=0.1)
    expected = F.one_hot(y, 3).float() * 0.9 + 0.1 / 3
    assert torch.equal(out, expected)
    dense = torch.softmax(torch.randn(4, 3), 1)
    assert torch.equal(TF.smooth_labels(dense, 3, 0.2), dense * 0.8 + 0.2 / 3)
    with pytest.raises(tessera.InputError, match="num_classes"):
        TF.smooth_labels(y, 0, 0.1)


def test_smoothed_cross_entropy_matches_torch_and_has_gradients():
    torch.manual_seed(0)
    logits = torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    ours = TF.smoothed_cross_entropy(logits, y, alpha=0.1)
    stock = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert torch.allclose(ours, stock, rtol=1e-6, atol=1e-6)
    # equal to the cross-entropy against the dense smoothed targets
    dense = TF.cross_entropy(logits, TF.smooth_labels(y, 5, 0.1))
    assert torch.allclose(ours, dense, rtol=1e-6, atol=1e-6)
    per = TF.smoothed_cross_entropy(logits, y, 0.1, reduction="none")
    assert per.shape == (8,) and torch.allclose(per.mean(), ours)
    ours.backward()
    g_ours = logits.grad.clone()
    logits.grad = None
    stock.backward()
    assert torch.allclose(g_ours, logits.grad, rtol=1e-5, atol=1e-7)
    with pytest.raises(tessera.InputError, match="reduction"):
        TF.smoothed_cross_entropy(logits, y, 0.1, reduction="avg")


def test_blur2d_is_the_depthwise_binomial_filter():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, 10)
    k = torch.tensor([1.0, 2.0, 1.0])
    weight = (torch.outer(k, k) / 16).expand(3, 1, 3, 3)
    assert torch.equal(TF.blur_filter(3, x), weight)
    for stride in (1, 2):
        ours = TF.blur2d(x, stride)
        stock = F.conv2d(x, weight, stride=stride, padding=1, groups=3)
        assert ours.shape == stock.shape
        assert torch.allclose(ours, stock, rtol=1e-6, atol=1e-6)
    tiny = torch.randn(1, 1, 2, 2)
    assert torch.equal(TF.blur2d(tiny), tiny)


def test_select_by_loss():
    losses = torch.arange(10, dtype=torch.float32)
    a = TF.select_by_loss(losses, keep=0.5, rng=tessera.Rng(3))
    b = TF.select_by_loss(losses, keep=0.5, rng=3)
    assert torch.equal(a, b)  # an integer seed is Rng(seed)
    assert a.dtype == torch.int64 and a.numel() == 5
    assert torch.equal(a, a.sort().values) and a.unique().numel() == 5
    rng = tessera.Rng(3)
    first = TF.select_by_loss(losses, 0.5, rng)
    assert torch.equal(first, a) and rng.counter > 0  # the generator advanced in place
    # high-loss examples are chosen more often
    counts = torch.zeros(10)
    for seed in range(200):
        counts[TF.select_by_loss(losses, 0.3, seed)] += 1
    assert counts[7:].sum() > 3 * counts[:3].sum()
    w = TF.selection_weights(losses, 0.5)
    assert torch.allclose(w.sum(), torch.tensor(1.0, dtype=w.dtype))
    assert bool((w[1:] >= w[:-1]).all())


def test_resize_batch_matches_interpolate_and_crop_is_a_window():
    torch.manual_seed(2)
    x = torch.randn(3, 2, 16, 12)
    small = TF.resize_batch(x, 0.5)
    assert small.shape == (3, 2, 8, 6)
    stock = F.interpolate(x, size=(8, 6), mode="bilinear", align_corners=False)
    assert torch.allclose(small, stock, rtol=1e-6, atol=1e-6)
    near = TF.resize_batch(x, 0.5, interpolation="nearest")
    assert torch.equal(near, F.interpolate(x, size=(8, 6), mode="nearest"))
    crop = TF.resize_batch(x, 0.5, mode="crop", rng=tessera.Rng(5))
    assert crop.shape == (3, 2, 8, 6)
    found = [(i, j) for i in range(9) for j in range(7) if torch.equal(x[:, :, i:i + 8, j:j + 6], crop)]
    assert len(found) == 1  # one window for the whole batch
    assert TF.resize_batch(x, 1.0) is x
    assert TF.pinned_scale(0.5, 12, 4) == pytest.approx(8 / 12)
    assert TF.progressive_scale(0.0, 0.5, 0.5, 0.2) == 0.5
    assert TF.progressive_scale(0.9, 0.5, 0.5, 0.2) == 1.0


def test_freeze_depth():
    assert TF.freeze_depth(0.25, 5, 0.5, 1.0) == 0
    assert TF.freeze_depth(1.0, 5, 0.5, 1.0) == 4


def _module_with_grads(seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    (net(torch.randn(8, 6)).pow(2).sum() * 10).backward()
    return net


def test_clip_gradients_matches_torch_and_the_agc_formula():
    ours, theirs = _module_with_grads(0), _module_with_grads(0)
    total = TF.clip_gradients(ours.parameters(), "norm", 0.5)
    expected_total = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-6)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7)

    ours, theirs = _module_with_grads(1), _module_with_grads(1)
    assert TF.clip_gradients(ours.parameters(), "value", 0.01) is None
    torch.nn.utils.clip_grad_value_(theirs.parameters(), 0.01)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a.grad, b.grad)

    net = _module_with_grads(2)
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in net.named_parameters()}
    TF.clip_gradients(net.parameters(), "adaptive", 0.01)
    for name, p in net.named_parameters():
        w, g = before[name]
        dims = tuple(range(1, w.dim()))
        w_norm = w.norm(dim=dims, keepdim=True) if dims else w.norm()
        g_norm = g.norm(dim=dims, keepdim=True) if dims else g.norm()
        coefficient = (0.01 * w_norm / g_norm.clamp_min(1e-6)).nan_to_num(1.0).clamp_max(1.0)
        assert torch.allclose(p.grad, g * coefficient, rtol=1e-5, atol=1e-8), name

    with pytest.raises(tessera.InputError, match="clipping_type"):
        TF.clip_gradients(net.parameters(), "l2", 1.0)
    with pytest.raises(tessera.InputError, match="clipping_threshold"):
        tessera.algorithms.GradientClipping(clipping_threshold=0)
    assert tessera.algorithms.GradientClipping(clipping_type="adaptive").options["clipping_type"] == "adaptive"


def test_torch_operators_share_the_implementation():
    """The library registers its kernels as torch operators; the functional forms give their results."""
    ops = TF.ops
    assert ops is torch.ops.tessera
    torch.manual_seed(4)
    x = torch.randn(2, 3, 9, 10)
    for stride in (1, 2):
        assert torch.equal(ops.blur2d(x, [stride, stride]), TF.blur2d(x, stride))
    logits = torch.randn(6, 4)
    y = torch.randint(0, 4, (6,))
    mean, per = ops.smoothed_cross_entropy(logits, y, 0.1)
    assert torch.equal(mean, TF.smoothed_cross_entropy(logits, y, 0.1))
    assert torch.allclose(per, TF.smoothed_cross_entropy(logits, y, 0.1, reduction="none"), rtol=1e-6, atol=1e-7)
    rng = tessera.Rng(9)
    signed_key = rng.key - 2**64 if rng.key >= 2**63 else rng.key  # the op's int is int64
    losses = torch.rand(12)
    assert torch.equal(ops.select_by_loss(losses, 0.5, signed_key, rng.counter), TF.select_by_loss(losses, 0.5, rng))


def test_bad_options_are_refused_as_the_algorithms_refuse_them():
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(tessera.InputError, match=r'resize_batch.mode: "zoom" is not allowed; expected one of: resize, crop'):
        TF.resize_batch(x, 0.5, mode="zoom")
    with pytest.raises(tessera.InputError, match=r'resize_batch.mode: "CROP" is not allowed'):
        TF.resize_batch(x, 0.5, mode="CROP")
    for bad in ("bicubic", "cubicc"):
        with pytest.raises(tessera.InputError, match=rf'resize_batch.interpolation: "{bad}" is not allowed; expected one of: bilinear, nearest'):
            TF.resize_batch(x, 0.5, interpolation=bad)
    with pytest.raises(tessera.InputError, match=r"resize_batch.scale: 0 is out of range; expected a number > 0"):
        TF.resize_batch(x, 0.0)
    with pytest.raises(tessera.InputError, match=r"select_by_loss.losses: expected one loss per example, shape \[N\], got shape \[4, 2\]"):
        TF.select_by_loss(torch.rand(4, 2), 0.5, 0)
    with pytest.raises(tessera.InputError, match=r"select_by_loss.keep: 1.5 is out of range; expected a number \(0, 1\]"):
        TF.select_by_loss(torch.rand(4), 1.5, 0)
    with pytest.raises(tessera.InputError, match=r"select_by_loss.rng: -1 is out of range; expected a tessera.Rng or an integer seed"):
        TF.select_by_loss(torch.rand(4), 0.5, -1)
    with pytest.raises(tessera.InputError, match=r"smooth_labels.smoothing: 1.5 is out of range; expected a number \[0, 1\)"):
        TF.smooth_labels(torch.tensor([0, 1]), 2, alpha=1.5)


def test_compute_ema_is_the_formula_on_parameters_and_buffers():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ema = copy.deepcopy(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(2.0)
        net[1].num_batches_tracked.fill_(5)
    before = {n: t.clone() for n, t in ema.state_dict().items()}
    TF.compute_ema(net, ema, 0.9)
    for name, t in ema.state_dict().items():
        if name.endswith("num_batches_tracked"):
            assert t.item() == 5  # integer buffers are copied
        else:
            assert torch.allclose(t, 0.9 * before[name] + 0.1 * net.state_dict()[name]), name
    assert TF.ema_smoothing("50ba") == pytest.approx(2 ** (-1 / 50), rel=1e-15)
    assert TF.ema_smoothing("10ep", "2ep") == pytest.approx(2 ** -0.2, rel=1e-15)
    wider = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    with pytest.raises(tessera.InputError, match=r"compute_ema: ema_model has no param/2\.weight"):
        TF.compute_ema(wider, net, 0.9)
    with pytest.raises(tessera.InputError, match=r"compute_ema\.smoothing"):
        TF.compute_ema(net, ema, 1.5)
    with pytest.raises(tessera.InputError, match=r'ema\.half_life: "10tok" is not supported'):
        tessera.algorithms.EMA(half_life="10tok")
    with pytest.raises(tessera.InputError, match="give half_life or smoothing, not both"):
        tessera.algorithms.EMA(half_life="50ba", smoothing=0.9)
    assert tessera.algorithms.EMA(half_life="50ba").options["half_life"] == "50ba"


def test_ema_in_a_trainer_leaves_the_averages_in_the_users_module():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 3))
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(48, 1, 4, 4), torch.randint(0, 3, (48,))), batch_size=8)
    ema = tessera.algorithms.EMA(half_life="2ba")
    trainer = tessera.Trainer(model=net, train_dataloader=data, optimizer={"sgd": {"lr": 0.1}}, algorithms=[ema],
                              max_duration="1ep", threads=1)
    trainer.fit()
    assert ema.started and ema.holds_averaged_weights
    averages = ema.averages()
    assert len(averages) == len(list(net.parameters())) + len(list(net.buffers()))
    for name, p in net.named_parameters():
        assert torch.equal(averages["param/" + name], p.detach()), name
    for name, b in net.named_buffers():
        assert torch.equal(averages["buffer/" + name], b), name
