"""Python algorithms and callbacks run inside the C++ loop, at their events, in the declared order."""
import signal
import threading

import pytest
import torch

import tessera
from tessera import Event, Resource
from conftest import tiny_components

TRAIN_BATCH_EVENTS = [
    "before_dataloader", "after_dataloader", "batch_start", "before_train_batch",
    "before_forward", "after_forward", "before_loss", "after_loss", "before_backward", "after_backward",
    "after_train_batch", "batch_end", "batch_checkpoint",
]


class EventRecorder(tessera.Callback):
    """Records every event through run_event."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def run_event(self, event, state, logger):
        self.log.append(("callback", str(event), None))


class Tagger(tessera.Algorithm):
    """A Python algorithm with a spec given at construction; records where it ran and what it saw."""

    def __init__(self, name, accesses, log, order=(), seen=None):
        super().__init__()
        self._spec = tessera.AlgorithmSpec(name=name, accesses=accesses, order=list(order))
        self.log = log
        self.seen = seen if seen is not None else (lambda event, state: None)

    def spec(self):
        return self._spec

    def apply(self, event, state, logger):
        self.log.append((self._spec.name, str(event), self.seen(event, state)))


def test_callback_sees_every_event_in_order():
    log = []
    trainer = tessera.Trainer(**tiny_components(
        train_data={"dataset": {"synthetic": {"size": 32, "input_shape": [1, 8, 8], "num_classes": 4}},
                    "loader": {"batch_size": 16, "workers": 0}},
        max_duration="1ep"), callbacks=[EventRecorder(log)])
    assert [e for _, e, _ in log] == ["init", "before_load", "after_load"]
    trainer.fit()
    events = [e for _, e, _ in log]
    expected = (["init", "before_load", "after_load", "fit_start", "iteration_start", "epoch_start"]
                + TRAIN_BATCH_EVENTS * 2
                + ["epoch_end", "epoch_checkpoint", "iteration_end", "iteration_checkpoint", "fit_end"])
    assert events == expected


def test_state_and_logger_kept_by_a_plugin_outlive_the_trainer():
    """A callback that keeps `state`, `state.batch` and `logger` past its call (from init on) reads the trainer's own
    objects, and they stay valid after the trainer is deleted: they hold the native trainer (freed with the last of
    them), closed: the plugins' close() ran when the trainer went, as without them."""
    import gc
    import weakref

    class Keeper(tessera.Callback):
        def init(self, state, logger):
            self.at_init = state

        def batch_end(self, state, logger):
            self.state, self.batch, self.logger = state, state.batch, logger

    closed = []

    class Closer(tessera.Callback):
        def close(self):
            closed.append(True)

    keeper, closer = Keeper(), Closer()
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))  # held by the native trainer only
    module_alive = weakref.ref(module)
    trainer = tessera.Trainer(**tiny_components(max_duration="3ba", model=module), callbacks=[keeper, closer])
    del module
    trainer.fit()
    assert keeper.state.timestamp.batch == 3
    assert keeper.at_init.timestamp.batch == 3  # the same object: the trainer's state, as it is now
    assert keeper.state is keeper.at_init
    gone = weakref.ref(trainer)
    del trainer
    gc.collect()
    assert gone() is None  # the Python object is gone; what the callback kept still reads the trainer's memory
    assert closed == [True]
    assert module_alive() is not None  # the native trainer is still there, held by the kept views
    assert keeper.state.timestamp.batch == 3
    assert keeper.batch["input"].shape == (16, 1, 8, 8)
    assert keeper.state.model is not None and len(keeper.state.model.named_parameters()) > 0
    keeper.logger.info("after the trainer")
    del keeper  # the last view: the native trainer goes, and calls no plugin again
    gc.collect()
    assert module_alive() is None
    assert closed == [True]


def test_state_kept_at_init_of_a_trainer_whose_construction_failed_stays_valid(tmp_path):
    """A trainer whose construction fails after Init (here: a checkpoint of another model) leaves what a plugin kept
    at Init valid: the native trainer, closed, is held by the views, not freed under them."""
    import gc

    first = tessera.Trainer(**tiny_components(max_duration="1ba"))
    first.fit()
    first.save_checkpoint(str(tmp_path / "narrow.ckpt"))
    del first

    class Keeper(tessera.Callback):
        closed = 0

        def init(self, state, logger):
            self.state, self.logger = state, logger

        def close(self):
            self.closed += 1

    keeper = Keeper()
    with pytest.raises(tessera.InputError, match="shapes differ"):
        tessera.Trainer(**tiny_components(model={"cnn": {"width": 8}}, max_duration="1ba",
                                          checkpoint={"load_path": str(tmp_path / "narrow.ckpt"), "strict": True}),
                        callbacks=[keeper])
    gc.collect()
    scratch = [torch.randn(256, 256) for _ in range(64)]  # memory freed under the views would be reused here
    assert keeper.closed == 1  # opened at Init, closed when the construction failed
    assert keeper.state.timestamp.batch == 0
    assert keeper.state.model is not None
    assert len(keeper.state.model.named_parameters()) > 0
    keeper.logger.info("after the failed construction")
    del scratch, keeper
    gc.collect()


