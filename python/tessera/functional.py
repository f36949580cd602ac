"""Tessera's functional forms on plain torch tensors, for use in your own PyTorch loop:

    y_smooth = tessera.functional.smooth_labels(y, num_classes=10, alpha=0.1)
    loss = tessera.functional.smoothed_cross_entropy(logits, y, alpha=0.1)
    x = tessera.functional.blur2d(x, stride=2)
    keep = tessera.functional.select_by_loss(per_example_losses, keep=0.5, rng=tessera.Rng(0))
    small = tessera.functional.resize_batch(images, scale=0.5)

They call the same C++ code as the algorithms (no copy of the inputs; autograd flows through the torch ops they
are made of). Where the library registers a function as a torch operator (torch.ops.tessera.<name>), that
operator is used, so C++ and Python share one dispatcher entry.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ._C import functional as _native


def _operator(name: str) -> Optional[Callable[..., Any]]:
    """torch.ops.tessera.<name> when the library registered it, else None."""
    try:
        return getattr(torch.ops.tessera, name)
    except (AttributeError, RuntimeError):
        return None


smooth_labels = _native.smooth_labels
smoothed_cross_entropy = _native.smoothed_cross_entropy
cross_entropy = _native.cross_entropy
blur2d = _native.blur2d
blur_filter = _native.blur_filter
selection_weights = _native.selection_weights
select_by_loss = _native.select_by_loss
progressive_scale = _native.progressive_scale
pinned_scale = _native.pinned_scale
resize_batch = _native.resize_batch
freeze_depth = _native.freeze_depth
apply_blurpool = _native.apply_blurpool
freeze_layers = _native.freeze_layers

__all__ = [
    "apply_blurpool",
    "blur2d",
    "blur_filter",
    "cross_entropy",
    "freeze_depth",
    "freeze_layers",
    "pinned_scale",
    "progressive_scale",
    "resize_batch",
    "select_by_loss",
    "selection_weights",
    "smooth_labels",
    "smoothed_cross_entropy",
]
