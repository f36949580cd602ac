"""The user's own model and data from Python (issue 12): a torchvision-style ResNet written in plain PyTorch,
trained from a torch.utils.data.DataLoader with worker processes, with all five algorithms; killed and resumed
bit for bit; a Hugging-Face-style dict model with its own loss; a TorchScript module; clear errors for what does
not fit."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import tessera
from test_checkpoint import Killed, KillAt

# ---------------------------------------------------------------------------------------------------------------
# A ResNet written as torchvision writes it: no Tessera types anywhere.


class BasicBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                  torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class TinyResNet(torch.nn.Module):
    def __init__(self, in_channels=3, num_classes=4, width=16):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.maxpool = torch.nn.MaxPool2d(2)
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.fc = torch.nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_data(size, seed):
    batch = tessera.data.synthetic(size=size, input_shape=[3, 16, 16], num_classes=4, noise=1.5, seed=seed)
    return torch.utils.data.TensorDataset(batch["input"], batch["target"])


@pytest.fixture(scope="module")
def train_set():
    return make_data(384, 3)


@pytest.fixture(scope="module")
def test_set():
    return make_data(256, 4)


def make_model(seed=0):
    torch.manual_seed(seed)
    return TinyResNet()


def accuracy(model, dataset):
    model.eval()
    x, y = dataset.tensors
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def all_five():
    return [
        tessera.algorithms.BlurPool(),
        tessera.algorithms.LabelSmoothing(smoothing=0.1),
        tessera.algorithms.LayerFreezing(freeze_start=0.5, freeze_level=0.5),
        tessera.algorithms.ProgressiveResizing(initial_scale=0.5, size_increment=4),
        tessera.algorithms.SelectiveBackprop(start=0.3, end=0.8, keep=0.5, interrupt=2),
    ]


def loader(dataset, workers=0, batch_size=64):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                       sampler=tessera.data.ResumableSampler(dataset))


def plain_loop(model, dataset, epochs, lr, seed):
    """The same training in a plain PyTorch loop: the same order of examples, SGD with the same settings."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sampler = tessera.data.ResumableSampler(dataset)
    data = torch.utils.data.DataLoader(dataset, batch_size=64, sampler=sampler)
    torch.manual_seed(seed)
    for epoch in range(epochs):
        sampler.set_epoch(epoch, seed=seed)
        model.train()
        for x, y in data:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model


def test_a_plain_resnet_trains_like_a_plain_pytorch_loop(train_set, test_set, tmp_path):
    reference = plain_loop(make_model(), train_set, epochs=3, lr=0.05, seed=5)
    module = make_model()
    trainer = tessera.Trainer(model=module, train_dataloader=loader(train_set, workers=2),
                              optimizer={"sgd": {"lr": 0.05, "momentum": 0.9}}, max_duration="3ep", seed=5,
                              run_dir=str(tmp_path))
    assert trainer.module is module
    assert trainer.model_name == "TinyResNet"
    trainer.fit()
    # The same model, data order and optimizer: the same weights up to floating-point reassociation.
    for (name, a), (_, b) in zip(module.state_dict().items(), reference.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), name
    assert accuracy(module, test_set) == pytest.approx(accuracy(reference, test_set), abs=0.02)


def test_all_five_algorithms_on_a_python_resnet_from_a_dataloader_with_workers(train_set, test_set, tmp_path):
    reference = accuracy(plain_loop(make_model(), train_set, epochs=4, lr=0.05, seed=5), test_set)
    module = make_model()
    trainer = tessera.Trainer(model=module, train_dataloader=loader(train_set, workers=2),
                              eval_dataloader=torch.utils.data.DataLoader(test_set, batch_size=128),
                              optimizer={"sgd": {"lr": 0.05}}, algorithms=all_five(), max_duration="4ep", seed=5,
                              run_dir=str(tmp_path))
    # BlurPool replaced the strided conv (16 input channels) and the max-pool of the Python module itself.
    assert type(module.maxpool).__name__ == "BlurMaxPool2d"
    assert type(module.layer2.conv1).__name__ == "BlurConv2d"
    assert trainer.algorithms[0].counts == {"convs": 2, "maxpools": 1}  # conv1 and the downsample conv
    trainer.fit()
    ran = trainer.trace
    for name in ("blurpool/init", "label_smoothing/before_loss", "layer_freezing/epoch_end",
                 "progressive_resizing/after_dataloader", "selective_backprop/after_dataloader"):
        assert ran[name]["count"] > 0, name
    # layer freezing froze the first layers of the user's module
    assert not module.conv1.weight.requires_grad and module.fc.weight.requires_grad
    result = trainer.evaluate()["metrics/eval/accuracy"]
    assert result == pytest.approx(accuracy(module, test_set), abs=1e-6)
    assert result >= reference - 0.06, (result, reference)


