"""Gyro dropout from Python: the class and its options, the functional forms against a torch computation, the
surgery on a user's torch.nn.Module (its torch.nn.Dropout replaced, no new state-dict key), the periods its layers
go through in training, determinism, microbatches that train the whole batch's masks (state.batch_place), and a run
stopped, saved and resumed that ends on the uninterrupted weights."""
import copy

import pytest
import torch

import tessera
import tessera.functional as TF
from conftest import StopAt
from tessera.algorithms import GyroDropout


def test_class_takes_its_options_and_refuses_bad_ones():
    assert GyroDropout().options == {"p": 0.5, "sigma": 256, "tau": 16}
    assert GyroDropout(p=0.2, sigma=8, tau=2).name == "gyro_dropout"
    assert GyroDropout().spec().required_on_load
    with pytest.raises(tessera.InputError, match=r"tau \(9\) must be at most sigma \(8\)"):
        GyroDropout(sigma=8, tau=9)
    with pytest.raises(tessera.InputError, match=r"gyro_dropout\.p: 1(\.0)? is out of range"):
        GyroDropout(p=1.0)
    assert "gyro_dropout" in tessera.algorithms.registered()
    assert isinstance(tessera.algorithms.make({"gyro_dropout": {"sigma": 4, "tau": 2}}), GyroDropout)


def test_functional_forms():
    selected = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    x = torch.randn(5, 3, requires_grad=True)
    y = TF.gyro_dropout(x, selected, 0.5)
    rows = torch.tensor([0, 0, 0, 1, 1])  # floor(n * 2 / 5)
    assert torch.equal(y, x.detach() * selected[rows] * 2.0)
    y.sum().backward()
    assert torch.equal(x.grad, selected[rows] * 2.0)
    masks = TF.gyro_dropout_masks(seed=1, layer=0, features=3, p=0.5, sigma=8)
    assert masks.shape == (8, 3) and set(masks.unique().tolist()) <= {0.0, 1.0}
    picks = TF.gyro_dropout_selection(seed=1, layer=0, period=2, sigma=8, tau=3)
    assert len(set(picks)) == 3 and all(0 <= p < 8 for p in picks)
    assert TF.gyro_dropout_period_length(total_batches=18, sigma=4, tau=2) == 8


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 12)
        self.drop = torch.nn.Dropout(0.3)
        self.fc2 = torch.nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x.flatten(1)))))


class Periods(tessera.Callback):
    """The period of the model's gyro dropout layer at each batch."""

    name = "periods"

    def __init__(self, module):
        super().__init__()
        self.module, self.seen = module, []

    def before_forward(self, state, logger):
        self.seen.append((state.timestamp.batch, self.module.drop.masks.period))


def _trainer(module, tmp_path, **kwargs):
    torch.manual_seed(0)
    batch = tessera.data.synthetic(size=48, input_shape=[1, 4, 4], num_classes=3, seed=2)
    data = torch.utils.data.TensorDataset(batch["input"], batch["target"])
    loader = torch.utils.data.DataLoader(data, batch_size=8, sampler=tessera.data.ResumableSampler(data))
    return tessera.Trainer(model=module, train_dataloader=loader,
                           optimizer={"sgd": {"lr": 0.1, "momentum": 0.9}}, max_duration="3ep", seed=4, threads=1,
                           run_dir=str(tmp_path), loggers=[], **kwargs)


def _net():
    torch.manual_seed(1)
    return Net()


