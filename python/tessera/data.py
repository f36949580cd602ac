"""Tessera's datasets as tensors (one tessera.Batch with 'input' and 'target'), e.g. to feed a plain PyTorch
loop the same data a recipe trains on:

    batch = tessera.data.synthetic(size=1024, input_shape=[1, 8, 8], num_classes=10, seed=0)
    x, y = batch["input"], batch["target"]
"""
from ._C import data as _native

fashion_mnist = _native.fashion_mnist
synthetic = _native.synthetic

__all__ = ["fashion_mnist", "synthetic"]