def test_a_plugin_that_keeps_the_trainer_is_collected_with_it(tmp_path):
    """A callback keeping the Trainer (to call save_checkpoint, say) makes a cycle through the native trainer, which
    holds the callback: the garbage collector sees it, closes the plugins and frees all of it, the model too."""
    import gc
    import weakref

    closes = []

    class KeepsTrainer(tessera.Callback):
        def batch_end(self, state, logger):
            self.trainer.save_checkpoint(str(tmp_path / "last.ckpt"))

        def close(self):
            closes.append(True)

    keeper = KeepsTrainer()
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    module_alive = weakref.ref(module)
    trainer = tessera.Trainer(**tiny_components(max_duration="2ba", model=module), callbacks=[keeper])
    keeper.trainer = trainer  # the cycle: trainer -> its plugins -> keeper -> trainer
    trainer.fit()
    assert (tmp_path / "last.ckpt").exists()
    trainer_alive, keeper_alive = weakref.ref(trainer), weakref.ref(keeper)
    del trainer, keeper, module
    gc.collect()
    assert trainer_alive() is None and keeper_alive() is None
    assert module_alive() is None  # the native trainer went with them
    assert closes == [True]


def test_event_methods_and_events_filter():
    class Losses(tessera.Callback):
        name = "losses"
        events = [Event.AFTER_LOSS, "batch_end"]  # epoch_end is defined but filtered out

        def __init__(self):
            super().__init__()
            self.after_loss_values = []
            self.batch_end_values = []
            self.epoch_ends = 0

        def after_loss(self, state, logger):
            assert state.loss.requires_grad and state.loss.dim() == 0
            self.after_loss_values.append(float(state.loss.detach()))

        def batch_end(self, state, logger):
            self.batch_end_values.append(state.metrics["loss/train/total"])

        def epoch_end(self, state, logger):
            self.epoch_ends += 1

    cb = Losses()
    trainer = tessera.Trainer(**tiny_components(), callbacks=[cb])
    trainer.fit()
    assert len(cb.after_loss_values) == 2 * 4
    # the loss the callback read is the one the trainer logged, bit for bit (no microbatches)
    assert cb.after_loss_values == cb.batch_end_values
    assert cb.epoch_ends == 0
    assert "losses" in [c.callback_name for c in trainer.callbacks]