def _resumable(train_set, tmp_path, callbacks=()):
    return tessera.Trainer(model=make_model(1), train_dataloader=loader(train_set, workers=2),
                           optimizer={"sgd": {"lr": 0.05, "momentum": 0.9}}, algorithms=all_five(),
                           callbacks=list(callbacks), max_duration="3ep", seed=9, run_dir=str(tmp_path),
                           checkpoint={"folder": "ck", "interval": "4ba", "autoresume": True})


def test_killed_and_resumed_python_model_equals_the_run_in_one_go(train_set, tmp_path):
    one_go = _resumable(train_set, tmp_path / "one")
    one_go.fit()
    expected = one_go.weights_fingerprint()
    expected_state = {k: v.clone() for k, v in one_go.module.state_dict().items()}

    first = _resumable(train_set, tmp_path / "two", callbacks=[KillAt(10)])  # mid-epoch 1 of 6 batches
    with pytest.raises(Killed):
        first.fit()
    assert first.last_checkpoint.endswith("ep1-ba8.ckpt")
    del first
    second = _resumable(train_set, tmp_path / "two")
    assert second.loaded_checkpoint.endswith("ep1-ba8.ckpt")
    second.fit()
    assert second.weights_fingerprint() == expected
    for name, value in second.module.state_dict().items():
        assert torch.equal(value, expected_state[name]), name


def test_a_run_trained_in_parts_with_fit_until_equals_the_run_in_one_go(train_set, tmp_path):
    """fit(until=...) pauses at a batch boundary; the next fit() goes on from the batch the loader stands at (a plain
    shuffling DataLoader with workers: nothing to reposition) without a second fit_start."""
    class FitEvents(tessera.Callback):
        name = "fit_events"

        def __init__(self):
            super().__init__()
            self.seen = []

        def fit_start(self, state, logger):
            self.seen.append("fit_start")

        def fit_end(self, state, logger):
            self.seen.append("fit_end")

    events = FitEvents()

    def make(folder, callbacks=()):
        torch.manual_seed(11)  # the DataLoader's shuffle draws from torch's generator
        data = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True, num_workers=2)
        return tessera.Trainer(model=make_model(1), train_dataloader=data, optimizer={"sgd": {"lr": 0.05}},
                               algorithms=all_five(), callbacks=list(callbacks), max_duration="3ep", seed=9,
                               run_dir=str(tmp_path / folder))

    one_go = make("one")
    one_go.fit()
    parts = make("parts", [events])
    parts.fit(until="4ba")  # inside epoch 0 of 6 batches
    assert parts.state.timestamp.batch == 4 and not parts.state.fit_complete
    parts.fit(until=tessera.Time.parse("1ep"))
    assert parts.state.timestamp.batch == 6
    with pytest.raises(tessera.InputError, match="until 3ba is already reached"):
        parts.fit(until="3ba")
    parts.fit()
    assert parts.state.fit_complete
    assert parts.weights_fingerprint() == one_go.weights_fingerprint()
    assert events.seen == ["fit_start", "fit_end"]


