"""Tessera: composable training-speedup algorithms for LibTorch, driven from Python.

    import tessera
    trainer = tessera.Trainer("examples/recipes/fashion_mnist_baseline.yaml", {"max_duration": "1ep"})
    trainer.fit()
    print(trainer.evaluate())

The training loop, the algorithms and the engine that orders them run in C++ (the GIL is released during
fit()); Python algorithms and callbacks run inside that loop at their events. See docs/python.md.
"""
import torch  # noqa: F401  (loads libtorch and its Python bindings before the extension)

try:
    from . import _C
except ImportError as exc:  # pragma: no cover - depends on the installation
    import glob as _glob
    import os as _os

    _here = _os.path.dirname(_os.path.abspath(__file__))
    if not _glob.glob(_os.path.join(_here, "_C*.so")):
        raise ImportError(
            f"tessera is imported from {_here}, which has no native module: this is the source folder. "
            "Install the package (python -m pip install --no-build-isolation ./python) and import it from "
            "another folder."
        ) from exc
    try:
        from ._build_info import torch_version as _built_with
    except ImportError:
        _built_with = "unknown"
    raise ImportError(
        f"tessera's native module failed to load ({exc}). It was built against torch {_built_with}; this "
        f"Python has torch {torch.__version__}. Reinstall it with this Python: "
        "python -m pip install --no-build-isolation ./python"
    ) from exc

from ._C import (
    Access,
    Algorithm,
    AlgorithmSpec,
    Batch,
    BatchPlace,
    Callback,
    CheckpointError,
    Conflict,
    DataLoader,
    Error,
    Event,
    InputError,
    Logger,
    LoggerDestination,
    Model,
    Optimizer,
    OrderRule,
    Recipe,
    Reduction,
    Resource,
    Rng,
    Selector,
    State,
    Time,
    Timestamp,
    TimeUnit,
    inspect_checkpoint,
    registered,
)
from . import algorithms, data, functional
from ._plan import Plan, plan
from ._recipe import load_recipe
from ._report import ReportInputError, report
from ._signals import Interrupted, Terminated
from ._spec import after, before, conflicts_with
from ._trainer import Trainer

__version__: str = _C.__version__

__all__ = [
    "Access",
    "Algorithm",
    "AlgorithmSpec",
    "Batch",
    "BatchPlace",
    "Callback",
    "CheckpointError",
    "Conflict",
    "DataLoader",
    "Error",
    "Event",
    "InputError",
    "Interrupted",
    "Logger",
    "LoggerDestination",
    "Model",
    "Optimizer",
    "OrderRule",
    "Plan",
    "Recipe",
    "Reduction",
    "ReportInputError",
    "Resource",
    "Rng",
    "Selector",
    "State",
    "Terminated",
    "Time",
    "TimeUnit",
    "Timestamp",
    "Trainer",
    "__version__",
    "after",
    "algorithms",
    "before",
    "conflicts_with",
    "data",
    "functional",
    "inspect_checkpoint",
    "load_recipe",
    "plan",
    "registered",
    "report",
]
