"""The algorithms, each with its C++ Options as keyword arguments:

    tessera.algorithms.LabelSmoothing(smoothing=0.1)
    tessera.algorithms.SelectiveBackprop(start=0.5, end=0.9, keep=0.5)

Unknown names and out-of-range values raise tessera.InputError with the C++ message. `make` builds one from a
recipe entry ({"label_smoothing": {"smoothing": 0.2}}) through the registry.
"""
from ._C import Algorithm, AlgorithmSpec
from ._C import algorithms as _native

Alibi = _native.Alibi
AugMix = _native.AugMix
BlurPool = _native.BlurPool
ChannelsLast = _native.ChannelsLast
ColOut = _native.ColOut
CutMix = _native.CutMix
CutOut = _native.CutOut
EMA = _native.EMA
Factorize = _native.Factorize
GatedLinearUnits = _native.GatedLinearUnits
GhostBatchNorm = _native.GhostBatchNorm
GradientClipping = _native.GradientClipping
GyroDropout = _native.GyroDropout
GyroDropoutMasks = _native.GyroDropoutMasks
LabelSmoothing = _native.LabelSmoothing
LayerFreezing = _native.LayerFreezing
LowPrecisionGroupNorm = _native.LowPrecisionGroupNorm
LowPrecisionLayerNorm = _native.LowPrecisionLayerNorm
MixUp = _native.MixUp
NoOpModel = _native.NoOpModel
ProgressiveResizing = _native.ProgressiveResizing
RandAugment = _native.RandAugment
SAM = _native.SAM
SelectiveBackprop = _native.SelectiveBackprop
SeqLengthWarmup = _native.SeqLengthWarmup
SqueezeExcite = _native.SqueezeExcite
StochasticDepth = _native.StochasticDepth
WeightStandardization = _native.WeightStandardization
SWA = _native.SWA
make = _native.make
registered = _native.registered

__all__ = [
    "Algorithm",
    "AlgorithmSpec",
    "Alibi",
    "AugMix",
    "BlurPool",
    "ChannelsLast",
    "ColOut",
    "CutMix",
    "CutOut",
    "EMA",
    "Factorize",
    "GatedLinearUnits",
    "GhostBatchNorm",
    "GradientClipping",
    "GyroDropout",
    "GyroDropoutMasks",
    "LabelSmoothing",
    "LayerFreezing",
    "LowPrecisionGroupNorm",
    "LowPrecisionLayerNorm",
    "MixUp",
    "NoOpModel",
    "ProgressiveResizing",
    "RandAugment",
    "SAM",
    "SelectiveBackprop",
    "SeqLengthWarmup",
    "SqueezeExcite",
    "StochasticDepth",
    "WeightStandardization",
    "SWA",
    "make",
    "registered",
]