def test_resuming_inside_an_epoch_without_a_resumable_sampler_is_refused_or_skips(train_set, tmp_path):
    def make(resume, run_dir, callbacks=(), checkpoint=True):
        data = torch.utils.data.DataLoader(train_set, batch_size=64)  # sequential order, no ResumableSampler
        extra = {"checkpoint": {"folder": "ck", "interval": "4ba", "autoresume": True}} if checkpoint else {}
        return tessera.Trainer(model=make_model(), train_dataloader=data, optimizer={"sgd": {"lr": 0.05}},
                               callbacks=list(callbacks), max_duration="2ep", seed=1, run_dir=str(run_dir),
                               dataloader_resume=resume, **extra)

    one_go = make("refuse", tmp_path / "one", checkpoint=False)
    one_go.fit()
    first = make("refuse", tmp_path / "two", callbacks=[KillAt(5)])
    with pytest.raises(Killed):
        first.fit()
    refused = make("refuse", tmp_path / "two")
    assert refused.loaded_checkpoint.endswith("ep0-ba4.ckpt")
    with pytest.raises(tessera.InputError, match="ResumableSampler"):
        refused.fit()
    skipped = make("skip", tmp_path / "two")
    skipped.fit()  # a sequential loader gives the same batches on every pass: skipping is exact
    assert skipped.weights_fingerprint() == one_go.weights_fingerprint()
    with pytest.raises(tessera.InputError, match="dataloader_resume"):
        make("maybe", tmp_path / "three")
    # Batches of 65 give the same 6 batches of 384 examples an epoch, but not the same batches: refused.
    with pytest.raises(tessera.InputError, match="batches of 64 examples, this run's are of 65"):
        tessera.Trainer(model=make_model(), train_dataloader=torch.utils.data.DataLoader(train_set, batch_size=65),
                        optimizer={"sgd": {"lr": 0.05}}, max_duration="2ep", seed=1, run_dir=str(tmp_path / "two"),
                        dataloader_resume="skip", checkpoint={"folder": "ck", "autoresume": True})


