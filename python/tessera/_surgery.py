"""Model surgery on Python modules: the Python side of the surgery algorithms, for models given to the Trainer
as a torch.nn.Module. The replacement modules call the same C++ functions (and so the same registered
operators, torch.ops.tessera.*) as the C++ replacements, so a Python model gets the fused kernels too, with the
same results; each mirrors its C++ twin in algorithms/<name>/ (names of submodules and parameters included, so
checkpoints look alike).

The Trainer calls apply(module, algorithm, dry_run) at INIT (dry_run=True at plan time, to count).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch

from . import _C
from ._C import InputError


def _pair(v: Any) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class BlurConv2d(torch.nn.Module):
    """A strided convolution with anti-aliasing (algorithms/blurpool: BlurConv2dImpl): blur (stride 1) then the
    original conv, or the conv at stride 1 then blur with the original stride. The conv keeps its parameters."""

    def __init__(self, conv: torch.nn.Conv2d, blur_first: bool) -> None:
        super().__init__()
        self.stride = _pair(conv.stride)
        self.blur_first = blur_first
        if not blur_first:
            conv.stride = (1, 1)
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur_first:
            return self.conv(_C._blur2d(x, [1, 1]))
        return _C._blur2d(self.conv(x), list(self.stride))


class BlurMaxPool2d(torch.nn.Module):
    """max-pool with stride 1, then blur with the original stride (algorithms/blurpool: BlurMaxPool2dImpl)."""

    def __init__(self, pool: torch.nn.MaxPool2d) -> None:
        super().__init__()
        if pool.return_indices:
            raise InputError("blurpool: a MaxPool2d with return_indices=True cannot be replaced")
        self.kernel_size = _pair(pool.kernel_size)
        self.stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        self.padding = _pair(pool.padding)
        self.dilation = _pair(pool.dilation)
        self.ceil_mode = bool(pool.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _C._blur_maxpool2d(x, list(self.kernel_size), list(self.stride), list(self.padding),
                                  list(self.dilation), self.ceil_mode)


class GhostBatchNorm(torch.nn.Module):
    """A batch norm over ghost batches (algorithms/ghost_batchnorm: GhostBatchNormLayerImpl), holding the tensors of
    the BatchNorm1d/2d/3d it replaces under the same names."""

    def __init__(self, bn: torch.nn.modules.batchnorm._BatchNorm, dims: Tuple[int, ...], ghost_batch_size: int) -> None:
        super().__init__()
        self.num_features = bn.num_features
        self.eps = bn.eps
        self.momentum = bn.momentum
        self.dims = dims
        self.ghost_batch_size = ghost_batch_size
        self.weight = bn.weight
        self.bias = bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in self.dims:
            raise InputError(
                f"GhostBatchNorm: expected a {'- or '.join(map(str, self.dims))}-D input (as the batch norm it "
                f"replaced), got {list(x.shape)}"
            )
        return _C.functional.ghost_batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                              self.training, self.momentum, self.eps, self.ghost_batch_size,
                                              self.num_batches_tracked)


class LowPrecisionLayerNorm(torch.nn.Module):
    """A LayerNorm computed in the autocast dtype under autocast (algorithms/low_precision_layernorm:
    LowPrecisionLayerNormImpl), holding the weight and bias of the torch.nn.LayerNorm it replaces under the same
    names."""

    def __init__(self, ln: torch.nn.LayerNorm) -> None:
        super().__init__()
        self.normalized_shape = tuple(ln.normalized_shape)
        self.eps = ln.eps
        self.weight = ln.weight
        self.bias = ln.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _C.functional.low_precision_layer_norm(x, list(self.normalized_shape), self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class LowPrecisionGroupNorm(torch.nn.Module):
    """A GroupNorm computed in the autocast dtype under autocast (algorithms/low_precision_groupnorm:
    LowPrecisionGroupNormImpl), holding the weight and bias of the torch.nn.GroupNorm it replaces under the same
    names."""

    def __init__(self, gn: torch.nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups = gn.num_groups
        self.num_channels = gn.num_channels
        self.eps = gn.eps
        self.weight = gn.weight
        self.bias = gn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _C.functional.low_precision_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class GyroDropout(torch.nn.Module):
    """Gyro dropout in place of a torch.nn.Dropout (algorithms/gyro_dropout: GyroDropoutLayerImpl): the layer's masks
    live in C++ (tessera.algorithms.GyroDropoutMasks), where the algorithm moves them to each batch's period."""

    def __init__(self, masks: Any) -> None:
        super().__init__()
        self.masks = masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.masks.forward(x, self.training)

    def extra_repr(self) -> str:
        return f"layer={self.masks.layer}"


