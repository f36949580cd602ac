"""Tessera's functional forms on plain torch tensors, for use in your own PyTorch loop:

    y_smooth = tessera.functional.smooth_labels(y, num_classes=10, alpha=0.1)
    loss = tessera.functional.smoothed_cross_entropy(logits, y, alpha=0.1)
    x = tessera.functional.blur2d(x, stride=2)
    keep = tessera.functional.select_by_loss(per_example_losses, keep=0.5, rng=tessera.Rng(0))
    small = tessera.functional.resize_batch(images, scale=0.5)
    x_mix, y_perm, mixing = tessera.functional.mixup_batch(x, y, alpha=0.2, rng=tessera.Rng(0))
    loss = tessera.functional.mixed_loss(ce(out, y), ce(out, y_perm), mixing)

They are the C++ functions of the algorithms (no copy of the inputs; autograd flows through them). Those that
have a kernel are registered once as torch operators by the library — torch.ops.tessera.blur2d,
smoothed_cross_entropy, select_by_loss, blur_maxpool2d, gather_rows — and the C++ functions dispatch to them,
so C++, these functions and the raw operators (also reachable as tessera.functional.ops) share one
implementation. The functions add the conventions of the C++ API on top of the operators (a blur of an image
smaller than 3x3 is the identity; reductions other than the mean; a tessera.Rng advanced in place).
"""
from __future__ import annotations

import torch

from ._C import functional as _native

#: The dispatcher operators the library registers (torch.ops.tessera.<name>).
ops = torch.ops.tessera

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
sample_mixing = _native.sample_mixing
mixup_batch = _native.mixup_batch
cutmix_batch = _native.cutmix_batch
cutout_batch = _native.cutout_batch
colout_batch = _native.colout_batch
augment_autocontrast = _native.augment_autocontrast
augment_equalize = _native.augment_equalize
augment_posterize = _native.augment_posterize
augment_solarize = _native.augment_solarize
augment_rotate = _native.augment_rotate
augment_shear_x = _native.augment_shear_x
augment_shear_y = _native.augment_shear_y
augment_translate_x = _native.augment_translate_x
augment_translate_y = _native.augment_translate_y
augment_color = _native.augment_color
augment_contrast = _native.augment_contrast
augment_brightness = _native.augment_brightness
augment_sharpness = _native.augment_sharpness
augment_apply = _native.augment_apply
augmentation_set = _native.augmentation_set
randaugment_image = _native.randaugment_image
randaugment_images = _native.randaugment_images
augmix_weights = _native.augmix_weights
augmix_image = _native.augmix_image
augmix_images = _native.augmix_images
mixed_loss = _native.mixed_loss
apply_blurpool = _native.apply_blurpool
apply_factorize = _native.apply_factorize
factorize_matrix = _native.factorize_matrix
factorize_latent = _native.factorize_latent
factorize_reduces_cost = _native.factorize_reduces_cost
apply_ghost_batchnorm = _native.apply_ghost_batchnorm
ghost_batch_norm = _native.ghost_batch_norm
apply_gyro_dropout = _native.apply_gyro_dropout
gyro_dropout = _native.gyro_dropout
gyro_dropout_masks = _native.gyro_dropout_masks
gyro_dropout_selection = _native.gyro_dropout_selection
gyro_dropout_period_length = _native.gyro_dropout_period_length
apply_squeeze_excite = _native.apply_squeeze_excite
squeeze_excite = _native.squeeze_excite
squeeze_excite_latent = _native.squeeze_excite_latent
apply_stochastic_depth = _native.apply_stochastic_depth
stochastic_depth = _native.stochastic_depth
stochastic_depth_drop_rates = _native.stochastic_depth_drop_rates
apply_weight_standardization = _native.apply_weight_standardization
standardize_weight = _native.standardize_weight
freeze_layers = _native.freeze_layers
warmup_seq_length = _native.warmup_seq_length
set_seq_length = _native.set_seq_length
mask_tokens = _native.mask_tokens
alibi_slopes = _native.alibi_slopes
alibi_bias = _native.alibi_bias
apply_alibi = _native.apply_alibi
apply_gated_linear_units = _native.apply_gated_linear_units
gated_linear_unit = _native.gated_linear_unit
save_gpt2 = _native.save_gpt2
save_huggingface = _native.save_huggingface
apply_low_precision_groupnorm = _native.apply_low_precision_groupnorm
apply_low_precision_layernorm = _native.apply_low_precision_layernorm
low_precision_group_norm = _native.low_precision_group_norm
low_precision_layer_norm = _native.low_precision_layer_norm
make_no_op_model = _native.make_no_op_model
generate = _native.generate


def apply_channels_last(model):
    """Channels-last on ``model`` (a ``torch.nn.Module`` or a ``tessera.Model``): its 4-D parameters and buffers
    (convolution weights) are stored in ``torch.channels_last`` memory order in place — the same Parameter
    objects, so an optimizer built on them keeps working — and existing gradients follow. Returns how many
    tensors were 4-D. The same code as the ChannelsLast algorithm; like ``model.to(memory_format=
    torch.channels_last)``, but the state of a ``torch.optim`` optimizer is not converted (it stays correct)."""
    if isinstance(model, torch.nn.Module):
        return _native.to_channels_last(list(model.parameters()) + list(model.buffers()))
    return _native.apply_channels_last(model)


