"""Writes the type stubs whose keyword arguments come from the C++ Options (algorithms.pyi, data.pyi,
_options.pyi).

setup.py runs this against the freshly built module, so the stubs list exactly the options each Options
struct's `visit` declares (the docstrings carry them: "    name (type, default value): help"). Not for users.
"""
from __future__ import annotations

import pathlib
import re
import sys
from typing import List, Tuple

_OPTION = re.compile(r"^    (\w+) \(([^,]+), default (.*?)\): ")


def _options(doc: str) -> List[Tuple[str, str]]:
    """[(name, type)] from a generated docstring."""
    out = []
    for line in (doc or "").splitlines():
        m = _OPTION.match(line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def _kwargs(doc: str) -> str:
    return ", ".join(f"{name}: {kind} = ..." for name, kind in _options(doc))


def algorithms_stub() -> str:
    from . import algorithms

    lines = [
        '"""Type hints of tessera.algorithms (generated from the C++ Options by tessera/_stubgen.py)."""',
        "from typing import Any, Dict, List, Mapping, Tuple, Union",
        "",
        "import torch",
        "",
        "from ._C import Algorithm as Algorithm, AlgorithmSpec as AlgorithmSpec, Time",
        "",
    ]
    for name in ("Alibi", "AugMix", "BlurPool", "ChannelsLast", "ColOut", "CutMix", "CutOut", "EMA", "Factorize",
                 "GatedLinearUnits", "GhostBatchNorm", "GradientClipping", "GyroDropout", "LabelSmoothing", "LayerFreezing",
                 "LowPrecisionGroupNorm", "LowPrecisionLayerNorm", "MixUp", "NoOpModel", "ProgressiveResizing",
                 "RandAugment", "SAM", "SelectiveBackprop", "SeqLengthWarmup", "SqueezeExcite", "StochasticDepth", "SWA",
                 "WeightStandardization"):
        cls = getattr(algorithms, name)
        kwargs = _kwargs(cls.__doc__)  # an algorithm without options takes none
        lines += [
            f"class {name}(Algorithm):",
            f"    def __init__(self, *, {kwargs}) -> None: ..." if kwargs else "    def __init__(self) -> None: ...",
            "    @property",
            "    def options(self) -> Dict[str, Any]: ...",
        ]
        extra = {"BlurPool": ("counts", "Dict[str, int]"), "ChannelsLast": ("converted", "int"), "LayerFreezing": ("frozen_depth", "int"),
                 "ColOut": ("last_kept", "List[Tuple[List[int], List[int]]]"), "CutMix": ("last_lambda", "float"),
                 "CutOut": ("last_holes", "List[Tuple[int, int, int, int]]"), "MixUp": ("last_lambda", "float"),
                 "ProgressiveResizing": ("last_scale", "float"), "GhostBatchNorm": ("replaced", "int"),
                 "GyroDropout": ("replaced", "int"), "SeqLengthWarmup": ("last_seq_length", "int"),
                 "Alibi": ("counts", "Dict[str, int]"), "GatedLinearUnits": ("replaced", "int"),
                 "LowPrecisionGroupNorm": ("replaced", "int"), "LowPrecisionLayerNorm": ("replaced", "int"),
                 "SqueezeExcite": ("replaced", "int"), "StochasticDepth": ("drop_rates", "List[float]"),
                 "WeightStandardization": ("replaced", "int"), "Factorize": ("counts", "Dict[str, int]")}.get(name)
        if extra:
            lines += ["    @property", f"    def {extra[0]}(self) -> {extra[1]}: ..."]
        if name == "GyroDropout":
            lines.append("    def add_layer(self) -> GyroDropoutMasks: ...")
        lines.append("")
    lines += [
        "class GyroDropoutMasks:",
        "    def forward(self, x: torch.Tensor, training: bool) -> torch.Tensor: ...",
        "    def selected(self, features: int) -> torch.Tensor: ...",
        "    def select(self, seed: int, period: int) -> None: ...",
        "    @property",
        "    def layer(self) -> int: ...",
        "    @property",
        "    def period(self) -> int: ...",
        "",
        "def make(entry: Union[str, Mapping[str, Any]]) -> Algorithm: ...",
        "def registered() -> List[str]: ...",
        "",
    ]
    return "\n".join(lines)


def data_stub() -> str:
    from . import data

    return "\n".join([
        '"""Type hints of tessera.data (generated from the C++ Options by tessera/_stubgen.py)."""',
        "from typing import List",
        "",
        "from ._C import Batch",
        "",
        f"def synthetic(*, {_kwargs(data.synthetic.__doc__)}) -> Batch: ...",
        f"def fashion_mnist(*, {_kwargs(data.fashion_mnist.__doc__)}) -> Batch: ...",
        "",
    ])


# Types a keyword accepts beyond the C++ field's own (tessera._recipe converts them).
_WIDER = {"run_dir": "Union[str, os.PathLike[str]]"}
# C++ option types with no Python type of the same name (python/src/common.h, option_type_name).
_TYPES = {"str | Time": "Union[str, Time]", "int | 'auto'": "Union[int, Literal['auto']]"}


# TrainerOptions fields that are options structs themselves: their TypedDict and the docstring it comes from.
_NESTED = {"profiler": ("ProfilerOptions", "_profiler_options_doc")}


def _typed_dict(name: str, doc: str) -> List[str]:
    lines = [f"class {name}(TypedDict, total=False):"]
    choices = dict(re.findall(r"^    (\w+) \(str, .*; one of: (.*)$", doc, re.M))
    for field, kind in _options(doc):
        kind = _WIDER.get(field, _TYPES.get(kind, kind))
        if field in choices:  # a fixed set of strings: Literal["error", "skip"]
            kind = "Literal[" + ", ".join(repr(c.strip()) for c in choices[field].split(",")) + "]"
        if field in _NESTED:
            kind = _NESTED[field][0]
        lines.append(f"    {field}: {kind}")
    return lines + [""]


def options_stub() -> str:
    """tessera._options.TrainerOptions: the Trainer's keyword arguments that are TrainerOptions fields, typed, so
    that a type checker catches `max_duraton=` or `seed="abc"` (Trainer(**options: Unpack[TrainerOptions]))."""
    from . import _C

    lines = [
        '"""Type hints of the Trainer\'s option keywords (generated from the C++ TrainerOptions by tessera/_stubgen.py)."""',
        "import os",
        "from typing import List, Literal, TypedDict, Union",
        "",
        "from ._C import Time",
        "",
    ]
    for nested, doc_name in _NESTED.values():
        lines += _typed_dict(nested, getattr(_C, doc_name))
    lines += _typed_dict("TrainerOptions", _C._trainer_options_doc)
    return "\n".join(lines)


def main(folder: str) -> None:
    out = pathlib.Path(folder)
    (out / "algorithms.pyi").write_text(algorithms_stub())
    (out / "data.pyi").write_text(data_stub())
    (out / "_options.pyi").write_text(options_stub())


if __name__ == "__main__":
    main(sys.argv[1])
