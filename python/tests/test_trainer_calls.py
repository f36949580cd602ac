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


def _loader(n=64, batch_size=16, **kw):
    x = torch.randn(n, 6)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=batch_size,
                                       **kw)


def test_a_callback_that_fails_to_close_neither_aborts_nor_hides_the_error_of_fit(tmp_path):
    """A close() that raises (here a Composer-style close(self, state, logger), called without arguments): deleting
    the trainer warns instead of aborting the process, and a failed fit() raises its own error, not close()'s."""
    import gc
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import gc, torch, tessera
        class ComposerStyle(tessera.Callback):
            def batch_end(self, state, logger): pass
            def close(self, state, logger): pass
        x = torch.randn(32, 6)
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)
        t = tessera.Trainer(model=torch.nn.Linear(6, 2), train_dataloader=data, optimizer={"sgd": {"lr": 0.1}},
                            max_duration="1ep", threads=1, callbacks=[ComposerStyle()], run_dir=%r)
        t.fit()
        del t
        gc.collect()
        print("survived")
    """ % str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "survived" in done.stdout
    assert "closing the callbacks failed" in done.stderr and "close()" in done.stderr

    class ComposerStyle(tessera.Callback):
        def batch_end(self, state, logger):
            pass

        def close(self, state, logger):
            pass

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 2)

        def forward(self, x):
            raise KeyError("the real error, in forward")

    trainer = tessera.Trainer(model=Broken(), train_dataloader=_loader(), optimizer={"sgd": {"lr": 0.1}},
                              max_duration="1ep", threads=1, callbacks=[ComposerStyle()], run_dir=str(tmp_path))
    with pytest.raises(KeyError, match="the real error"):
        trainer.fit()
    del trainer
    gc.collect()


def test_a_failed_evaluation_puts_the_model_back_in_training_mode_and_clears_the_label(tmp_path):
    class Flaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 2)
            self.fail = True

        def forward(self, x):
            if not self.training and self.fail:
                self.fail = False
                raise RuntimeError("transient")
            return self.lin(x)

    labels = []

    class Watch(tessera.Callback):
        def batch_start(self, state, logger):
            labels.append(state.eval_label)

    model = Flaky()
    trainer = tessera.Trainer(model=model, train_dataloader=_loader(), eval_dataloader=_loader(),
                              optimizer={"sgd": {"lr": 0.1}}, max_duration="1ep", threads=1, callbacks=[Watch()],
                              run_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="transient"):
        trainer.evaluate()
    assert model.training and trainer.state.eval_label == ""
    trainer.fit()
    assert labels == [""] * 4


def test_an_epoch_is_what_the_sampler_draws(tmp_path):
    x = torch.randn(1000, 6)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    weighted = torch.utils.data.DataLoader(data, batch_size=16,
                                           sampler=torch.utils.data.WeightedRandomSampler(torch.ones(1000), 64))
    trainer = tessera.Trainer(model=torch.nn.Linear(6, 2), train_dataloader=weighted, optimizer={"sgd": {"lr": 0.1}},
                              max_duration="1ep", threads=1, run_dir=str(tmp_path))
    assert (trainer.state.samples_per_epoch, trainer.state.batches_per_epoch) == (64, 4)
    batches = torch.utils.data.DataLoader(data, batch_sampler=torch.utils.data.BatchSampler(
        torch.utils.data.SequentialSampler(range(1000)), 48, drop_last=True))
    trainer = tessera.Trainer(model=torch.nn.Linear(6, 2), train_dataloader=batches, optimizer={"sgd": {"lr": 0.1}},
                              max_duration="1ep", threads=1, run_dir=str(tmp_path))
    assert (trainer.state.samples_per_epoch, trainer.state.batches_per_epoch) == (960, 20)


def test_keywords_for_parts_that_are_not_given_are_refused_and_a_metric_class_is_named(tmp_path):
    components = dict(model={"mlp": {"hidden": [8]}}, optimizer={"sgd": {"lr": 0.1}}, max_duration="1ba",
                      train_data={"dataset": {"synthetic": {"size": 32, "input_shape": [1, 4, 4], "num_classes": 2}},
                                  "loader": {"batch_size": 16}}, run_dir=str(tmp_path))
    with pytest.raises(tessera.InputError, match="input_key='pixels': applies to batches from train_dataloader"):
        tessera.Trainer(**components, input_key="pixels")
    with pytest.raises(tessera.InputError, match="model_call='bogus': applies to a model given as a torch.nn.Module"):
        tessera.Trainer(**components, model_call="bogus")

    class ErrorRate:
        def reset(self):
            pass

        def update(self, outputs, target):
            pass

        def compute(self):
            return 1.0

    with pytest.raises(tessera.InputError, match=r"the class ErrorRate is given; expected a metric object, an "
                                                 r"instance: ErrorRate\(\)"):
        tessera.Trainer(model=torch.nn.Linear(6, 2), train_dataloader=_loader(), eval_dataloader=_loader(),
                        eval_metrics=[ErrorRate], optimizer={"sgd": {"lr": 0.1}}, max_duration="1ep",
                        run_dir=str(tmp_path))


def test_a_forward_that_replaces_a_buffer_is_refused_at_its_first_batch(tmp_path):
    """The trainer trains, saves and averages the tensors the module held when given: a forward assigning a new
    tensor to a buffer would leave checkpoints with the old one. In place is fine."""
    class Counting(torch.nn.Module):
        def __init__(self, in_place):
            super().__init__()
            self.lin = torch.nn.Linear(6, 2)
            self.register_buffer("steps", torch.zeros(()))
            self.in_place = in_place

        def forward(self, x):
            if self.training:
                if self.in_place:
                    self.steps += 1
                else:
                    self.steps = self.steps + 1
            return self.lin(x)

    def run(in_place):
        model = Counting(in_place)
        trainer = tessera.Trainer(model=model, train_dataloader=_loader(), optimizer={"sgd": {"lr": 0.1}},
                                  max_duration="1ep", threads=1, run_dir=str(tmp_path))
        trainer.fit()
        return trainer

    with pytest.raises(tessera.InputError, match=r'the forward replaced the buffer "steps" \(a new tensor assigned'):
        run(in_place=False)
    trainer = run(in_place=True)
    assert float(trainer.model.named_buffers()["steps"]) == 4.0
