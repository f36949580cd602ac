"""What a Trainer may be asked from Python, and when (issue 22 items 1, 6, 10): checkpoints only at batch
boundaries, nothing from another thread during fit(), a clear error after a failed fit(), and the process's
thread and determinism settings back as they were after the trainer's work."""
import threading

import pytest
import torch

import tessera
from conftest import tiny_components


class Call(tessera.Callback):
    """Calls `action(state)` at `event` of batch `batch`."""

    name = "call"

    def __init__(self, event, batch, action):
        super().__init__()
        self.event, self.batch, self.action = event, batch, action

    def run_event(self, event, state, logger):
        if str(event) == self.event and state.timestamp.batch == self.batch:
            self.action(state)


def test_save_checkpoint_inside_a_batch_is_refused(tmp_path):
    errors = []
    holder = {}

    def save(state):
        try:
            holder["trainer"].save_checkpoint(str(tmp_path / "mid.ckpt"))
        except tessera.InputError as e:
            errors.append(str(e))

    trainer = tessera.Trainer(**tiny_components(run_dir=str(tmp_path)), callbacks=[Call("after_forward", 2, save)])
    holder["trainer"] = trainer
    trainer.fit()
    assert len(errors) == 1 and "in the middle of batch 2" in errors[0]
    assert not (tmp_path / "mid.ckpt").exists()


def test_calls_from_another_thread_while_fit_runs_are_refused(tmp_path):
    reached, tried = threading.Event(), threading.Event()

    def hold(state):
        reached.set()
        tried.wait(30)  # releases the GIL: the main thread calls in meanwhile

    trainer = tessera.Trainer(**tiny_components(run_dir=str(tmp_path)), callbacks=[Call("batch_end", 2, hold)])
    worker = threading.Thread(target=trainer.fit)
    worker.start()
    assert reached.wait(60)
    with pytest.raises(tessera.InputError, match="another thread while fit"):
        trainer.save_checkpoint(str(tmp_path / "other.ckpt"))
    with pytest.raises(tessera.InputError, match="another thread while fit"):
        trainer.evaluate()
    tried.set()
    worker.join()
    assert not (tmp_path / "other.ckpt").exists()


def test_after_a_failed_fit_calls_name_the_failure(tmp_path):
    def boom(state):
        raise RuntimeError("boom in a callback")

    trainer = tessera.Trainer(**tiny_components(run_dir=str(tmp_path)), callbacks=[Call("after_loss", 1, boom)])
    with pytest.raises(RuntimeError, match="boom in a callback"):
        trainer.fit()
    for call in (trainer.fit, trainer.evaluate, lambda: trainer.save_checkpoint(str(tmp_path / "x.ckpt"))):
        with pytest.raises(tessera.Error, match=r"this trainer's fit\(\) failed \(.*boom in a callback"):
            call()
    assert not (tmp_path / "x.ckpt").exists()


def test_threads_and_determinism_are_restored_after_the_run(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seen = {}

        def probe(state):
            seen["threads"] = torch.get_num_threads()
            seen["deterministic"] = torch.are_deterministic_algorithms_enabled()

        trainer = tessera.Trainer(**tiny_components(run_dir=str(tmp_path), threads=2, deterministic=True),
                                  callbacks=[Call("batch_end", 1, probe)])
        trainer.fit()
        assert seen == {"threads": 2, "deterministic": True}
        assert torch.get_num_threads() == 1
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)
