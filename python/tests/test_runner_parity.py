"""A recipe trained from Python matches the same recipe run by tessera-run, bit for bit."""
import subprocess

import pytest

import tessera
from conftest import metrics_without_wct


def _run_cli(runner, recipe, run_dir, *overrides):
    proc = subprocess.run(
        [str(runner), str(recipe), f"run_dir={run_dir}", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _cli_fingerprint(stdout):
    """The fingerprint tessera-run prints as its last line: `weights-fingerprint: <16 hex digits>`."""
    last = stdout.splitlines()[-1]
    assert last.startswith("weights-fingerprint: "), stdout
    return last.split(":", 1)[1].strip()


def test_python_run_equals_tessera_run(runner, tiny_recipe_path, tmp_path):
    stdout = _run_cli(runner, tiny_recipe_path, tmp_path / "cli")

    trainer = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path / "py")})
    trainer.fit()
    trainer.close()

    # every logged value (the loss of every batch, train accuracy, lr, eval metrics) is bitwise equal: the
    # JSON numbers are written in their shortest round-trip form
    cli_lines = metrics_without_wct(tmp_path / "cli" / "metrics.jsonl")
    py_lines = metrics_without_wct(tmp_path / "py" / "metrics.jsonl")
    assert len(py_lines) > 0
    assert py_lines == cli_lines

    # the final weights: tessera-run prints their fingerprint (FNV-1a over every parameter and buffer), which
    # it also logs as the weights_fingerprint hyperparameter, the last line of metrics.jsonl
    fingerprint = _cli_fingerprint(stdout)
    assert len(fingerprint) == 16
    assert trainer.weights_fingerprint() == fingerprint
    assert py_lines[-1] == {"hparams": {"weights_fingerprint": fingerprint}}


def test_dict_recipe_and_components_equal_the_file(tiny_recipe_path, tmp_path):
    """The same run from a YAML file, from a dict, and from components gives the same weights."""
    from_file = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path / "a"), "loggers": []})
    from_file.fit()

    as_dict = tessera.load_recipe(tiny_recipe_path).to_dict()
    as_dict["run_dir"] = str(tmp_path / "b")
    as_dict["loggers"] = []
    from_dict = tessera.Trainer(as_dict)
    from_dict.fit()

    d = tessera.load_recipe(tiny_recipe_path).to_dict()
    from_components = tessera.Trainer(
        model=d["model"],
        train_data=d["data"]["train"],
        eval_data=d["data"]["eval"],
        optimizer=d["optimizer"],
        schedulers=d["schedulers"],
        algorithms=d["algorithms"],
        max_duration=d["max_duration"],
        seed=d["seed"],
        threads=d["threads"],
        run_dir=str(tmp_path / "c"),
    )
    from_components.fit()

    fp = from_file.weights_fingerprint()
    assert len(fp) == 16
    assert from_dict.weights_fingerprint() == fp
    assert from_components.weights_fingerprint() == fp
    assert from_file.state.metrics == from_dict.state.metrics == from_components.state.metrics


def test_fingerprint_sees_every_bit(tiny_recipe_path, tmp_path):
    trainer = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path), "loggers": [], "max_duration": "3ba"})
    before = trainer.weights_fingerprint()
    assert trainer.model.weights_fingerprint() == before
    w = trainer.model.named_parameters()["fc.weight"]
    with __import__("torch").no_grad():
        w.view(-1)[0] = __import__("torch").nextafter(w.view(-1)[0], w.view(-1)[0] + 1)
    assert trainer.weights_fingerprint() != before  # the Python edit reached the C++ weights: no copy


def test_evaluate_and_state_after_fit(tiny_recipe_path, tmp_path):
    trainer = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path), "loggers": []})
    trainer.fit()
    ts = trainer.state.timestamp
    assert (ts.epoch, ts.batch, ts.sample) == (3, 18, 3 * 192)
    results = trainer.eval()
    assert set(results) == {"metrics/test/accuracy", "metrics/test/cross_entropy"}
    assert results["metrics/test/accuracy"] == trainer.state.metrics["metrics/test/accuracy"]
    assert 0.0 <= results["metrics/test/accuracy"] <= 1.0
    with pytest.raises(tessera.InputError, match="nothing to train"):
        trainer.fit()
