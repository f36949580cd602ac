"""Every algorithm takes its C++ Options as keyword arguments, validated by the C++ code."""
import pytest

import tessera
from tessera.algorithms import BlurPool, LabelSmoothing, LayerFreezing, ProgressiveResizing, SelectiveBackprop

DEFAULTS = {
    BlurPool: {"replace_convs": True, "replace_maxpools": True, "blur_first": True, "min_channels": 16,
               "allow_no_change": False},
    LabelSmoothing: {"smoothing": 0.1, "fused": True},
    LayerFreezing: {"freeze_start": 0.5, "freeze_level": 1.0},
    ProgressiveResizing: {"mode": "resize", "interpolation": "bilinear", "initial_scale": 0.5, "delay_fraction": 0.5,
                          "finetune_fraction": 0.2, "size_increment": 4, "resize_targets": False},
    SelectiveBackprop: {"start": 0.5, "end": 0.9, "keep": 0.5, "scale_factor": 1.0, "interrupt": 2},
}
NAMES = {BlurPool: "blurpool", LabelSmoothing: "label_smoothing", LayerFreezing: "layer_freezing",
         ProgressiveResizing: "progressive_resizing", SelectiveBackprop: "selective_backprop"}


@pytest.mark.parametrize("cls", list(DEFAULTS), ids=lambda c: c.__name__)
def test_defaults_names_and_docs(cls):
    alg = cls()
    assert isinstance(alg, tessera.Algorithm)
    assert alg.options == DEFAULTS[cls]
    assert alg.name == NAMES[cls] == alg.spec().name
    # the docstring lists every option (generated from the Options' visit)
    for key in DEFAULTS[cls]:
        assert f"    {key} (" in cls.__doc__
    assert repr(alg).startswith(cls.__name__ + "(")


def test_keyword_arguments_set_the_options():
    assert LabelSmoothing(smoothing=0.2, fused=False).options == {"smoothing": 0.2, "fused": False}
    sb = SelectiveBackprop(start=0.1, end=0.8, keep=0.25, interrupt=0)
    assert sb.options["keep"] == 0.25 and sb.options["interrupt"] == 0
    assert ProgressiveResizing(mode="crop", size_increment=2).options["mode"] == "crop"
    assert BlurPool(min_channels=3.0).options["min_channels"] == 3  # a whole float is a whole number
    assert repr(LabelSmoothing(smoothing=0.25)) == "LabelSmoothing(smoothing=0.25, fused=True)"


def test_validation_errors_carry_the_cpp_message():
    with pytest.raises(tessera.InputError, match=r"label_smoothing\.smoothing.*out of range.*\[0, 1\)") as err:
        LabelSmoothing(smoothing=1.5)
    assert isinstance(err.value, ValueError) and isinstance(err.value, tessera.Error)
    with pytest.raises(tessera.InputError, match=r'unknown option "smoothng"; did you mean "smoothing"\?'):
        LabelSmoothing(smoothng=0.1)
    with pytest.raises(tessera.InputError, match=r"selective_backprop\.keep: expected a number, got 'half'"):
        SelectiveBackprop(keep="half")
    with pytest.raises(tessera.InputError, match=r"label_smoothing\.fused: expected True or False, got 1"):
        LabelSmoothing(fused=1)
    with pytest.raises(tessera.InputError, match=r"blurpool\.min_channels: expected a whole number, got 2\.5"):
        BlurPool(min_channels=2.5)
    with pytest.raises(tessera.InputError, match=r"progressive_resizing\.mode.*\"zoom\".*resize, crop"):
        ProgressiveResizing(mode="zoom")
    with pytest.raises(ValueError):  # catchable as a plain ValueError
        LayerFreezing(freeze_level=2)


def test_algorithm_objects_train_like_recipe_entries(tmp_path):
    """Algorithms given as Python objects train exactly like the same recipe entries."""
    from conftest import tiny_components

    objects = [SelectiveBackprop(start=0.0, end=1.0, keep=0.5), LabelSmoothing(smoothing=0.2)]
    a = tessera.Trainer(**tiny_components(), algorithms=objects)
    a.fit()
    if "label_smoothing" not in tessera.algorithms.registered():
        pytest.skip("the registry does not list the algorithms yet")
    entries = [{"selective_backprop": {"start": 0.0, "end": 1.0, "keep": 0.5}}, {"label_smoothing": {"smoothing": 0.2}}]
    b = tessera.Trainer(**tiny_components(), algorithms=entries)
    b.fit()
    assert a.weights_fingerprint() == b.weights_fingerprint()
    assert [x.name for x in b.algorithms] == ["selective_backprop", "label_smoothing"]
    assert isinstance(b.algorithms[1], LabelSmoothing) and b.algorithms[1].options["smoothing"] == 0.2
