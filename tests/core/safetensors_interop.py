"""PyPI's safetensors against Tessera's files (tests/core/safetensors_test.cpp).

    safetensors_interop.py check FILE   # FILE, written by Tessera, holds the known tensors: load it with safetensors
    safetensors_interop.py write FILE   # write the known tensors with safetensors, for Tessera to read

The known tensors: arange(n) * 0.37 - 1 in float64, converted to each dtype (bool: arange(n) % 3 == 0), shaped.
Runs in the streaming peers' venv (scripts/install-peers.sh streaming), which holds safetensors.
"""
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

SHAPES = {"f64": (torch.float64, [2, 3]), "f32": (torch.float32, [4]), "f16": (torch.float16, [3, 1]),
          "bf16": (torch.bfloat16, [2, 2, 2]), "i64": (torch.int64, []), "i32": (torch.int32, [5]),
          "i16": (torch.int16, [2]), "i8": (torch.int8, [3]), "u8": (torch.uint8, [4]), "bool": (torch.bool, [7]),
          "empty": (torch.float32, [0, 3])}


def known(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    x = torch.arange(n, dtype=torch.float64)
    values = (x.remainder(3) == 0) if dtype is torch.bool else (x * 0.37 - 1).to(dtype)
    return values.reshape(shape)


def main():
    command, path = sys.argv[1], sys.argv[2]
    expected = {name: known(*spec) for name, spec in SHAPES.items()}
    if command == "check":
        loaded = load_file(path)
        assert sorted(loaded) == sorted(expected), (sorted(loaded), sorted(expected))
        for name, tensor in expected.items():
            assert loaded[name].dtype == tensor.dtype, (name, loaded[name].dtype)
            assert torch.equal(loaded[name], tensor), (name, loaded[name], tensor)
        with safe_open(path, framework="pt") as f:
            assert f.metadata() == {"format": "pt", "producer": "tessera"}, f.metadata()
        print("safetensors read", len(loaded), "tensors")
    elif command == "write":
        save_file(expected, path, metadata={"producer": "python"})
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
