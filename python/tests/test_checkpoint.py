"""Checkpoints from Python: a run trained in two halves (killed, then resumed) equals the run in one go, bit for
bit; tessera.inspect_checkpoint; invalid files raise tessera.CheckpointError with the C++ message."""
import shutil

import pytest

import tessera
from conftest import StopAt, metrics_without_wct


class Killed(Exception):
    """What the KillAt callback raises: the run dies after a batch, like a process killed there."""


class KillAt(tessera.Callback):
    """Raises Killed at the end of batch `batch` (after its metrics were logged, before any checkpoint)."""

    name = "kill_at"

    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def batch_end(self, state, logger):
        if state.timestamp.batch == self.batch:
            raise Killed(f"killed after batch {self.batch}")


@pytest.fixture(scope="module")
def one_go(tiny_recipe_path, tmp_path_factory):
    """The tiny recipe (3 epochs of 6 batches) in one go: (fingerprint, metrics lines)."""
    run_dir = tmp_path_factory.mktemp("one_go")
    trainer = tessera.Trainer(tiny_recipe_path, {"run_dir": str(run_dir)})
    trainer.fit()
    trainer.close()
    assert trainer.loaded_checkpoint == "" and trainer.last_checkpoint == ""
    return trainer.weights_fingerprint(), metrics_without_wct(run_dir / "metrics.jsonl")


def _resumable(tiny_recipe_path, run_dir, **kwargs):
    checkpoint = {"folder": "ck", "interval": "4ba", "autoresume": True}
    return tessera.Trainer(tiny_recipe_path, {"run_dir": str(run_dir)}, checkpoint=checkpoint, **kwargs)


def test_killed_and_autoresumed_run_equals_the_run_in_one_go(tiny_recipe_path, tmp_path, one_go):
    fingerprint, metrics = one_go
    # First half: checkpoints after batches 4 and 8, killed after batch 9 (mid-epoch).
    first = _resumable(tiny_recipe_path, tmp_path, callbacks=[KillAt(9)])
    assert first.loaded_checkpoint == ""  # an empty folder starts fresh
    with pytest.raises(Killed, match="killed after batch 9"):
        first.fit()
    assert first.last_checkpoint == str(tmp_path / "ck" / "ep1-ba8.ckpt")
    del first

    # Second half: the same recipe continues from the newest checkpoint.
    second = _resumable(tiny_recipe_path, tmp_path)
    assert second.loaded_checkpoint == str(tmp_path / "ck" / "ep1-ba8.ckpt")
    assert (second.state.timestamp.epoch, second.state.timestamp.batch) == (1, 8)
    second.fit()
    second.close()
    assert second.weights_fingerprint() == fingerprint
    assert second.last_checkpoint == str(tmp_path / "ck" / "ep3-ba18.ckpt")
    assert second.skipped_batches == 0
    # The metrics file: batch 9, logged by the killed run after its last checkpoint, is not there twice.
    assert metrics_without_wct(tmp_path / "metrics.jsonl") == metrics

    # Resuming the finished run trains nothing and keeps the file.
    third = _resumable(tiny_recipe_path, tmp_path)
    assert third.loaded_checkpoint == str(tmp_path / "ck" / "ep3-ba18.ckpt")
    third.fit()
    third.close()
    assert third.weights_fingerprint() == fingerprint
    assert metrics_without_wct(tmp_path / "metrics.jsonl") == metrics


def test_save_and_load_by_hand(tiny_recipe_path, tmp_path, one_go):
    fingerprint, _ = one_go
    first = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path / "a"), "loggers": []}, callbacks=[StopAt(7)])
    first.fit()
    path = tmp_path / "mid" / "batch7.ckpt"
    path.parent.mkdir()
    first.save_checkpoint(path)  # os.PathLike or str
    assert first.last_checkpoint == ""  # only fit()'s own checkpoints count

    second = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path / "b"), "loggers": []})
    second.load_checkpoint(str(path))
    assert second.loaded_checkpoint == str(path)
    assert second.state.timestamp.batch == 7
    second.fit()
    assert second.weights_fingerprint() == fingerprint

    # weights_only: the weights of batch 7, but time and optimizer start over
    third = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path / "c"), "loggers": [], "max_duration": "3ba"})
    third.load_checkpoint(path, weights_only=True)
    assert third.state.timestamp.batch == 0
    assert third.weights_fingerprint() == first.weights_fingerprint()