class DictModel(torch.nn.Module):
    """A Hugging-Face-style model: called with the batch as keywords, returns {"logits", "loss"}."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))

    def forward(self, pixel_values, labels=None):
        logits = self.net(pixel_values)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels) * 2.0  # not the default loss: its own is used
        return out


class DictData(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return {"pixel_values": x, "labels": y}


class LossRecorder(tessera.Callback):
    name = "loss_recorder"

    def __init__(self):
        super().__init__()
        self.seen = []

    def after_loss(self, state, logger):
        self.seen.append((state.loss.item(), state.outputs.detach().clone(), state.batch["target"].clone()))


def test_a_dict_model_with_its_own_loss_and_with_a_custom_loss(train_set, tmp_path):
    data = torch.utils.data.DataLoader(DictData(train_set), batch_size=64)
    recorder = LossRecorder()
    trainer = tessera.Trainer(model=DictModel(), train_dataloader=data, input_key="pixel_values",
                              target_key="labels", optimizer={"sgd": {"lr": 0.01}}, callbacks=[recorder],
                              max_duration="2ba", run_dir=str(tmp_path))
    trainer.fit()
    loss, logits, labels = recorder.seen[0]
    assert loss == pytest.approx(2.0 * F.cross_entropy(logits, labels).item(), rel=1e-5)  # the model's own loss

    calls = []

    def loss_fn(outputs, batch, reduction="mean"):
        calls.append((type(outputs).__name__, sorted(batch), reduction))
        return F.cross_entropy(outputs["logits"], batch["labels"], reduction=reduction) * 3.0

    recorder = LossRecorder()
    trainer = tessera.Trainer(model=DictModel(), train_dataloader=data, input_key="pixel_values",
                              target_key="labels", loss_fn=loss_fn, optimizer={"sgd": {"lr": 0.01}},
                              algorithms=[tessera.algorithms.SelectiveBackprop(start=0.0, end=1.0, keep=0.5,
                                                                                interrupt=0)],
                              callbacks=[recorder], max_duration="2ba", run_dir=str(tmp_path))
    trainer.fit()
    loss, logits, labels = recorder.seen[0]
    assert logits.shape[0] == 32  # selective backprop kept half, scoring with loss_fn per example
    assert loss == pytest.approx(3.0 * F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert ("dict", ["labels", "pixel_values"], "none") in calls
    assert ("dict", ["labels", "pixel_values"], "mean") in calls


class DictResNet(TinyResNet):
    """TinyResNet called with the batch as keywords, returning {"logits"}."""

    def forward(self, pixel_values, labels=None):
        return {"logits": super().forward(pixel_values)}


def _resumable_kind(kind, train_set, run_dir, callbacks=()):
    """A run to kill and resume: dict batches into a keyword-called model with progressive resizing, or a
    TorchScript module (whose forward runs in C++), each with the algorithms that apply to it."""
    common = dict(optimizer={"sgd": {"lr": 0.05, "momentum": 0.9}}, callbacks=list(callbacks), max_duration="3ep",
                  seed=9, run_dir=str(run_dir), checkpoint={"folder": "ck", "interval": "4ba", "autoresume": True})
    resizing = tessera.algorithms.ProgressiveResizing(initial_scale=0.5, size_increment=4)
    backprop = tessera.algorithms.SelectiveBackprop(start=0.3, end=0.8, keep=0.5, interrupt=2)
    if kind == "dict":
        torch.manual_seed(1)
        data = torch.utils.data.DataLoader(DictData(train_set), batch_size=64,
                                           sampler=tessera.data.ResumableSampler(train_set))
        return tessera.Trainer(model=DictResNet(), train_dataloader=data, input_key="pixel_values",
                               target_key="labels", algorithms=[resizing, backprop,
                                                                tessera.algorithms.LabelSmoothing(smoothing=0.1)],
                               **common)
    return tessera.Trainer(model=torch.jit.script(make_model(1)), train_dataloader=loader(train_set),
                           algorithms=[resizing, backprop, tessera.algorithms.LabelSmoothing(smoothing=0.1),
                                       tessera.algorithms.LayerFreezing(freeze_start=0.5, freeze_level=0.5)],
                           **common)


@pytest.mark.parametrize("kind", ["dict", "script"])
def test_killed_and_resumed_dict_batches_and_torchscript_equal_the_run_in_one_go(kind, train_set, tmp_path):
    one_go = _resumable_kind(kind, train_set, tmp_path / "one")
    one_go.fit()
    ran = one_go.trace
    for name in ("progressive_resizing/after_dataloader", "selective_backprop/after_dataloader",
                 "label_smoothing/before_loss"):
        assert ran[name]["count"] > 0, name
    if kind == "script":
        assert ran["layer_freezing/epoch_end"]["count"] > 0
    first = _resumable_kind(kind, train_set, tmp_path / "two", callbacks=[KillAt(10)])
    with pytest.raises(Killed):
        first.fit()
    assert first.last_checkpoint.endswith("ep1-ba8.ckpt")
    del first
    second = _resumable_kind(kind, train_set, tmp_path / "two")
    assert second.loaded_checkpoint.endswith("ep1-ba8.ckpt")
    second.fit()
    assert second.weights_fingerprint() == one_go.weights_fingerprint()
    for name, value in second.module.state_dict().items():
        assert torch.equal(value, one_go.module.state_dict()[name]), name


def test_algorithms_that_cannot_work_are_refused_before_step_1(train_set, tmp_path):
    data = torch.utils.data.DataLoader(DictData(train_set), batch_size=64)
    common = dict(model=DictModel(), train_dataloader=data, input_key="pixel_values", target_key="labels",
                  optimizer={"sgd": {"lr": 0.01}}, max_duration="2ba", run_dir=str(tmp_path))
    with pytest.raises(tessera.InputError, match="computes its loss inside forward"):
        tessera.Trainer(algorithms=[tessera.algorithms.LabelSmoothing()], **common)
    with pytest.raises(tessera.InputError, match="per-example"):
        tessera.Trainer(algorithms=[tessera.algorithms.SelectiveBackprop()], **common)
    with pytest.raises(tessera.InputError, match="not a parameter of the model: build the optimizer over "
                                                 "model.parameters()"):  # another model's
        tessera.Trainer(model=make_model(), train_dataloader=loader(train_set),
                        optimizer=torch.optim.SGD(make_model().parameters(), lr=0.1))


def test_no_op_model_stands_in_for_a_python_module_which_never_trains(train_set, tmp_path):
    module = make_model()
    before = copy.deepcopy(module.state_dict())
    trainer = tessera.Trainer(model=module, train_dataloader=loader(train_set, workers=2),
                              optimizer={"sgd": {"lr": 0.05, "momentum": 0.9}}, max_duration="4ba", seed=5,
                              algorithms=[tessera.algorithms.NoOpModel(), tessera.algorithms.LabelSmoothing()],
                              run_dir=str(tmp_path))
    trainer.fit()
    assert trainer.state.timestamp.batch == 4 and math.isfinite(trainer.state.loss.item())
    for name, value in module.state_dict().items():
        assert torch.equal(value, before[name]), name
    # The stand-in (the functional form builds the same): one parameter, the targets' class scores.
    stand_in = tessera.functional.make_no_op_model(trainer.model)
    assert list(stand_in.named_parameters()) == ["weight"] and stand_in.num_classes == 4
    batch = tessera.Batch(torch.zeros(3, 3, 16, 16), torch.tensor([0, 3, 1]))
    assert torch.equal(stand_in.forward(batch).argmax(1), torch.tensor([0, 3, 1]))
    with pytest.raises(tessera.InputError, match="no_op_model and blurpool cannot be combined"):
        tessera.Trainer(model=make_model(), train_dataloader=loader(train_set), optimizer={"sgd": {"lr": 0.1}},
                        algorithms=[tessera.algorithms.NoOpModel(), tessera.algorithms.BlurPool()],
                        run_dir=str(tmp_path))


def test_a_scripted_module_trains_in_cpp_like_the_python_module(train_set, tmp_path):
    eager = make_model(2)
    scripted = torch.jit.script(copy.deepcopy(eager))
    results = []
    for module in (eager, scripted):
        trainer = tessera.Trainer(model=module, train_dataloader=loader(train_set),
                                  optimizer={"sgd": {"lr": 0.05}}, max_duration="1ep", seed=3, run_dir=str(tmp_path))
        trainer.fit()
        results.append({k: v.clone() for k, v in module.state_dict().items()})
    for name, value in results[0].items():  # the Python ScriptModule holds the trained weights
        assert torch.allclose(value.float(), results[1][name].float(), rtol=1e-4, atol=1e-5), name
    with pytest.raises(tessera.InputError, match="TorchScript"):
        tessera.Trainer(model=torch.jit.script(make_model()), train_dataloader=loader(train_set),
                        optimizer={"sgd": {"lr": 0.05}}, algorithms=[tessera.algorithms.BlurPool()])


class Returns(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.lin = torch.nn.Linear(3 * 16 * 16, 4)
        self.value = value

    def forward(self, x):
        logits = self.lin(x.flatten(1))
        return self.value(logits)


@pytest.mark.parametrize("value, message", [
    (lambda logits: "oops", "its output is a str; expected a tensor"),
    (lambda logits: {"scores": logits}, "keys scores; expected a tensor under \"logits\""),
    (lambda logits: (None, logits), "first element is not a tensor"),
])
def test_bad_model_outputs_are_clear_errors(train_set, value, message):
    trainer = tessera.Trainer(model=Returns(value), train_dataloader=loader(train_set),
                              optimizer={"sgd": {"lr": 0.05}}, max_duration="1ba")
    with pytest.raises(tessera.InputError, match=message):
        trainer.fit()


def test_bad_losses_and_data_are_clear_errors(train_set):
    common = dict(model=make_model(), optimizer={"sgd": {"lr": 0.05}}, max_duration="1ba")
    trainer = tessera.Trainer(train_dataloader=loader(train_set), loss_fn=lambda out, batch: out, **common)
    with pytest.raises(tessera.InputError, match=r"loss_fn returned shape \[64, 4\]; expected a scalar"):
        trainer.fit()
    with pytest.raises(tessera.InputError, match="can be read only once"):
        tessera.Trainer(train_dataloader=(b for b in loader(train_set)), **common)
    with pytest.raises(tessera.InputError, match="has no len"):
        tessera.Trainer(train_dataloader=_NoLen(), **common)
    with pytest.raises(tessera.InputError, match=r"batch 0\[1\] is a str; expected a tensor"):
        tessera.Trainer(train_dataloader=[(torch.zeros(2, 3, 16, 16), "labels")], **common).fit()


class _NoLen:
    def __iter__(self):
        return iter([])


def test_python_blurpool_matches_the_cpp_functional_form():
    conv = torch.nn.Conv2d(16, 8, 3, 2, 1)
    x = torch.randn(2, 16, 9, 9)
    module = torch.nn.Sequential(copy.deepcopy(conv), torch.nn.MaxPool2d(3, 2, 1))
    counts = tessera._surgery.apply(module, tessera.algorithms.BlurPool(), dry_run=False)
    assert counts == {"convs": 1, "maxpools": 1}
    with torch.no_grad():
        y = module[0](x)
        assert torch.equal(y, conv(tessera.functional.blur2d(x, 1)))
        pooled = module[1](y)
        expected = tessera.functional.blur2d(F.max_pool2d(y, 3, 1, 1), 2)
        assert torch.allclose(pooled, expected, atol=1e-6)
    assert [n for n, _ in module.named_parameters()] == ["0.conv.weight", "0.conv.bias"]
    # A second application changes nothing: the strided conv inside the BlurConv2d (blur_first) is not wrapped again.
    again = tessera._surgery.apply(module, tessera.algorithms.BlurPool(), dry_run=False)
    assert again == {"convs": 0, "maxpools": 0}
    assert type(module[0].conv) is torch.nn.Conv2d
    assert [n for n, _ in module.named_parameters()] == ["0.conv.weight", "0.conv.bias"]


def test_resumable_sampler_order_is_tesseras_and_positionable():
    sampler = tessera.data.ResumableSampler(10)
    sampler.set_epoch(2, seed=7)
    order = list(sampler)
    assert sorted(order) == list(range(10))
    assert order == tessera.data.shuffled_order(7, 2, 10).tolist()
    sampler.set_epoch(2, seed=7, start=4)
    assert list(sampler) == order[4:]
    assert list(sampler) == order  # the next pass is a whole epoch again
    assert len(sampler) == 10
    with pytest.raises(tessera.InputError, match="out of range"):
        sampler.set_epoch(0, start=11)


def _channels_last(t):
    """NHWC with the strides torch gives it (channels innermost: also for 1x1 kernels, which are both layouts)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and t.stride(1) == 1


