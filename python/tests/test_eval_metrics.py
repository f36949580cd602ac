"""eval_metrics and train_metrics: what the evaluators of a user's eval_dataloader, and the training on their
train_dataloader, compute — Tessera's metrics by name, and Python metric objects (a class of one's own, or one shaped
like torchmetrics') run inside the C++ loops."""
import sys

import pytest
import torch
import torch.nn.functional as F

import tessera


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def loader(n, seed, batch_size=8):
    return torch.utils.data.DataLoader(data(n, seed), batch_size=batch_size)


class PlainErrorRate:
    """A metric of one's own: the fraction of wrong predictions (test_distributed.py's worker uses it too)."""
    name = "error_rate"

    def __init__(self):
        self.reset()

    def reset(self):
        self.wrong, self.seen = 0.0, 0.0

    def update(self, outputs, target):
        self.wrong += float((outputs.argmax(1) != target).sum())
        self.seen += float(target.numel())

    def compute(self):
        return self.wrong / max(self.seen, 1.0)


class ErrorRate(PlainErrorRate):
    """With the sums behind its value, so that several ranks add them up."""

    def counts(self):
        return [self.wrong, self.seen]

    def set_counts(self, counts):
        self.wrong, self.seen = counts


class MeanTargetLogit:
    """Shaped like a torchmetrics Metric: tensor state, compute() returns a 0-d tensor, no name."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.total, self.count = torch.tensor(0.0), torch.tensor(0)

    def update(self, preds, target):
        self.total = self.total + preds.gather(1, target[:, None]).sum()
        self.count = self.count + target.numel()

    def compute(self):
        return self.total / self.count


def trainer_for(tmp_path, eval_dataloader, eval_metrics, **kw):
    model = Net()
    return model, tessera.Trainer(model=model, train_dataloader=loader(32, 1), eval_dataloader=eval_dataloader,
                                  eval_metrics=eval_metrics, optimizer={"sgd": {"lr": 0.1}}, max_duration="2ep",
                                  threads=1, run_dir=str(tmp_path), **kw)


def expected(model, dataset):
    x, y = dataset.tensors
    with torch.no_grad():
        logits = model(x)
    return {"accuracy": (logits.argmax(1) == y).double().mean().item(),
            "cross_entropy": F.cross_entropy(logits.double(), y).item(),
            "error_rate": (logits.argmax(1) != y).double().mean().item(),
            "MeanTargetLogit": logits.gather(1, y[:, None]).double().mean().item()}


def test_named_and_python_metrics_match_their_values_over_the_eval_set(tmp_path):
    model, trainer = trainer_for(tmp_path, loader(20, 7, batch_size=6),  # 6 + 6 + 6 + 2: a short last batch
                                 ["accuracy", "cross_entropy", ErrorRate(), MeanTargetLogit()])
    trainer.fit()
    got = trainer.evaluate()
    want = expected(model, data(20, 7))
    assert set(got) >= {f"metrics/eval/{n}" for n in want}
    for name, value in want.items():
        assert got[f"metrics/eval/{name}"] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert got["metrics/eval/accuracy"] + got["metrics/eval/error_rate"] == pytest.approx(1.0)
    # during fit too, at the evaluators' interval: the values logged at the end are the final model's
    assert trainer.state.metrics["metrics/eval/error_rate"] == pytest.approx(want["error_rate"])


def test_each_eval_loader_has_its_own_metric_objects(tmp_path):
    rate = ErrorRate()
    model, trainer = trainer_for(tmp_path, {"a": loader(16, 3), "b": loader(24, 4)}, {"err": rate})
    got = trainer.evaluate()
    for label, seed, n in (("a", 3, 16), ("b", 4, 24)):
        assert got[f"metrics/{label}/err"] == pytest.approx(expected(model, data(n, seed))["error_rate"])
    assert rate.seen == 16  # the object given is the first evaluator's; the second has a copy
    assert "metrics/a/accuracy" not in got


def test_without_eval_metrics_a_user_eval_loader_computes_accuracy(tmp_path):
    _, trainer = trainer_for(tmp_path, loader(16, 3), None)
    assert set(trainer.evaluate()) == {"metrics/eval/accuracy"}


def test_train_metrics_are_computed_on_each_logged_batch(tmp_path):
    class LastBatch(ErrorRate):  # records what the metric was given
        def update(self, outputs, target):
            super().update(outputs, target)
            self.last = (outputs.shape, target.shape)

    last = LastBatch()
    _, trainer = trainer_for(tmp_path, None, None, train_metrics={"err": last, "cross_entropy": "cross_entropy"})
    trainer.fit()
    got = trainer.state.metrics
    assert {"metrics/train/err", "metrics/train/cross_entropy"} <= set(got)
    assert "metrics/train/accuracy" not in got
    assert last.last == ((8, 3), (8,)) and last.seen == 8  # reset at each logged batch: the last one's 8 examples
    assert got["metrics/train/err"] == pytest.approx(last.wrong / 8)
    assert got["metrics/train/cross_entropy"] > 0


def test_bad_metrics_are_refused_with_the_reason(tmp_path):
    def message(eval_metrics, eval_dataloader=loader(8, 2), **kw):
        with pytest.raises(tessera.InputError) as e:
            trainer_for(tmp_path, eval_dataloader, eval_metrics, **kw)
        return str(e.value)

    assert "eval_metrics: unknown metric" in message(["acuracy"])
    linear = torch.nn.Linear(1, 1)
    assert "eval_metrics[1]: a Linear has no update(), compute(), reset()" in message(["accuracy", linear])
    assert "two metrics are named 'error_rate'" in message([ErrorRate(), ErrorRate()])
    assert "eval_metrics['err/top']: the name 'err/top' has a '/', which separates a metric's parts in its keys " \
           "(metrics/<label>/<name>/<part>); name it without one, e.g. 'err_top'" in message({"err/top": ErrorRate()})
    assert "expected a list of metrics" in message("accuracy")
    assert "applies to the evaluators made from eval_dataloader" in message(["accuracy"], eval_dataloader=None)
    assert "train_metrics[0]: a int has no update()" in message(None, train_metrics=[3])
    assert "train_metrics: unknown metric" in message(None, train_metrics=["top_five"])

    class OnlyCounts(ErrorRate):
        set_counts = None
    assert "has only one of counts() and set_counts()" in message([OnlyCounts()])
    # Options, under a Tessera metric's name.
    assert "eval_metrics['accuracy']: options are given, but only precision, recall, f1 and their weighted_ " \
           "averages take any" in message(
        {"accuracy": {"num_classes": 3}})
    assert "eval_metrics['f1']: unknown option \"num_clases\"" in message({"f1": {"num_clases": 3}})
    assert "eval_metrics['recall'].num_classes: -3 is out of range" in message({"recall": {"num_classes": -3}})
    assert "did you mean \"num_classes\"?" in message({"f1": {"num_clases": 3}})  # as every option read from Python
    assert "eval_metrics['f1'].num_classes: expected a whole number, got True" in message(
        {"f1": {"num_classes": True}})
    assert "eval_metrics[0]: a dict of options names no metric" in message([{"num_classes": 3}])
    # A class count the outputs do not have: at the first evaluation.
    _, trainer = trainer_for(tmp_path, loader(8, 2), {"f1": {"num_classes": 4}})
    with pytest.raises(tessera.InputError, match=r"f1 metric: the outputs have 3 classes, 4 before \(its num_"):
        trainer.evaluate()


def macro_average(logits, y, score, weighted=False):
    """An independent count of precision, recall or F1 per class, averaged over the classes that occur, or weighted by
    each class's targets."""
    predicted = logits.argmax(1)
    values, weights = [], []
    for c in range(logits.shape[1]):
        tp = int(((predicted == c) & (y == c)).sum())
        fp = int(((predicted == c) & (y != c)).sum())
        fn = int(((predicted != c) & (y == c)).sum())
        if tp + fp + fn == 0:
            continue
        numerator, denominator = {"precision": (tp, tp + fp), "recall": (tp, tp + fn),
                                  "f1": (2 * tp, 2 * tp + fp + fn)}[score]
        values.append(numerator / denominator if denominator else 0.0)
        weights.append(tp + fn if weighted else 1)
    return sum(v * w for v, w in zip(values, weights)) / sum(weights) if sum(weights) else 0.0


