"""early_stopper and threshold_stopper as recipe entries from Python, and state.eval_label."""
import tessera
from conftest import tiny_components


class EvalLabels(tessera.Callback):
    name = "eval_labels"

    def __init__(self):
        super().__init__()
        self.seen = []

    def run_event(self, event, state, logger):
        if str(event) in ("eval_start", "eval_end"):
            self.seen.append((str(event), state.eval_label))
        elif str(event) == "batch_end":
            assert state.eval_label == ""


def test_early_stopper_ends_the_run_when_the_metric_stops_improving():
    data = tiny_components()["train_data"]
    labels = EvalLabels()
    trainer = tessera.Trainer(**tiny_components(max_duration="10ep"), eval_data=dict(data, label="test"),
                              callbacks=[{"early_stopper": {"monitor": "accuracy", "label": "test",
                                                            "min_delta": 2.0, "patience": "2ep"}}, labels])
    trainer.fit()
    assert trainer.state.timestamp.epoch == 3  # best at epoch 1; two epochs without a 2-point gain
    assert labels.seen[:2] == [("eval_start", "test"), ("eval_end", "test")]


def test_threshold_stopper_on_the_training_loss():
    trainer = tessera.Trainer(**tiny_components(max_duration="10ep"),
                              callbacks=[{"threshold_stopper": {"monitor": "loss", "label": "train",
                                                                "threshold": 1.0e9}}])
    trainer.fit()
    assert trainer.state.timestamp.epoch == 1
