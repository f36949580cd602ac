"""Errors surface as Python exceptions carrying the C++ message (where, what, what was expected)."""
import pytest

import tessera
from conftest import tiny_components


def test_exception_hierarchy():
    assert issubclass(tessera.Error, RuntimeError)
    assert issubclass(tessera.InputError, tessera.Error)
    assert issubclass(tessera.InputError, ValueError)


def test_recipe_file_errors_point_at_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_duration: 1ep\nmodel: {mlp: {}}\noptimizer:\n  sgd: {lr: -0.1}\n"
                   "data: {train: {dataset: {synthetic: {}}}}\n")
    with pytest.raises(tessera.InputError, match=r"bad\.yaml:4:\d+: optimizer\.sgd\.lr: -0\.1 is out of range"):
        tessera.Trainer(bad)
    with pytest.raises(tessera.InputError, match=r"not found"):
        tessera.load_recipe(tmp_path / "missing.yaml")


def test_dict_recipe_and_override_errors():
    with pytest.raises(tessera.InputError, match=r'unknown model "mlpp"; did you mean "mlp"\?'):
        tessera.Trainer(**tiny_components(model={"mlpp": {}}))
    with pytest.raises(tessera.InputError, match=r"optimizer\.sgd\.momentom.*did you mean \"momentum\""):
        tessera.Trainer(**tiny_components(optimizer={"sgd": {"momentom": 0.9}}))
    with pytest.raises(tessera.InputError, match=r"max_duration.*1\.5ba"):
        tessera.Trainer(**tiny_components(max_duration="1.5ba"))
    with pytest.raises(tessera.InputError, match=r"<command line> override 1: seed"):
        tessera.Trainer(tiny_components_recipe(), {"seed": -5})
    with pytest.raises(tessera.InputError, match="give a recipe, or the components"):
        tessera.Trainer(model={"mlp": {}})
    with pytest.raises(tessera.InputError, match="not a finite number"):
        tessera.Trainer(**tiny_components(optimizer={"sgd": {"lr": float("nan")}}))


def tiny_components_recipe():
    kw = tiny_components()
    return {"model": kw["model"], "data": {"train": kw["train_data"]}, "optimizer": kw["optimizer"],
            "max_duration": kw["max_duration"]}


def test_load_recipe_and_plan_are_python_data(tiny_recipe_path):
    recipe = tessera.load_recipe(tiny_recipe_path, ["optimizer.sgd.lr=0.01"])
    d = recipe.to_dict()
    assert d["optimizer"] == {"sgd": {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005}}
    assert d["data"]["train"]["dataset"]["synthetic"]["input_shape"] == [1, 8, 8]
    assert d["max_duration"] == "3ep"
    assert "lr: 0.01" in recipe.text
    plan = tessera.plan(tiny_recipe_path, {"run_dir": "unused", "loggers": [],
                                            "algorithms": [{"label_smoothing": {}}]}) \
        if "label_smoothing" in tessera.algorithms.registered() else tessera.plan([tessera.algorithms.LabelSmoothing()])
    assert plan["before_loss"] == ["label_smoothing"]
    assert plan.to_dict()["after_loss"] == ["label_smoothing"]
    assert "before_loss" in str(plan) and plan.warnings == []


def test_runtime_errors_are_tessera_errors():
    batch = tessera.Batch()
    with pytest.raises(KeyError, match="input"):
        batch["input"]
    trainer = tessera.Trainer(**tiny_components())
    with pytest.raises(tessera.Error):
        trainer.state.model.forward(tessera.Batch())  # no "input" part: a C++ tessera::Error


def test_device_keyword():
    """device="cpu" trains bit for bit like the default (auto is the CPU without CUDA); bad or absent devices
    are refused in the constructor, before anything runs."""
    import torch

    default = tessera.Trainer(**tiny_components())
    default.fit()
    cpu = tessera.Trainer(**tiny_components(device="cpu"))
    assert cpu.options["device"] == "cpu" and cpu.state.device == "cpu"
    cpu.fit()
    assert cpu.weights_fingerprint() == default.weights_fingerprint()
    assert all(p.device.type == "cpu" for p in cpu.model.named_parameters().values())
    assert default.options["device"] == "auto"
    if not torch.cuda.is_available():
        assert default.state.device == "cpu"
        with pytest.raises(tessera.InputError,
                           match=r"device: cuda was requested but CUDA is not available here .*use device: cpu or auto"):
            tessera.Trainer(**tiny_components(device="cuda"))
        with pytest.raises(tessera.InputError, match=r"device: cuda:1 was requested but CUDA is not available"):
            tessera.Trainer(tiny_components_recipe(), device="cuda:1")
    with pytest.raises(tessera.InputError,
                       match=r'device: "bogus" is not a device; expected cpu, cuda, cuda:N \(N = 0, 1, \.\.\.\) or auto'):
        tessera.Trainer(**tiny_components(device="bogus"))
    with pytest.raises(tessera.InputError, match=r'"cuda:x" is not a device'):
        tessera.Trainer(tiny_components_recipe(), {"device": "cuda:x"})


def test_repr_of_a_trainer_whose_constructor_raised_does_not_crash():
    """pytest and debuggers show `self` of a constructor that raised: there is no native trainer behind it."""
    unbuilt = tessera.Trainer.__new__(tessera.Trainer)
    assert repr(unbuilt) == "tessera.Trainer(<not constructed: its constructor raised>)"