@pytest.mark.parametrize("form", ["names", "options"])
def test_macro_precision_recall_and_f1_match_an_independent_count(form, tmp_path):
    metrics = ["precision", "recall", "f1", "weighted_precision", "weighted_recall", "weighted_f1"] \
        if form == "names" else {"precision": {}, "recall": {"num_classes": 3}, "f1": {"num_classes": 3},
                                 "weighted_precision": {}, "weighted_recall": {}, "weighted_f1": {"num_classes": 3}}
    model, trainer = trainer_for(tmp_path, loader(40, 7, batch_size=6), metrics)
    trainer.fit()
    got = trainer.evaluate()
    x, y = data(40, 7).tensors
    with torch.no_grad():
        logits = model(x)
    assert len(set(logits.argmax(1).tolist())) > 1 and len(set(y.tolist())) == 3  # a real mix of right and wrong
    for score in ("precision", "recall", "f1"):
        assert got[f"metrics/eval/{score}"] == pytest.approx(macro_average(logits, y, score), rel=1e-12), score
        assert got[f"metrics/eval/weighted_{score}"] == pytest.approx(
            macro_average(logits, y, score, weighted=True), rel=1e-12), score
        assert got[f"metrics/eval/weighted_{score}"] != pytest.approx(got[f"metrics/eval/{score}"])
    assert got["metrics/eval/precision"] != pytest.approx(got["metrics/eval/recall"])