def test_surgery_on_a_python_module_and_the_periods(tmp_path):
    module = _net()
    keys = set(module.state_dict())
    gyro = GyroDropout(sigma=4, tau=2)  # 18 batches: periods of floor(18 / 4) * 2 = 8
    periods = Periods(module)
    trainer = _trainer(module, tmp_path, algorithms=[gyro], callbacks=[periods])
    assert gyro.replaced == 1
    assert type(module.drop).__name__ == "GyroDropout" and module.drop.masks.layer == 0
    assert set(module.state_dict()) == keys
    trainer.fit()
    assert periods.seen == [(b, b // 8) for b in range(18)]
    # In training, the layer applies the period's masks, example n of 8 getting mask n // 4; in evaluation nothing.
    x = torch.randn(8, 12)
    module.drop.train()
    expected = TF.gyro_dropout(x, module.drop.masks.selected(12), 0.5)
    assert torch.equal(module.drop(x), expected)
    module.drop.eval()
    assert module.drop(x) is x
    # A deep copy of the model (a user's own EMA, say) has the same masks and period, apart from the original's.
    twin = copy.deepcopy(module)
    assert twin.drop.masks is not module.drop.masks and twin.drop.masks.period == module.drop.masks.period
    twin.drop.train()
    assert torch.equal(twin.drop(x), expected)
    # The same seed trains the same weights.
    again = _net()
    _trainer(again, tmp_path / "again", algorithms=[GyroDropout(sigma=4, tau=2)]).fit()
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), again.state_dict().values()))


class Places(tessera.Callback):
    """state.batch_place at each microbatch's forward, and after the batch."""

    name = "places"

    def __init__(self):
        super().__init__()
        self.seen, self.after = [], []

    def before_forward(self, state, logger):
        p = state.batch_place
        self.seen.append((p.first, p.rows, p.rank_rows, p.share_begin, p.share_end, p.global_rows))

    def batch_end(self, state, logger):
        self.after.append(state.batch_place.is_set)


def test_in_microbatches_each_example_trains_the_mask_of_its_place_in_the_batch(tmp_path):
    # 8 masks at once over batches of 8 in microbatches of 2: each example trains the mask it trains in the whole
    # batch (floor(n * 8 / 8)), so the runs end on the same weights up to the order of float sums. Spread over each
    # microbatch's own rows, masks 0 and 4 alone would train.
    whole, parts = _net(), _net()
    _trainer(whole, tmp_path / "whole", algorithms=[GyroDropout(sigma=8, tau=8)]).fit()
    places = Places()
    _trainer(parts, tmp_path / "parts", algorithms=[GyroDropout(sigma=8, tau=8)], microbatch_size=2,
             callbacks=[places]).fit()
    assert places.seen[:4] == [(first, 2, 8, 0, 8, 8) for first in (0, 2, 4, 6)]
    assert len(places.seen) == 18 * 4 and not any(places.after)
    for a, b in zip(whole.state_dict().values(), parts.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # A copy of the model does not follow the trainer's place: it spreads the masks over its own rows.
    twin = copy.deepcopy(parts)
    twin.train()
    x = torch.randn(2, 12)
    assert torch.equal(twin.drop(x), TF.gyro_dropout(x, twin.drop.masks.selected(12), 0.5))


def test_stopped_saved_and_resumed_ends_on_the_uninterrupted_weights(tmp_path):
    whole = _net()
    one_go = _trainer(whole, tmp_path / "whole", algorithms=[GyroDropout(sigma=4, tau=2)])
    one_go.fit()
    first = _trainer(_net(), tmp_path / "first", algorithms=[GyroDropout(sigma=4, tau=2)], callbacks=[StopAt(10)])
    first.fit()
    path = tmp_path / "batch10.ckpt"
    first.save_checkpoint(str(path))
    resumed_module = _net()
    second = _trainer(resumed_module, tmp_path / "second", algorithms=[GyroDropout(sigma=4, tau=2)])
    second.load_checkpoint(str(path))
    second.fit()
    assert second.weights_fingerprint() == one_go.weights_fingerprint()


def test_a_model_without_dropout_is_refused(tmp_path):
    class NoDropout(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, x):
            return torch.nn.functional.dropout(self.fc(x.flatten(1)), 0.5, self.training)

    with pytest.raises(tessera.InputError, match=r"gyro_dropout: the model has no dropout layer \(torch\.nn\.Dropout\)"):
        _trainer(NoDropout(), tmp_path, algorithms=[GyroDropout()])
