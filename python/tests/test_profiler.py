"""The profiler from Python: the `profiler` option (a dict), the traces a fit writes, with Python algorithms' spans."""
import json

import pytest

import tessera
from conftest import tiny_components


class Slowish(tessera.Algorithm):
    spec = tessera.AlgorithmSpec(name="slowish", accesses=[tessera.Access("before_forward")])

    def apply(self, event, state, logger):
        sum(range(1000))


def test_a_fit_writes_a_trace_per_window_with_python_algorithms_inside_their_events(tmp_path):
    trainer = tessera.Trainer(**tiny_components(run_dir=str(tmp_path), profiler={"warmup": 0, "active": 2}),
                              algorithms=[Slowish()])
    assert trainer.options["profiler"]["enabled"] is True  # given: on
    assert trainer.options["profiler"]["active"] == 2
    trainer.fit()
    assert trainer.traces == [str(tmp_path / "traces" / "ep0-ba0-rank0.json"),
                              str(tmp_path / "traces" / "ep1-ba4-rank0.json")]
    trace = json.loads((tmp_path / "traces" / "ep0-ba0-rank0.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    names = [e["name"] for e in spans]
    assert names.count("batch") == 2 and names.count("forward") == 2 and names.count("backward") == 2
    mine = [e for e in spans if e["name"] == "algorithm/slowish"]
    events = [e for e in spans if e["name"] == "event/before_forward"]
    assert len(mine) == 2 and len(events) == 2
    for a, e in zip(mine, events):
        assert a["args"]["event"] == "before_forward"
        assert e["ts"] <= a["ts"] and a["ts"] + a["dur"] <= e["ts"] + e["dur"]
    assert any(e["cat"] == "torch_op" and e["name"] == "aten::conv2d" for e in spans)
    assert trace["otherData"]["first_batch"] == 0 and trace["otherData"]["last_batch"] == 1
    run = json.loads((tmp_path / "run.json").read_text())
    windows = run["profiler_windows"]
    assert windows == trainer.profiled_windows
    assert [w["file"] for w in windows] == trainer.traces
    assert [w["complete_batches"] for w in windows] == [2, 2]
    assert list(windows[0]["phases_ms"]) == ["dataloader", "forward", "loss", "backward", "optimizer_step"]
    assert "slowish" in windows[0]["algorithms_ms"]


def test_no_profiler_no_traces_and_a_bad_key_is_an_input_error(tmp_path):
    trainer = tessera.Trainer(**tiny_components(run_dir=str(tmp_path), max_duration="1ba"))
    trainer.fit()
    assert trainer.traces == [] and not (tmp_path / "traces").exists()
    assert trainer.options["profiler"]["enabled"] is False
    with pytest.raises(tessera.InputError, match=r'did you mean "active"'):
        tessera.Trainer(**tiny_components(run_dir=str(tmp_path), profiler={"activ": 2}))
    with pytest.raises(tessera.InputError, match=r"profiler\.active"):
        tessera.Trainer(**tiny_components(run_dir=str(tmp_path), profiler={"active": 0}))
