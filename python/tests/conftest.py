"""Shared fixtures of the Python tests (run by scripts/test-python.sh against the installed package)."""
import json
import os
import pathlib

import pytest

import tessera

HERE = pathlib.Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TESSERA_REPO_ROOT", HERE.parent.parent)).resolve()


@pytest.fixture(scope="session")
def tiny_recipe_path() -> pathlib.Path:
    return HERE / "tiny.yaml"


@pytest.fixture(scope="session")
def runner() -> pathlib.Path:
    """The tessera-run binary installed with the package (built from the same sources)."""
    path = pathlib.Path(tessera.__file__).parent / "tessera-run"
    assert path.is_file() and os.access(path, os.X_OK), path
    return path


def tiny_components(**overrides):
    """Keyword arguments of a small tessera.Trainer built from components."""
    kwargs = dict(
        model={"cnn": {"width": 4}},
        train_data={
            "dataset": {"synthetic": {"size": 64, "input_shape": [1, 8, 8], "num_classes": 4, "seed": 1}},
            "loader": {"batch_size": 16, "workers": 0},
        },
        optimizer={"sgd": {"lr": 0.05}},
        max_duration="2ep",
        seed=0,
        threads=1,
    )
    kwargs.update(overrides)
    return kwargs


def metrics_without_wct(path):
    """The entries of a metrics.jsonl file, without the wall-clock field and the recipe's settings (logged at Init:
    they name the run folder and checkpointing); what two runs that train alike share."""
    out = []
    for line in pathlib.Path(path).read_text().splitlines():
        entry = json.loads(line)
        entry.pop("wct", None)
        if "hparams" in entry and "weights_fingerprint" not in entry["hparams"]:
            continue
        out.append(entry)
    return out


class StopAt(tessera.Callback):
    """Asks the trainer to stop at the end of batch `batch`."""

    name = "stop_at"

    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def batch_end(self, state, logger):
        if state.timestamp.batch == self.batch:
            state.stop_training()
