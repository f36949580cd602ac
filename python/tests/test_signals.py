"""Ctrl-C and SIGTERM while fit() or evaluate() runs (docs/python.md, "Ctrl-C and SIGTERM"): they stop at the next
batch, training or evaluation, fit() writes a checkpoint first, and the call raises tessera.Interrupted or
tessera.Terminated; the program's own Python handlers run at the next batch boundary instead of after the call."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import tessera

from conftest import tiny_components


def eval_components(**overrides):
    """tiny_components plus an evaluation set of 4 batches."""
    data = {"dataset": {"synthetic": {"size": 64, "input_shape": [1, 8, 8], "num_classes": 4, "seed": 7}},
            "loader": {"batch_size": 16, "workers": 0}}
    return tiny_components(eval_data=data, **overrides)


def test_sigterm_stops_fit_with_a_checkpoint_exits_143_and_the_run_resumes_exactly(tmp_path):
    """As a scheduler's preemption: the uncaught tessera.Terminated ends the program with 128 + 15 and a one-line
    notice, no traceback, and a new Trainer with autoresume ends on the uninterrupted run's weights."""
    kwargs = tiny_components(run_dir=str(tmp_path), checkpoint={"folder": "ck", "autoresume": True})
    script = textwrap.dedent(f"""
        import os, signal, tessera

        class Preempt(tessera.Callback):
            def batch_end(self, state, logger):
                if state.timestamp.batch == 2:
                    os.kill(os.getpid(), signal.SIGTERM)

        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        tessera.Trainer(**{kwargs!r}, callbacks=[Preempt()]).fit()
        print("not reached")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr
    assert "not reached" not in done.stdout
    assert "Traceback" not in done.stderr
    checkpoint = tmp_path / "ck" / "ep0-ba2.ckpt"
    assert f"tessera: stopped by SIGTERM after batch 2; checkpoint {checkpoint}" in done.stderr
    assert checkpoint.is_file()

    resumed = tessera.Trainer(**kwargs)
    assert resumed.loaded_checkpoint == str(checkpoint)
    resumed.fit()
    uninterrupted = tessera.Trainer(**tiny_components())
    uninterrupted.fit()
    assert resumed.weights_fingerprint() == uninterrupted.weights_fingerprint()


class _CtrlCInEvaluation(tessera.Callback):
    """Presses Ctrl-C at the end of the first evaluation batch; counts evaluation batches."""

    def __init__(self):
        super().__init__()
        self.eval_batches = 0

    def eval_batch_end(self, state, logger):
        self.eval_batches += 1
        if self.eval_batches == 1:
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)


def test_ctrl_c_during_evaluate_stops_at_the_next_batch_and_the_trainer_stays_usable():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive Python
    try:
        ctrl_c = _CtrlCInEvaluation()
        trainer = tessera.Trainer(**eval_components(), callbacks=[ctrl_c])
        with pytest.raises(tessera.Interrupted, match='during evaluation "eval" after 1 batches') as stopped:
            trainer.evaluate()
        assert isinstance(stopped.value, KeyboardInterrupt)
        assert stopped.value.signal == signal.SIGINT and stopped.value.checkpoint is None
        assert ctrl_c.eval_batches == 1  # not the 4 of a whole evaluation
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ctrl_c.eval_batches = 2  # no more Ctrl-C
        assert "metrics/eval/accuracy" in trainer.evaluate()
        assert ctrl_c.eval_batches == 6
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_the_evaluation_inside_fit_writes_a_checkpoint(tmp_path):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ctrl_c = _CtrlCInEvaluation()
        trainer = tessera.Trainer(**eval_components(run_dir=str(tmp_path), checkpoint={"folder": "ck"}),
                                  callbacks=[ctrl_c])
        with pytest.raises(tessera.Interrupted, match="stopped by SIGINT after batch 4") as stopped:
            trainer.fit()  # the first evaluation is at the end of epoch 0 (4 batches)
        assert ctrl_c.eval_batches == 1
        assert stopped.value.checkpoint == str(tmp_path / "ck" / "ep1-ba4.ckpt")
        assert (tmp_path / "ck" / "ep1-ba4.ckpt").is_file()
        with pytest.raises(tessera.Error, match="fit\\(\\) was stopped by SIGINT after batch 4"):
            trainer.fit()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_programs_own_python_handler_runs_at_the_next_batch_not_after_fit():
    """A SIGTERM sent from another thread while the C++ loop runs without the GIL: the program's handler runs at the
    next batch boundary, and what it raises ends fit()."""
    kwargs = tiny_components(
        train_data={"dataset": {"synthetic": {"size": 4096, "input_shape": [1, 8, 8], "num_classes": 4, "seed": 1}},
                    "loader": {"batch_size": 16, "workers": 0}},
        max_duration="1ep")  # 256 batches
    reached = threading.Event()

    class At3(tessera.Callback):
        def batch_end(self, state, logger):
            if state.timestamp.batch == 3:
                reached.set()

    trainer = tessera.Trainer(**kwargs, callbacks=[At3()])
    handled_at = []

    def on_sigterm(signum, frame):
        handled_at.append(trainer.state.timestamp.batch)
        raise RuntimeError("preempted")

    def send():
        reached.wait(60)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    sender = threading.Thread(target=send)
    sender.start()
    try:
        with pytest.raises(RuntimeError, match="preempted"):
            trainer.fit()
    finally:
        sender.join()
        signal.signal(signal.SIGTERM, previous)
    assert len(handled_at) == 1
    assert 3 <= handled_at[0] < 100, handled_at  # at a batch boundary soon after, not after all 256 batches
    assert trainer.state.timestamp.batch == handled_at[0]