class SqueezeExcite2d(torch.nn.Module):
    """The SE block (algorithms/squeeze_excite: SqueezeExcite2dImpl): bias-free fc1 (C -> d) and fc2 (d -> C)."""

    def __init__(self, channels: int, latent: int, like: torch.Tensor) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(channels, latent, bias=False, device=like.device, dtype=like.dtype)
        self.fc2 = torch.nn.Linear(latent, channels, bias=False, device=like.device, dtype=like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _C.functional.squeeze_excite(x, self.fc1.weight, self.fc2.weight)


class SqueezeExciteConv2d(torch.nn.Module):
    """A conv followed by an SE block (algorithms/squeeze_excite: SqueezeExciteConv2dImpl): children conv and se."""

    def __init__(self, conv: torch.nn.Conv2d, latent: int) -> None:
        super().__init__()
        self.conv = conv
        self.se = SqueezeExcite2d(conv.out_channels, latent, conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv(x))


class WeightStandardizedConv(torch.nn.Module):
    """A convolution that standardizes its weight per output channel at every forward (algorithms/
    weight_standardization: WeightStandardizedConvImpl), holding the conv's weight and bias under those names."""

    def __init__(self, conv: torch.nn.Module, eps: float) -> None:
        super().__init__()
        self.weight = conv.weight
        if conv.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = conv.bias
        self.eps = eps
        self._conv = (conv,)  # the original, unregistered: its _conv_forward does padding modes and groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv[0]._conv_forward(x, _C.functional.standardize_weight(self.weight, self.eps), self.bias)
class _Factorized(torch.nn.Module):
    """Two layers in sequence, module0 then module1 (algorithms/factorize: FactorizedConv2dImpl and
    FactorizedLinearImpl), initialised from the truncated SVD of the replaced layer's weight by the C++
    factorize_matrix: module0's weight S_r^1/2 V_r^T, module1's U_r S_r^1/2 and the original bias."""

    def __init__(self, layer: torch.nn.Module, module0: torch.nn.Module, module1: torch.nn.Module, rank: int) -> None:
        super().__init__()
        self.rank = rank
        weight = layer.weight.detach()
        module0.to(device=weight.device, dtype=weight.dtype)
        module1.to(device=weight.device, dtype=weight.dtype)
        first, second = _C.functional.factorize_matrix(weight.reshape(weight.shape[0], -1), rank)
        with torch.no_grad():
            module0.weight.copy_(first.view_as(module0.weight))
            module1.weight.copy_(second.view_as(module1.weight))
            if layer.bias is not None:
                module1.bias.copy_(layer.bias.detach())
        self.module0 = module0
        self.module1 = module1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module1(self.module0(x))


class FactorizedConv2d(_Factorized):
    """A Conv2d as a k x k conv to `rank` channels (no bias; the conv's stride, padding, dilation and padding mode)
    then a 1x1 conv to the output channels (the conv's bias)."""

    def __init__(self, conv: torch.nn.Conv2d, rank: int) -> None:
        first = torch.nn.Conv2d(conv.in_channels, rank, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                                dilation=conv.dilation, bias=False, padding_mode=conv.padding_mode)
        second = torch.nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None)
        super().__init__(conv, first, second, rank)


