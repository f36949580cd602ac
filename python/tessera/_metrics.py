"""The Trainer's `eval_metrics` and `train_metrics`: the metrics of the evaluators made from `eval_dataloader`, and of
the training on `train_dataloader`. Each is a Tessera metric
by name ("accuracy", "top5_accuracy", "cross_entropy", "perplexity", "precision", "recall", "f1", and the weighted
averages "weighted_precision", "weighted_recall", "weighted_f1"), in a dict by name
with its options ({"f1": {"num_classes": 10, "per_class": True}}), or a Python object with update(outputs, target),
compute() and reset(), as a torchmetrics Metric has (compute() returning a number, a 1-D tensor of one value per class,
a tensor of more dimensions (a confusion matrix: parts "<row>_<column>"), or a dict of numbers by name); a class of
one's own may add counts() and set_counts(counts), the sums behind its value, so that data-parallel runs add them up
over the ranks exactly."""
from __future__ import annotations

import copy
from typing import Any, List, Mapping, Optional, Tuple

from . import _C

# (name, None) for a Tessera metric, (name, {options}) for one with options, (name, object) for a Python metric.
MetricEntry = Tuple[str, Optional[Any]]


def _entry(where: str, key: Optional[str], metric: Any) -> MetricEntry:
    if isinstance(metric, str):
        if key is not None and key != metric:
            raise _C.InputError(f"{where}: a Tessera metric is named by itself; give {metric!r} in a list, or an "
                                "object under a name of your choosing")
        return metric, None
    if isinstance(metric, Mapping):
        if key is None:
            raise _C.InputError(f"{where}: a dict of options names no metric; give the metric's options under its name "
                                "in a dict: eval_metrics={'f1': {'num_classes': 10}}")
        return key, dict(metric)
    if isinstance(metric, type):
        raise _C.InputError(f"{where}: the class {metric.__name__} is given; expected a metric object, an instance: "
                            f"{metric.__name__}()")
    missing = [m for m in ("update", "compute", "reset") if not callable(getattr(metric, m, None))]
    if missing:
        raise _C.InputError(f"{where}: a {type(metric).__name__} has no {', '.join(m + '()' for m in missing)}; "
                            "expected a metric name (tessera.registered('metrics')) or an object with update(outputs, "
                            "target), compute() and reset() (a torchmetrics Metric, or a class of your own)")
    if callable(getattr(metric, "counts", None)) != callable(getattr(metric, "set_counts", None)):
        raise _C.InputError(f"{where}: a {type(metric).__name__} has only one of counts() and set_counts(); give both "
                            "(the sums behind its value, added up over ranks) or neither")
    name = key if key is not None else getattr(metric, "name", None)
    if not isinstance(name, str) or not name:
        name = type(metric).__name__
    if "/" in name:
        raise _C.InputError(f"{where}: the name {name!r} has a '/', which separates a metric's parts in its keys "
                            f"(metrics/<label>/<name>/<part>); name it without one, e.g. {name.replace('/', '_')!r}")
    return name, metric


def entries(metrics: Any, keyword: str) -> List[MetricEntry]:
    """(name, None for Tessera's or the object) for each metric of the `keyword` argument (a list, or a dict by
    name); InputError, saying why, for what is not a metric, or two of one name."""
    if isinstance(metrics, (str, bytes)) or not isinstance(metrics, (list, tuple, Mapping)):
        raise _C.InputError(f"{keyword}: expected a list of metrics (names or objects) or a dict of them by name, got "
                            f"a {type(metrics).__name__}")
    if isinstance(metrics, Mapping):
        out = [_entry(f"{keyword}[{k!r}]", str(k), m) for k, m in metrics.items()]
    else:
        out = [_entry(f"{keyword}[{i}]", None, m) for i, m in enumerate(metrics)]
    names = [n for n, _ in out]
    for n in names:
        if names.count(n) > 1:
            raise _C.InputError(f"{keyword}: two metrics are named {n!r}; give them as a dict to name each, or a "
                                "`name` attribute")
    if not out:
        raise _C.InputError(f"{keyword}: empty; give at least one metric, or leave it out for accuracy")
    return out


def per_evaluator(eval_metrics: Any, evaluators: int) -> List[List[MetricEntry]]:
    """The entries of `eval_metrics` for each evaluator; evaluators after the first get deep copies of the objects, so
    that each accumulates its own data."""
    first = entries(eval_metrics, "eval_metrics")
    return [first if i == 0 else [(n, copy.deepcopy(m)) for n, m in first] for i in range(evaluators)]