def test_a_metrics_own_errors_reach_the_caller_with_its_type(tmp_path):
    class Broken(ErrorRate):
        def update(self, outputs, target):
            raise ValueError("bad update")

    class NotANumber(ErrorRate):
        def compute(self):
            return [1, 2]

    _, trainer = trainer_for(tmp_path, loader(8, 2), [Broken()])
    with pytest.raises(ValueError, match="bad update") as e:
        trainer.evaluate()
    if sys.version_info >= (3, 11):  # exception notes (PEP 678)
        assert 'in metric "error_rate", update()' in e.value.__notes__
    _, trainer = trainer_for(tmp_path, loader(8, 2), [NotANumber()])
    with pytest.raises(tessera.InputError, match=r"metric \"error_rate\"'s compute\(\) returned .*expected a number"):
        trainer.evaluate()


class RecallPerClass(ErrorRate):
    """Shaped like torchmetrics' MulticlassRecall(average=None): compute() returns one value per class."""
    name = "recall_each"

    def reset(self):
        self.hits, self.targets = torch.zeros(3), torch.zeros(3)

    def update(self, outputs, target):
        right = outputs.argmax(1) == target
        self.hits += torch.bincount(target[right], minlength=3).float()
        self.targets += torch.bincount(target, minlength=3).float()

    def compute(self):
        return self.hits / self.targets.clamp(min=1)


class ClassWise(RecallPerClass):
    """Shaped like torchmetrics' ClasswiseWrapper: a dict of values by the classes' names."""
    name = "classwise"

    def compute(self):
        return {label: value for label, value in zip(("none", "one", "both"), super().compute())}