class FactorizedLinear(_Factorized):
    """A Linear as a Linear to `rank` features (no bias) then one to the outputs (the layer's bias)."""

    def __init__(self, linear: torch.nn.Linear, rank: int) -> None:
        first = torch.nn.Linear(linear.in_features, rank, bias=False)
        second = torch.nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
        super().__init__(linear, first, second, rank)


def _replace(module: torch.nn.Module, policy: Callable[[torch.nn.Module], Any], dry_run: bool) -> Dict[str, int]:
    """Applies `policy` (module -> (kind, replacement) or None) to every submodule that existed before."""
    counts: Dict[str, int] = {}
    targets = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            decision = policy(child)
            if decision is not None:
                targets.append((parent, name, decision))
    for parent, name, (kind, make) in targets:
        counts[kind] = counts.get(kind, 0) + 1
        if not dry_run:
            setattr(parent, name, make())
    return counts


def _wrapped(module: torch.nn.Module, wrapper: Any) -> set:
    """The ids of the layers that the modules of type `wrapper` (a surgery's replacements) hold already, so that the
    surgery does not wrap them again when it is applied twice."""
    return {id(child) for m in module.modules() if isinstance(m, wrapper) for child in m.children()}


def _blurpool(module: torch.nn.Module, algorithm: Any, dry_run: bool) -> Dict[str, int]:
    options = algorithm.options
    blurred = _wrapped(module, BlurConv2d)

    def policy(m: torch.nn.Module) -> Any:
        if id(m) in blurred:
            return None
        if options["replace_convs"] and type(m) is torch.nn.Conv2d:
            if max(_pair(m.stride)) > 1 and m.in_channels >= options["min_channels"]:
                return "convs", lambda: BlurConv2d(m, options["blur_first"])
        if options["replace_maxpools"] and type(m) is torch.nn.MaxPool2d:
            return "maxpools", lambda: BlurMaxPool2d(m)
        return None

    counts = _replace(module, policy, dry_run)
    return {"convs": counts.get("convs", 0), "maxpools": counts.get("maxpools", 0)}


def _ghost_batchnorm(module: torch.nn.Module, algorithm: Any, dry_run: bool) -> Dict[str, int]:
    options = algorithm.options
    dims = {torch.nn.BatchNorm1d: (2, 3), torch.nn.BatchNorm2d: (4,), torch.nn.BatchNorm3d: (5,)}

    def policy(m: torch.nn.Module) -> Any:
        if type(m) in dims:
            return "batchnorms", lambda: GhostBatchNorm(m, dims[type(m)], options["ghost_batch_size"])
        return None

    return {"batchnorms": _replace(module, policy, dry_run).get("batchnorms", 0)}


def _squeeze_excite(module: torch.nn.Module, algorithm: Any, dry_run: bool) -> Dict[str, int]:
    options = algorithm.options
    def policy(m: torch.nn.Module) -> Any:
        if type(m) is torch.nn.Conv2d and min(m.in_channels, m.out_channels) >= options["min_channels"]:
            latent = _C.functional.squeeze_excite_latent(options["latent_channels"], m.out_channels)
            return "convs", lambda: SqueezeExciteConv2d(m, latent)
        return None

    return {"convs": _replace(module, policy, dry_run).get("convs", 0)}


def _weight_standardization(module: torch.nn.Module, algorithm: Any, dry_run: bool) -> Dict[str, int]:
    options = algorithm.options
    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    convs = [m for m in module.modules() if type(m) in kinds]
    chosen = {id(m) for m in convs[: max(0, len(convs) - options["n_last_layers_ignore"])]}

    def policy(m: torch.nn.Module) -> Any:
        if id(m) in chosen:
            return "convs", lambda: WeightStandardizedConv(m, options["eps"])
        return None

    return {"convs": _replace(module, policy, dry_run).get("convs", 0)}