def test_inspect_checkpoint(tiny_recipe_path, tmp_path):
    trainer = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path), "loggers": [], "max_duration": "8ba"},
                              checkpoint={"folder": "ck", "interval": "1ep"})
    trainer.fit()
    path = tmp_path / "ck" / "ep1-ba8.ckpt"
    assert trainer.last_checkpoint == str(path)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["ep1-ba6.ckpt", "ep1-ba8.ckpt", "latest"]

    info = tessera.inspect_checkpoint(path)
    assert info["path"] == str(path)
    assert (info["epoch"], info["batch"], info["sample"]) == (1, 8, 8 * 32)
    ts = info["timestamp"]
    assert isinstance(ts, tessera.Timestamp)
    assert (ts.epoch, ts.batch, ts.batch_in_epoch, ts.sample_in_epoch) == (1, 8, 2, 64)
    assert info["tessera_version"] == tessera.__version__
    assert info["torch_version"] == tessera._C._torch_version
    assert info["seed"] == 7
    assert info["world_size"] == 1
    assert info["recipe"] == trainer.recipe.text
    assert 'max_duration: "8ba"' in info["recipe"]
    assert tessera.inspect_checkpoint(str(tmp_path / "ck" / "ep1-ba6.ckpt"))["batch"] == 6


def test_invalid_checkpoints_raise_checkpoint_error(tiny_recipe_path, tmp_path):
    assert issubclass(tessera.CheckpointError, tessera.InputError)
    trainer = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path / "run"), "loggers": [], "max_duration": "3ba"})
    trainer.fit()
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)

    # one flipped byte in the middle of the payload: the checksum no longer matches
    corrupt = tmp_path / "ck" / "ep0-ba2.ckpt"
    corrupt.parent.mkdir()
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    corrupt.write_bytes(bytes(data))
    with pytest.raises(tessera.CheckpointError, match=r"checkpoint '.*ep0-ba2\.ckpt': .*checksum") as err:
        tessera.inspect_checkpoint(corrupt)
    assert str(corrupt) in str(err.value)
    with pytest.raises(tessera.CheckpointError, match="checksum"):
        trainer.load_checkpoint(corrupt)

    # truncated, missing, not a path
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(tessera.CheckpointError, match=r"truncated\.ckpt"):
        tessera.inspect_checkpoint(truncated)
    with pytest.raises(tessera.CheckpointError, match=r"missing\.ckpt"):
        tessera.inspect_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(tessera.InputError, match="inspect_checkpoint: path: expected a path"):
        tessera.inspect_checkpoint(3)

    # autoresume over a folder whose only file is corrupt stops in the constructor, naming the way out
    with pytest.raises(tessera.CheckpointError, match="fresh_start_if_invalid"):
        tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path), "loggers": []},
                        checkpoint={"folder": "ck", "autoresume": True})
    # ... unless told to start fresh
    fresh = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path), "loggers": []},
                            checkpoint={"folder": "ck", "autoresume": True, "fresh_start_if_invalid": True})
    assert fresh.loaded_checkpoint == ""

    # a good file copied into the folder is taken instead of the corrupt one
    shutil.copy(good, tmp_path / "ck" / "ep0-ba1.ckpt")
    older = tessera.Trainer(tiny_recipe_path, {"run_dir": str(tmp_path), "loggers": []},
                            checkpoint={"folder": "ck", "autoresume": True})
    assert older.loaded_checkpoint == str(tmp_path / "ck" / "ep0-ba1.ckpt")
