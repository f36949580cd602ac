"""Writes the type stubs whose keyword arguments come from the C++ Options (algorithms.pyi, data.pyi).

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
        "from typing import Any, Dict, List, Mapping, Union",
        "",
        "from ._C import Algorithm as Algorithm, AlgorithmSpec as AlgorithmSpec, Time",
        "",
    ]
    for name in ("BlurPool", "LabelSmoothing", "LayerFreezing", "ProgressiveResizing", "SelectiveBackprop"):
        cls = getattr(algorithms, name)
        lines += [
            f"class {name}(Algorithm):",
            f"    def __init__(self, *, {_kwargs(cls.__doc__)}) -> None: ...",
            "    @property",
            "    def options(self) -> Dict[str, Any]: ...",
        ]
        extra = {"BlurPool": ("counts", "Dict[str, int]"), "LayerFreezing": ("frozen_depth", "int"),
                 "ProgressiveResizing": ("last_scale", "float")}.get(name)
        if extra:
            lines += ["    @property", f"    def {extra[0]}(self) -> {extra[1]}: ..."]
        lines.append("")
    lines += [
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


def main(folder: str) -> None:
    out = pathlib.Path(folder)
    (out / "algorithms.pyi").write_text(algorithms_stub())
    (out / "data.pyi").write_text(data_stub())


if __name__ == "__main__":
    main(sys.argv[1])