def test_python_algorithm_edits_the_batch_without_copies():
    zeros = {}

    class ZeroInputs(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(
            name="zero_inputs",
            accesses=[tessera.Access("after_dataloader", reads=["inputs"], writes=["inputs"])])

        def apply(self, event, state, logger):
            assert event == Event.AFTER_DATALOADER
            z = torch.zeros_like(state.batch["input"])
            state.batch["input"] = z
            zeros[state.timestamp.batch] = z

    class Check(tessera.Callback):
        def __init__(self):
            super().__init__()
            self.same = []

        def before_forward(self, state, logger):
            x = state.batch["input"]
            self.same.append(x is zeros[state.timestamp.batch] and not x.any().item())

        def after_forward(self, state, logger):
            assert state.outputs is state.outputs  # one TensorImpl, one Python object

    check = Check()
    edited = tessera.Trainer(**tiny_components(), algorithms=[ZeroInputs()], callbacks=[check])
    edited.fit()
    assert check.same == [True] * 8
    plain = tessera.Trainer(**tiny_components())
    plain.fit()
    assert edited.weights_fingerprint() != plain.weights_fingerprint()
    assert edited.trace["zero_inputs/after_dataloader"]["count"] == 8


def test_python_algorithms_are_ordered_with_cpp_ones():
    """Declared rules place Python algorithms among C++ ones; after_* events run in reverse (FILO)."""
    log = []
    sizes = lambda event, state: state.batch.size
    has_override = lambda event, state: state.loss_override is not None
    before_ls = Tagger("before_ls", [tessera.Access("before_loss", reads=["loss"])], log,
                       order=[tessera.before("label_smoothing", "reads the plain loss", event="before_loss")],
                       seen=has_override)
    after_ls = Tagger("after_ls", [tessera.Access("before_loss", reads=["loss"]), tessera.Access("after_loss", reads=["loss"])],
                      log, order=[tessera.after("label_smoothing", "sees the smoothed loss", event="before_loss")],
                      seen=has_override)
    # writes the inputs at after_dataloader: selective backprop declares it runs before such writers
    rescale = Tagger("rescale", [tessera.Access(Event.AFTER_DATALOADER, reads=[Resource.INPUTS], writes=[Resource.INPUTS])],
                     log, seen=sizes)
    algorithms = [
        # reversed at after_dataloader by default (rescale first), but selective backprop's rule wins
        tessera.algorithms.SelectiveBackprop(start=0.0, end=1.0, keep=0.5, interrupt=0),
        rescale,
        after_ls,
        tessera.algorithms.LabelSmoothing(smoothing=0.1),
        before_ls,
    ]
    trainer = tessera.Trainer(**tiny_components(max_duration="2ba"), algorithms=algorithms,
                              callbacks=[EventRecorder(log)])
    plan = trainer.plan
    assert plan["after_dataloader"] == ["selective_backprop", "rescale"]
    assert plan["before_loss"] == ["before_ls", "label_smoothing", "after_ls"]
    assert plan["after_loss"] == ["label_smoothing", "after_ls"]  # after_* events: reversed list order
    assert any("label_smoothing" in r for r in plan.reasons["before_loss"]["after_ls"])
    assert "after_ls" in str(plan) and "label_smoothing" in str(plan)

    trainer.fit()
    # selective backprop halved the batch before the Python algorithm saw it
    assert [seen for name, ev, seen in log if name == "rescale"] == [8, 8]
    assert [(name, seen) for name, ev, seen in log if ev == "before_loss" and name != "callback"] == [
        ("before_ls", False), ("after_ls", True)] * 2
    # at after_loss label smoothing (listed after it) runs first and has removed its loss override
    assert [seen for name, ev, seen in log if name == "after_ls" and ev == "after_loss"] == [False, False]
    # at every event the algorithms run before the callbacks
    for i, entry in enumerate(log):
        if entry[0] == "callback":
            continue
        later_callbacks = [e for e in log[i + 1:] if e[0] == "callback"]
        assert later_callbacks and later_callbacks[0][1] == entry[1]


def test_match_decides_when_a_python_algorithm_acts():
    class EveryOther(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(name="every_other", accesses=[tessera.Access("batch_start")])

        def __init__(self):
            super().__init__()
            self.batches = []

        def match(self, event, state):
            return state.timestamp.batch % 2 == 0

        def apply(self, event, state, logger):
            self.batches.append(state.timestamp.batch)

    alg = EveryOther()
    tessera.Trainer(**tiny_components(), algorithms=[alg]).fit()
    assert alg.batches == [0, 2, 4, 6]


def test_stop_training_from_a_callback():
    class StopAfter3(tessera.Callback):
        def batch_end(self, state, logger):
            if state.timestamp.batch == 3:
                state.stop_training()

    trainer = tessera.Trainer(**tiny_components(), callbacks=[StopAfter3()])
    trainer.fit()
    assert trainer.state.timestamp.batch == 3
    assert trainer.state.stop_requested


def test_logger_destination_in_python():
    class Collect(tessera.LoggerDestination):
        def __init__(self):
            super().__init__()
            self.values = []

        def log_metrics(self, values, timestamp):
            self.values.append((timestamp.batch, dict(values)))

    sink = Collect()
    trainer = tessera.Trainer(**tiny_components(), callbacks=[sink])
    trainer.fit()
    train = [(b, v) for b, v in sink.values if "loss/train/total" in v]
    assert [b for b, _ in train] == list(range(8))  # logged with the timestamp of the batch
    assert train[-1][1]["loss/train/total"] == trainer.state.metrics["loss/train/total"]


def test_exceptions_in_python_plugins_propagate():
    class Boom(tessera.Callback):
        def batch_end(self, state, logger):
            if state.timestamp.batch == 2:
                raise ZeroDivisionError("boom at batch 2")

    trainer = tessera.Trainer(**tiny_components(), callbacks=[Boom()])
    with pytest.raises(ZeroDivisionError, match="boom at batch 2"):
        trainer.fit()
    assert trainer.state.timestamp.batch == 2

    class BadInit(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(name="bad_init", accesses=[tessera.Access("init")])

        def apply(self, event, state, logger):
            raise KeyError("no such layer")

    with pytest.raises(KeyError, match="no such layer"):
        tessera.Trainer(**tiny_components(), algorithms=[BadInit()])


def test_spec_problems_are_input_errors():
    class NoSpec(tessera.Algorithm):
        def apply(self, event, state, logger):
            pass

    with pytest.raises(tessera.InputError, match="must declare its spec"):
        tessera.Trainer(**tiny_components(), algorithms=[NoSpec()])

    class Refuses(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(
            name="refuses", accesses=[tessera.Access("before_loss", writes=["targets"])],
            conflicts=[tessera.conflicts_with("label_smoothing", "both rewrite the targets")])

        def apply(self, event, state, logger):
            pass

    with pytest.raises(tessera.InputError, match="refuses and label_smoothing cannot be combined: both rewrite the targets"):
        tessera.Trainer(**tiny_components(), algorithms=[Refuses(), tessera.algorithms.LabelSmoothing()])
    # the same check without a run
    with pytest.raises(tessera.InputError, match="cannot be combined"):
        tessera.plan([Refuses(), tessera.algorithms.LabelSmoothing()])

    with pytest.raises(tessera.InputError, match='unknown event "after_dataloder"; did you mean "after_dataloader"'):
        tessera.Access("after_dataloder")
    with pytest.raises(tessera.InputError, match='unknown resource "input"; did you mean "inputs"'):
        tessera.Access("after_dataloader", reads=["input"])


def test_plan_of_algorithm_objects_without_a_run():
    class Cutter(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(name="cutter", accesses=[tessera.Access("after_dataloader", writes=["inputs"])])

        def apply(self, event, state, logger):
            pass

    # after_dataloader reverses the list order by default; selective backprop's declared rule wins
    plan = tessera.plan([tessera.algorithms.SelectiveBackprop(), Cutter()])
    assert plan["after_dataloader"] == ["selective_backprop", "cutter"]
    assert plan.reasons["after_dataloader"]["cutter"]
    assert isinstance(plan.to_dict(), dict) and "after_dataloader" in str(plan)


class _CtrlCAtBatch2(tessera.Callback):
    def batch_end(self, state, logger):
        if state.timestamp.batch == 2:
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # as if Ctrl-C were pressed


def test_ctrl_c_stops_at_the_end_of_the_batch():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive Python
    try:
        trainer = tessera.Trainer(**tiny_components(), callbacks=[_CtrlCAtBatch2()])
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        assert trainer.state.timestamp.batch == 2  # the batch finished, the next one did not start
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's handler is back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_old_ctrl_c_does_not_stop_a_later_fit():
    """A fit that cannot install its Ctrl-C handler (SIGINT ignored, as in a background job) trains to the end,
    even though an earlier fit was stopped by Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            tessera.Trainer(**tiny_components(), callbacks=[_CtrlCAtBatch2()]).fit()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        trainer = tessera.Trainer(**tiny_components())
        trainer.fit()
        ts = trainer.state.timestamp
        assert (ts.epoch, ts.batch) == (2, 8)  # 2 epochs of 64 examples in batches of 16
    finally:
        signal.signal(signal.SIGINT, previous)


def test_fit_releases_the_gil():
    """Between FIT_START and FIT_END the C++ loop runs without the GIL: another Python thread makes progress.

    Forced GIL switches are turned off (a huge switch interval), so the helper thread can run only when the
    GIL is released explicitly; it releases it itself at every step, so the callbacks get it back at once."""
    import sys
    import time

    counter = [0]
    stop, ready = threading.Event(), threading.Event()

    def spin():
        ready.set()
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0)

    class Window(tessera.Callback):
        events = ["fit_start", "fit_end"]

        def __init__(self):
            super().__init__()
            self.at = {}

        def run_event(self, event, state, logger):
            self.at[str(event)] = counter[0]

    window = Window()
    # a few hundred milliseconds of training: time enough for the helper thread to be scheduled
    trainer = tessera.Trainer(**tiny_components(
        max_duration="100ep", model={"cnn": {"width": 8}},
        train_data={"dataset": {"synthetic": {"size": 64, "input_shape": [1, 16, 16], "num_classes": 4}},
                    "loader": {"batch_size": 16, "workers": 0}}), callbacks=[window])
    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    helper = threading.Thread(target=spin)
    try:
        helper.start()
        ready.wait()
        trainer.fit()
    finally:
        stop.set()
        helper.join()
        sys.setswitchinterval(interval)
    # were the GIL held through the loop, the helper could not have run between the two events
    assert window.at["fit_end"] > window.at["fit_start"]