def test_channels_last_converts_the_python_module_in_place_and_trains_like_the_plain_loop(train_set, tmp_path):
    reference = plain_loop(make_model(), train_set, epochs=2, lr=0.05, seed=5)  # NCHW, plain PyTorch
    module = make_model()
    before = dict(module.named_parameters())
    trainer = tessera.Trainer(model=module, train_dataloader=loader(train_set),
                              optimizer={"sgd": {"lr": 0.05, "momentum": 0.9}},
                              algorithms=[tessera.algorithms.ChannelsLast()], max_duration="2ep", seed=5,
                              run_dir=str(tmp_path))
    assert trainer.algorithms[0].converted == 6  # the six convolutions' weights
    for name, p in module.named_parameters():
        assert p is before[name], name  # the user's Parameter objects, converted in place
        assert _channels_last(p) == (p.dim() == 4), name
    trainer.fit()
    for name, p in module.named_parameters():
        if p.dim() == 4:
            assert _channels_last(p) and _channels_last(p.grad), name
    # The same training as NCHW in a plain loop, up to the rounding of the NHWC kernels.
    for (name, a), (_, b) in zip(module.state_dict().items(), reference.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), name


def test_channels_last_runs_after_python_blurpool_and_functional_form_keeps_parameters(train_set, tmp_path):
    module = make_model()
    trainer = tessera.Trainer(model=module, train_dataloader=loader(train_set), optimizer={"sgd": {"lr": 0.05}},
                              algorithms=[tessera.algorithms.ChannelsLast(), tessera.algorithms.BlurPool()],
                              max_duration="1ba", run_dir=str(tmp_path))
    assert trainer.plan["init"] == ["blurpool", "channels_last"]
    assert type(module.layer2.conv1).__name__ == "BlurConv2d"
    assert _channels_last(module.layer2.conv1.conv.weight)  # a layer surgery rewrapped is converted too

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1))
    net(torch.randn(2, 3, 6, 6)).sum().backward()
    weight, grad = net[0].weight, net[0].weight.grad.clone()
    values = {k: v.clone() for k, v in net.state_dict().items()}
    assert tessera.functional.apply_channels_last(net) == 2
    assert net[0].weight is weight and _channels_last(weight) and _channels_last(weight.grad)
    assert torch.equal(weight.grad, grad)
    for k, v in net.state_dict().items():
        assert torch.equal(v, values[k]), k
    assert tessera.functional.apply_channels_last(net) == 2  # idempotent


