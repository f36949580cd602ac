"""The monitors (speed, lr, optimizer, memory, runtime, system, activations) as recipe entries from Python: what reaches metrics.jsonl."""
import json
import math

import pytest
import torch

import tessera
from conftest import tiny_components


def logged(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_monitors_write_their_values_to_the_metric_file(tmp_path):
    trainer = tessera.Trainer(**tiny_components(max_duration="2ep"), run_dir=str(tmp_path), loggers=[{"jsonl": {}}],
                              callbacks=[{"speed_monitor": {"window": 2, "time_unit": "seconds", "count_flops": True}}, "lr_monitor",
                                         {"optimizer_monitor": {"interval": 2}}, {"memory_monitor": {"interval": 4}}])
    trainer.fit()
    entries = logged(tmp_path)
    speed = [e for e in entries if "time/train" in e]
    assert [e["batch"] for e in speed] == list(range(1, 9))  # 4 batches an epoch, after each
    assert "throughput/samples_per_sec" not in speed[0]
    assert all(e["throughput/samples_per_sec"] > 0 for e in speed[1:])
    # The CNN's FLOPs a sample, counted as it trains: the same for every batch (one shape throughout).
    per_sample = {round(e["throughput/flops_per_sec"] / e["throughput/samples_per_sec"]) for e in speed[1:]}
    assert len(per_sample) == 1 and per_sample.pop() > 0
    assert speed[-1]["time/train"] == pytest.approx(trainer.state.timestamp.total_wct)

    lrs = [e for e in entries if "lr-sgd/group0" in e]
    assert [e["batch"] for e in lrs] == list(range(8))
    assert all(e["lr-sgd/group0"] == 0.05 for e in lrs)

    norms = [e for e in entries if "l2_norm/grad/global" in e]
    assert [e["batch"] for e in norms] == [0, 2, 4, 6]
    names = [k[len("l2_norm/grad/"):] for k in norms[0] if k.startswith("l2_norm/grad/") and k != "l2_norm/grad/global"]
    assert len(names) > 1
    for e in norms:
        squares = sum(e["l2_norm/grad/" + n] ** 2 for n in names)
        assert e["l2_norm/grad/global"] == pytest.approx(math.sqrt(squares), rel=1e-5)

    memory = [e for e in entries if "memory/host_rss_mem" in e]
    assert [e["batch"] for e in memory] == [0, 4]
    assert all(0 < e["memory/host_rss_mem"] <= e["memory/host_peak_rss_mem"] for e in memory)


def test_the_runtime_estimate_and_the_machines_load_reach_the_metric_file(tmp_path):
    trainer = tessera.Trainer(**tiny_components(max_duration="2ep"), run_dir=str(tmp_path), loggers=[{"jsonl": {}}],
                              callbacks=[{"runtime_estimator": {"time_unit": "seconds"}},
                                         {"system_metrics_monitor": {"interval": 4}}])
    trainer.fit()
    entries = logged(tmp_path)
    remaining = [e for e in entries if "wall_clock/remaining_estimate" in e]
    assert [e["batch"] for e in remaining] == list(range(2, 9))  # the first batch is skipped
    assert all(e["wall_clock/remaining_estimate"] > 0 for e in remaining[:-1])
    assert remaining[-1]["wall_clock/remaining_estimate"] == 0  # no batch and no evaluation left
    system = [e for e in entries if "system/memory_used_percent" in e]
    assert [e["batch"] for e in system] == [4, 8]
    assert all(0 < e["system/memory_used_percent"] < 100 and e["system/process_cpu_percent"] > 0 for e in system)
    # the machine's CPU time is counted in 10 ms ticks: a reading over fewer has no cpu_percent
    assert all(0 <= e.get("system/cpu_percent", 0) <= 100 for e in system)


def test_count_flops_counts_a_python_models_forward(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    kwargs = tiny_components(max_duration="3ba")
    del kwargs["model"]
    trainer = tessera.Trainer(**kwargs, model=model, run_dir=str(tmp_path), loggers=[{"jsonl": {}}],
                              callbacks=[{"speed_monitor": {"window": 1, "count_flops": True}}])
    trainer.fit()
    speed = [e for e in logged(tmp_path) if "throughput/flops_per_sec" in e]
    assert len(speed) == 3
    for e in speed:  # forward 2 · (64 · 32 + 32 · 4) a sample, and the backward twice that
        assert e["throughput/flops_per_sec"] / e["throughput/samples_per_sec"] == pytest.approx(3 * 2 * (64 * 32 + 32 * 4))


def activations_logged(tmp_path, model, interval):
    kwargs = tiny_components(max_duration="3ba")
    del kwargs["model"]
    trainer = tessera.Trainer(**kwargs, model=model, run_dir=str(tmp_path), loggers=[{"jsonl": {}}],
                              callbacks=[{"activation_monitor": {"interval": interval}}])
    trainer.fit()
    return logged(tmp_path)


def statistics(entry, name):
    return [entry[f"activations/{s}/{name}"] for s in ("l2_norm", "average", "max", "kurtosis")]


def test_the_activation_monitor_hooks_every_submodule_of_a_python_model(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    entries = [e for e in activations_logged(tmp_path, model, 2) if "activations/max/model_output" in e]
    assert [e["batch"] for e in entries] == [0, 2]
    layers = [f"{i}_{port}" for i in range(4) for port in ("input.0", "output")]
    for e in entries:
        assert {k.split("/", 2)[2] for k in e if k.startswith("activations/")} == {"model_input", "model_output", *layers}
        # what one layer gives, the next takes: the same values, the same statistics
        assert statistics(e, "0_input.0") == statistics(e, "model_input")
        assert statistics(e, "1_input.0") == statistics(e, "0_output")
        assert statistics(e, "2_input.0") == statistics(e, "1_output")
        assert statistics(e, "3_input.0") == statistics(e, "2_output")
        assert statistics(e, "3_output") == statistics(e, "model_output")
        # the ReLU: each row's maximum is max(m, 0), so their mean is at least the mean of the m and at least 0
        assert e["activations/max/2_output"] >= max(e["activations/max/1_output"], 0.0)
    # the hooks are gone after the run
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_the_activation_monitor_logs_a_torchscript_models_input_and_output_and_says_why(tmp_path):
    torch.manual_seed(0)
    model = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)))
    entries = activations_logged(tmp_path, model, 1)
    stats = [e for e in entries if "activations/max/model_output" in e]
    assert [e["batch"] for e in stats] == [0, 1, 2]
    assert all(len([k for k in e if k.startswith("activations/")]) == 8 for e in stats)
    warnings = [e["text"] for e in entries if e.get("level") == "warning"]
    assert len(warnings) == 1 and "the model's layers cannot be observed" in warnings[0]


def test_a_bad_monitor_setting_is_an_input_error():
    with pytest.raises(tessera.InputError, match="speed_monitor.window"):
        tessera.Trainer(**tiny_components(), callbacks=[{"speed_monitor": {"window": 0}}])