def _factorize(module: torch.nn.Module, algorithm: Any, dry_run: bool) -> Dict[str, int]:
    options = algorithm.options
    # The layers inside a factorized layer are not factorized again.
    factors = _wrapped(module, _Factorized)
    no_saving = [0]

    def decide(m: torch.nn.Module) -> Any:
        """(kind, rank) for a layer to factorize, else None (counting the wide layers that would save nothing)."""
        if id(m) in factors:
            return None
        if type(m) is torch.nn.Conv2d and options["factorize_convs"] and m.groups == 1:
            sizes, area = (m.in_channels, m.out_channels), m.kernel_size[0] * m.kernel_size[1]
            kind, least, latent = "convs", options["min_channels"], options["latent_channels"]
        elif type(m) is torch.nn.Linear and options["factorize_linears"]:
            sizes, area = (m.in_features, m.out_features), 1
            kind, least, latent = "linears", options["min_features"], options["latent_features"]
        else:
            return None
        if min(sizes) < least:
            return None
        rank = _C.functional.factorize_latent(latent, *sizes)
        if not _C.functional.factorize_reduces_cost(sizes[0], sizes[1], area, rank):
            no_saving[0] += 1
            return None
        return kind, rank

    def policy(m: torch.nn.Module) -> Any:
        decision = decide(m)
        if decision is None:
            return None
        kind, rank = decision
        factorized = FactorizedConv2d if kind == "convs" else FactorizedLinear
        return kind, lambda: factorized(m, rank)

    counts = _replace(module, policy, dry_run)
    return {"convs": counts.get("convs", 0), "linears": counts.get("linears", 0), "no_saving": no_saving[0]}


def _gyro_dropout(module: torch.nn.Module, algorithm: Any, dry_run: bool) -> Dict[str, int]:
    # Numbered in module order, as the C++ surgery numbers slots in visiting order; the algorithm keeps each layer's
    # masks and moves them to the batch's period.
    def policy(m: torch.nn.Module) -> Any:
        if type(m) is torch.nn.Dropout:
            return "dropouts", lambda: GyroDropout(algorithm.add_layer())
        return None

    return {"dropouts": _replace(module, policy, dry_run).get("dropouts", 0)}


def _low_precision_layernorm(module: torch.nn.Module, algorithm: Any, dry_run: bool) -> Dict[str, int]:
    def policy(m: torch.nn.Module) -> Any:
        if type(m) is torch.nn.LayerNorm:
            return "layernorms", lambda: LowPrecisionLayerNorm(m)
        return None

    return {"layernorms": _replace(module, policy, dry_run).get("layernorms", 0)}


def _low_precision_groupnorm(module: torch.nn.Module, algorithm: Any, dry_run: bool) -> Dict[str, int]:
    def policy(m: torch.nn.Module) -> Any:
        if type(m) is torch.nn.GroupNorm:
            return "groupnorms", lambda: LowPrecisionGroupNorm(m)
        return None

    return {"groupnorms": _replace(module, policy, dry_run).get("groupnorms", 0)}


#: The surgery of each algorithm (by its spec name) on Python modules.
SURGERIES: Dict[str, Callable[[torch.nn.Module, Any, bool], Dict[str, int]]] = {
    "blurpool": _blurpool,
    "factorize": _factorize,
    "ghost_batchnorm": _ghost_batchnorm,
    "gyro_dropout": _gyro_dropout,
    "low_precision_groupnorm": _low_precision_groupnorm,
    "low_precision_layernorm": _low_precision_layernorm,
    "squeeze_excite": _squeeze_excite,
    "weight_standardization": _weight_standardization,
}


def apply(module: torch.nn.Module, algorithm: Any, dry_run: bool) -> Dict[str, int]:
    name = algorithm.name
    surgery = SURGERIES.get(name)
    if surgery is None:
        raise InputError(
            f"{name}: changes the model's structure, and has no surgery for Python modules yet "
            f"(those with one: {', '.join(sorted(SURGERIES))}); use a recipe model, or leave it out"
        )
    return surgery(module, algorithm, dry_run)