def test_per_class_values_come_with_the_average_and_from_python_metrics_of_several_values(tmp_path):
    model, trainer = trainer_for(tmp_path, loader(40, 7, batch_size=6),
                                 {"recall": {"per_class": True}, "f1": {"num_classes": 3, "per_class": True},
                                  "each": RecallPerClass(), "wise": ClassWise(), "precision": {}})
    trainer.fit()
    got = trainer.evaluate()
    x, y = data(40, 7).tensors
    with torch.no_grad():
        predicted = model(x).argmax(1)
    for c, label in enumerate(("none", "one", "both")):
        one = y == c
        recall = float(((predicted == c) & one).sum()) / float(one.sum())
        tp, fp, fn = (float(((predicted == c) & one).sum()), float(((predicted == c) & ~one).sum()),
                      float(((predicted != c) & one).sum()))
        assert got[f"metrics/eval/recall/class_{c}"] == pytest.approx(recall, rel=1e-12)
        assert got[f"metrics/eval/f1/class_{c}"] == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-12)
        assert got[f"metrics/eval/each/{c}"] == pytest.approx(recall, rel=1e-6)
        assert got[f"metrics/eval/wise/{label}"] == pytest.approx(recall, rel=1e-6)
    # The averages as before; a Python metric of several values has its parts only; no per_class, no parts.
    assert got["metrics/eval/recall"] == pytest.approx(macro_average(model(x).detach(), y, "recall"), rel=1e-12)
    assert "metrics/eval/each" not in got and "metrics/eval/wise" not in got
    assert not [k for k in got if k.startswith("metrics/eval/precision/")]
    assert len(got) == 1 + 3 + 1 + 3 + 3 + 3 + 1
    # An evaluation's values replace the evaluator's earlier ones: a part no longer reported is gone.
    class Shifting(ErrorRate):
        calls = 0

        def compute(self):
            Shifting.calls += 1
            return {"first": 1.0} if Shifting.calls == 1 else {"later": 2.0}

    _, trainer = trainer_for(tmp_path, loader(8, 2), {"accuracy": "accuracy", "shift": Shifting()})
    assert set(trainer.evaluate()) == {"metrics/eval/accuracy", "metrics/eval/shift/first"}
    assert set(trainer.evaluate()) == {"metrics/eval/accuracy", "metrics/eval/shift/later"}
    assert "metrics/eval/shift/first" not in trainer.state.metrics
    assert trainer.state.metrics["metrics/eval/shift/later"] == 2.0
    # A confusion matrix (rows: true classes, columns: predicted), as torchmetrics' MulticlassConfusionMatrix gives
    # it: one part per cell, "<row>_<column>".
    class Confusion(ErrorRate):
        def reset(self):
            self.cells = torch.zeros(3, 3)

        def update(self, outputs, target):
            self.cells += torch.bincount(target * 3 + outputs.argmax(1), minlength=9).view(3, 3).float()

        def compute(self):
            return self.cells

    model, trainer = trainer_for(tmp_path, loader(40, 7, batch_size=6), {"confusion": Confusion()})
    got = trainer.evaluate()
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert len(got) == 9
    for t in range(3):
        for p in range(3):
            assert got[f"metrics/eval/confusion/{t}_{p}"] == float(((y == t) & (predicted == p)).sum())
    # What a compute() may return: a number, a tensor, a dict of numbers by name.
    for value, why in (([0.5, 0.25], "returned [0.5, 0.25] (list)"), (torch.zeros(2, dtype=torch.cfloat), "(Tensor)"),
                       ({}, "returned an empty dict"), ({1: 0.5}, "returned a dict with the key 1 (int)"),
                       ({"a": "x"}, "returned 'x' (str) under \"a\"")):
        class Bad(ErrorRate):
            def compute(self):
                return value

        _, trainer = trainer_for(tmp_path, loader(8, 2), [Bad()])
        with pytest.raises(tessera.InputError) as e:
            trainer.evaluate()
        assert why in str(e.value) and "expected a number (a float, or a tensor of one element), a tensor of " \
            "several (one value per class, or a confusion matrix) or a dict of numbers by name" in str(e.value), \
            str(e.value)