def test_channels_last_on_a_torchscript_module(train_set, tmp_path):
    scripted = torch.jit.script(make_model())
    trainer = tessera.Trainer(model=scripted, train_dataloader=loader(train_set), optimizer={"sgd": {"lr": 0.05}},
                              algorithms=[tessera.algorithms.ChannelsLast()], max_duration="2ba",
                              run_dir=str(tmp_path))
    assert trainer.algorithms[0].converted == 6
    trainer.fit()  # the C++ forward runs on the converted tensors, whose gradients come back channels-last
    for name, p in scripted.named_parameters():
        if p.dim() == 4:
            assert _channels_last(p) and _channels_last(p.grad), name


# ---------------------------------------------------------------------------------------------------------------
# A language model of one's own whose targets mark padding with -100, in microbatches.


class TinyTokenModel(torch.nn.Module):
    def __init__(self, vocab=16, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, width)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, ids):
        return self.head(self.embed(ids)).transpose(1, 2)  # [N, vocab, S], as cross_entropy takes them


def test_padded_sequences_in_microbatches_train_like_whole_batches_in_a_plain_loop():
    # Rows of 0 to 8 real tokens, the rest padding (-100): a microbatch's mean over its tokens weighs by its share of
    # the batch's tokens, so microbatches of 1 and 3 (one of them without a token) give the whole batch's gradient,
    # which a plain PyTorch loop computes with F.cross_entropy(ignore_index=-100).
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(16, (16, 8), generator=g)
    targets = ids.roll(-1, 1)
    lengths = torch.tensor([0, 8, 2, 5, 3, 8, 1, 6] * 2)
    targets[torch.arange(8)[None, :] >= lengths[:, None]] = -100
    dataset = torch.utils.data.TensorDataset(ids, targets)
    plain = TinyTokenModel()
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.5, momentum=0.9)  # tessera's SGD defaults
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=8):
        optimizer.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        optimizer.step()

    def trained(size, **loss):
        model = TinyTokenModel()
        tessera.Trainer(model=model, train_dataloader=torch.utils.data.DataLoader(dataset, batch_size=8),
                        optimizer={"sgd": {"lr": 0.5}}, max_duration="2ba", microbatch_size=size, threads=1,
                        seed=0, **loss).fit()
        return model

    def gap(model):
        return max((p - q).abs().max().item() for p, q in zip(model.parameters(), plain.parameters()))

    def own_loss(outputs, batch):
        return F.cross_entropy(outputs, batch[1])

    def tokens(batch):
        return (batch[1] != -100).sum(1)

    for size in (0, 1, 3):
        assert gap(trained(size)) < 1e-5, size
        # A loss_fn of one's own weighs by examples, unless loss_terms counts what it averages over.
        assert gap(trained(size, loss_fn=own_loss, loss_terms=tokens)) < 1e-5, size
    assert gap(trained(3, loss_fn=own_loss)) > 1e-3
    with pytest.raises(tessera.InputError, match=r"loss_terms returned Float of shape \[8\]; expected integer counts"):
        trained(3, loss_fn=own_loss, loss_terms=lambda batch: torch.ones(8))  # before step 1: batches in parts
    with pytest.raises(tessera.InputError, match="loss_terms: applies to a model given as a torch.nn.Module"):
        tessera.Trainer(model={"mlp": {}}, train_dataloader=torch.utils.data.DataLoader(dataset, batch_size=8),
                        optimizer={"sgd": {}}, loss_terms=tokens)