def clip_gradients(parameters, clipping_type="norm", clipping_threshold=1.0):
    """Gradient clipping in place on the ``.grad`` of ``parameters`` (any iterable of tensors, such as
    ``model.parameters()``; those without a gradient are skipped): ``"norm"`` (the global L2 norm, as
    ``torch.nn.utils.clip_grad_norm_``), ``"value"`` or ``"adaptive"`` (AGC). Returns the norm before clipping
    for ``"norm"``, else None. The same code as the GradientClipping algorithm."""
    return _native.clip_gradients(list(parameters), clipping_type, clipping_threshold)


ema_smoothing = _native.ema_smoothing


def sam_gradients(parameters, closure, rho=0.05, epsilon=1e-12):
    """Sharpness-aware minimisation's gradient in your own PyTorch loop, after ``loss.backward()``: moves the
    parameters (any iterable of tensors, such as ``model.parameters()``; those without a gradient take no part)
    by ``rho * g / (||g|| + epsilon)``, ``g`` their gradients and ``||g||`` its global L2 norm (no move when it is
    not finite), calls ``closure()``, which must zero the gradients and run the forward and backward again, and
    puts the exact weights back; then ``optimizer.step()`` uses the gradients ``closure`` left. Returns ``||g||``,
    or None when no parameter has a gradient. The same code as the SAM algorithm."""
    return _native.sam_gradients(list(parameters), closure, rho, epsilon)


def _named_weights(module):
    return [("param/" + n, t) for n, t in module.named_parameters()] + [
        ("buffer/" + n, t) for n, t in module.named_buffers()
    ]


def compute_ema(model, ema_model, smoothing=0.99):
    """Composer's ``compute_ema``: ``ema_model`` (a copy of ``model``, e.g. ``copy.deepcopy(model)``) becomes
    ``smoothing * ema_model + (1 - smoothing) * model``, in place, parameter by parameter and buffer by buffer
    (matched by name; integer buffers such as ``num_batches_tracked`` are copied), with one multi-tensor operation
    per dtype and device. Call it after each ``optimizer.step()`` in your own loop; ``ema_smoothing("50ba")`` gives
    the smoothing of a half-life. The same code as the EMA algorithm."""
    _native.compute_ema(_named_weights(model), _named_weights(ema_model), smoothing)



def swa_update(average_model, model, count):
    """Stochastic weight averaging's snapshot: ``average_model`` (a copy of ``model``, e.g. ``copy.deepcopy(model)``)
    holding the mean of ``count`` snapshots becomes the mean of ``count + 1`` with ``model`` as the new one:
    ``(count * average_model + model) / (count + 1)``, in place, parameter by parameter and buffer by buffer
    (matched by name; integer buffers are copied). ``count=0`` copies. Call it every update interval from
    ``swa_start`` on, then load ``average_model``'s weights and recompute its batch-norm statistics
    (``torch.optim.swa_utils.update_bn``). EMA's multi-tensor update with smoothing ``count / (count + 1)``, the
    same code as the SWA algorithm."""
    _native.swa_update(_named_weights(model), _named_weights(average_model), count)


swa_annealed_lr = _native.swa_annealed_lr

__all__ = [
    "ops",
    "alibi_bias",
    "alibi_slopes",
    "apply_alibi",
    "apply_blurpool",
    "apply_channels_last",
    "apply_factorize",
    "apply_ghost_batchnorm",
    "apply_gated_linear_units",
    "apply_gyro_dropout",
    "apply_low_precision_groupnorm",
    "apply_low_precision_layernorm",
    "apply_squeeze_excite",
    "apply_stochastic_depth",
    "apply_weight_standardization",
    "augment_apply",
    "augment_autocontrast",
    "augment_brightness",
    "augment_color",
    "augment_contrast",
    "augment_equalize",
    "augment_posterize",
    "augment_rotate",
    "augment_sharpness",
    "augment_shear_x",
    "augment_shear_y",
    "augment_solarize",
    "augment_translate_x",
    "augment_translate_y",
    "augmentation_set",
    "augmix_image",
    "augmix_images",
    "augmix_weights",
    "blur2d",
    "blur_filter",
    "clip_gradients",
    "colout_batch",
    "compute_ema",
    "cross_entropy",
    "cutmix_batch",
    "cutout_batch",
    "ema_smoothing",
    "factorize_latent",
    "factorize_matrix",
    "factorize_reduces_cost",
    "freeze_depth",
    "freeze_layers",
    "gated_linear_unit",
    "ghost_batch_norm",
    "gyro_dropout",
    "gyro_dropout_masks",
    "gyro_dropout_period_length",
    "gyro_dropout_selection",
    "low_precision_group_norm",
    "low_precision_layer_norm",
    "make_no_op_model",
    "mask_tokens",
    "mixed_loss",
    "mixup_batch",
    "pinned_scale",
    "progressive_scale",
    "randaugment_image",
    "randaugment_images",
    "resize_batch",
    "sam_gradients",
    "sample_mixing",
    "save_gpt2",
    "save_huggingface",
    "select_by_loss",
    "selection_weights",
    "set_seq_length",
    "smooth_labels",
    "squeeze_excite",
    "squeeze_excite_latent",
    "standardize_weight",
    "stochastic_depth",
    "stochastic_depth_drop_rates",
    "swa_annealed_lr",
    "swa_update",
    "warmup_seq_length",
    "smoothed_cross_entropy",
]
