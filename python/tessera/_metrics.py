"""The Trainer's `eval_metrics`: the metrics of the evaluators made from `eval_dataloader`. Each is a Tessera metric
by name ("accuracy", "top5_accuracy", "cross_entropy", "perplexity") or a Python object with update(outputs,
target), compute() and reset(), as a torchmetrics Metric has; a class of one's own may add counts() and
set_counts(counts), the sums behind its value, so that data-parallel runs add them up over the ranks exactly."""
from __future__ import annotations

import copy
from typing import Any, List, Mapping, Optional, Tuple

from . import _C

MetricEntry = Tuple[str, Optional[Any]]


def _entry(where: str, key: Optional[str], metric: Any) -> MetricEntry:
    if isinstance(metric, str):
        if key is not None and key != metric:
            raise _C.InputError(f"eval_metrics[{key!r}]: a Tessera metric is named by itself; give {metric!r} in a "
                                "list, or an object under a name of your choosing")
        return metric, None
    missing = [m for m in ("update", "compute", "reset") if not callable(getattr(metric, m, None))]
    if missing:
        raise _C.InputError(f"{where}: a {type(metric).__name__} has no {', '.join(m + '()' for m in missing)}; expected "
                            "a metric name (tessera.registered('metrics')) or an object with update(outputs, target), "
                            "compute() and reset() (a torchmetrics Metric, or a class of your own)")
    if callable(getattr(metric, "counts", None)) != callable(getattr(metric, "set_counts", None)):
        raise _C.InputError(f"{where}: a {type(metric).__name__} has only one of counts() and set_counts(); give both "
                            "(the sums behind its value, added up over ranks) or neither")
    name = key if key is not None else getattr(metric, "name", None)
    if not isinstance(name, str) or not name:
        name = type(metric).__name__
    return name, metric


def per_evaluator(eval_metrics: Any, evaluators: int) -> List[List[MetricEntry]]:
    """One list of (name, None for Tessera's or the object) per evaluator; evaluators after the first get deep copies
    of the objects, so that each accumulates its own data."""
    if isinstance(eval_metrics, (str, bytes)) or not isinstance(eval_metrics, (list, tuple, Mapping)):
        raise _C.InputError(f"eval_metrics: expected a list of metrics (names or objects) or a dict of them by name, "
                            f"got a {type(eval_metrics).__name__}")
    if isinstance(eval_metrics, Mapping):
        entries = [_entry(f"eval_metrics[{k!r}]", str(k), m) for k, m in eval_metrics.items()]
    else:
        entries = [_entry(f"eval_metrics[{i}]", None, m) for i, m in enumerate(eval_metrics)]
    names = [n for n, _ in entries]
    for n in names:
        if names.count(n) > 1:
            raise _C.InputError(f"eval_metrics: two metrics are named {n!r} (metrics/<label>/{n}); give them as a dict "
                                "to name each, or a `name` attribute")
    if not entries:
        raise _C.InputError("eval_metrics: empty; give at least one metric, or leave it out for accuracy")
    return [entries if i == 0 else [(n, copy.deepcopy(m)) for n, m in entries] for i in range(evaluators)]
