"""The Python Trainer is data-parallel when a launcher starts it: two processes given torchrun's environment train the
tiny recipe with parameters bitwise identical on both ranks, rank 0 alone writes the run's files, and the losses
follow a one-process run of the same global batch (within float summation order). With torch 2.x the processes are
started by torchrun itself (`python -m torch.distributed.run`); Debian's torchrun 1.13 does not start under
Python 3.11 (docs/distributed.md), so there the test sets torchrun's variables by hand."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import metrics_without_wct

WORKER = textwrap.dedent(
    r"""
    import json, os, sys
    import tessera
    recipe, overrides, out = sys.argv[1:4]
    user_model = {}
    if os.environ.get("TESSERA_TEST_PYTHON_BATCH_NORM"):  # the user's own torch.nn.Module, with a batch norm
        import torch
        user_model["model"] = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                                  torch.nn.Flatten(), torch.nn.Linear(144, 4))
        text = open(recipe).read()
        assert "model:\n  cnn: {width: 4}\n" in text
        recipe = out + ".recipe." + os.environ["RANK"] + ".yaml"  # the recipe without its model
        open(recipe, "w").write(text.replace("model:\n  cnn: {width: 4}\n", ""))
    trainer = tessera.Trainer(recipe, json.loads(overrides), **user_model)
    trainer.fit()
    state = trainer.state
    with open(out + "." + os.environ["RANK"], "w") as f:
        json.dump({"rank": state.rank, "world_size": state.world_size,
                   "fingerprint": trainer.weights_fingerprint()}, f)
    trainer.close()
    """
)

# A user's model and loaders with a Python eval metric of test_eval_metrics.py: ErrorRate (with counts()/set_counts()),
# or with TESSERA_TEST_METRIC=PlainErrorRate one without them.
METRIC_WORKER = textwrap.dedent(
    r"""
    import json, os, sys
    import torch
    import tessera
    _, _, out = sys.argv[1:4]
    sys.path.insert(0, os.environ["TESSERA_TEST_DIR"])
    import test_eval_metrics

    metric = getattr(test_eval_metrics, os.environ.get("TESSERA_TEST_METRIC", "ErrorRate"))()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    data = torch.utils.data.TensorDataset(x, y)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 2)
    trainer = tessera.Trainer(
        model=model, optimizer={"sgd": {"lr": 0.5}}, max_duration="2ep", threads=1, run_dir=out + ".run",
        train_dataloader=torch.utils.data.DataLoader(data, batch_size=8, sampler=tessera.data.ResumableSampler(data)),
        eval_dataloader=torch.utils.data.DataLoader(data, batch_size=10), eval_metrics=[metric])
    trainer.fit()
    got = trainer.evaluate()["metrics/eval/error_rate"]
    with torch.no_grad():
        want = float((model(x).argmax(1) != y).double().mean())
    with open(out + "." + os.environ["RANK"], "w") as f:
        json.dump({"rank": trainer.state.rank, "error_rate": got, "expected": want,
                   "fingerprint": trainer.weights_fingerprint()}, f)
    trainer.close()
    """
)

TORCHRUN_WORKS = int(torch.__version__.split(".")[0]) >= 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, recipe, overrides, nproc, extra_env=None, fails=False, script=WORKER):
    """Runs `script` (WORKER) on nproc ranks with the recipe and overrides; returns (per-rank results, the launcher's
    output), or with `fails` the output of a launch that must fail."""
    worker = tmp_path / "worker.py"
    worker.write_text(script)
    out = tmp_path / "result"
    args = [str(worker), str(recipe), json.dumps(overrides), str(out)]
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(extra_env or {})
    if TORCHRUN_WORKS:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
                    "--master-addr=127.0.0.1", f"--master-port={port}"]
        done = [subprocess.run(launcher + args, env=env, capture_output=True, text=True, timeout=300)]
    else:
        procs = []
        for rank in range(nproc):
            rank_env = dict(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE=str(nproc),
                            LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nproc))
            procs.append(subprocess.Popen([sys.executable] + args, env=rank_env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        done = [subprocess.CompletedProcess(p.args, p.wait(timeout=300), p.stdout.read(), "") for p in procs]
    log = "\n".join(d.stdout + d.stderr for d in done)
    if "has no Gloo process group" in log:
        pytest.skip("this build of Tessera has no Gloo process group (CMake: 'distributed backends: gloo OFF')")
    if fails:
        assert any(d.returncode != 0 for d in done), log
        return log
    assert all(d.returncode == 0 for d in done), log
    results = [json.loads((tmp_path / f"result.{rank}").read_text()) for rank in range(nproc)]
    return results, log


def test_ranks_started_by_torchrun_stay_identical_with_the_algorithms_and_rank_zero_writes(tmp_path,
                                                                                          tiny_recipe_path):
    # The tiny recipe runs four algorithms (progressive resizing, selective backprop per rank, label smoothing,
    # layer freezing, which rebuilds the gradient buckets).
    run_dir = tmp_path / "run"
    results, log = _launch(tmp_path, tiny_recipe_path, {"run_dir": str(run_dir)}, 2)
    assert [(r["rank"], r["world_size"]) for r in results] == [(0, 2), (1, 2)], log
    assert results[0]["fingerprint"] == results[1]["fingerprint"], log
    # Both ranks were given one folder; rank 0 alone wrote into it: one metrics line per batch and evaluation.
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.jsonl", "run.json"]
    entries = metrics_without_wct(run_dir / "metrics.jsonl")
    batches = [e["batch"] for e in entries if "loss/train/total" in e]
    assert batches == list(range(18)), batches  # 3 epochs of 192 samples in global batches of 32, each once
    assert entries[-1] == {"hparams": {"weights_fingerprint": results[0]["fingerprint"]}}


@pytest.mark.parametrize(
    "model",
    [
        # No batch norm: each rank would normalise its share with the share's statistics.
        {"mlp": {"hidden": [32]}},
        # Batch norm over the global batch (distributed.sync_batch_norm): the CNN's three batch norms.
        {"cnn": {"width": 4}},
    ],
    ids=["mlp", "cnn_sync_batch_norm"],
)
def test_two_ranks_started_by_torchrun_follow_one_process_with_the_same_global_batch(tmp_path, tiny_recipe_path,
                                                                                      model):
    import tessera

    # No algorithms (selective backprop picks within each rank's share): what remains differs from one process only
    # in the order of float sums.
    overrides = {"algorithms": [], "model": model, "distributed": {"sync_batch_norm": True}}
    results, log = _launch(tmp_path, tiny_recipe_path, dict(overrides, run_dir=str(tmp_path / "two")), 2)
    assert results[0]["fingerprint"] == results[1]["fingerprint"], log
    one = tessera.Trainer(tiny_recipe_path, dict(overrides, run_dir=str(tmp_path / "one")))
    one.fit()
    one.close()
    two_ranks = metrics_without_wct(tmp_path / "two" / "metrics.jsonl")
    one_rank = metrics_without_wct(tmp_path / "one" / "metrics.jsonl")
    assert len(two_ranks) == len(one_rank) == 18 + 3 + 1  # a line per batch, per evaluation, and the hparams
    losses = 0
    for two, one_entry in zip(two_ranks[:-1], one_rank[:-1]):
        assert two.keys() == one_entry.keys()
        for key, value in two.items():
            if key.startswith("loss/"):  # the gradient sum's order differs: equal within float rounding
                assert value == pytest.approx(one_entry[key], rel=1e-4), (key, two, one_entry)
                losses += 1
            elif not key.startswith("metrics/"):  # time, lr: exact
                assert value == one_entry[key], (key, two, one_entry)
    assert losses == 18


def test_sync_batch_norm_with_a_python_module_is_refused_before_training(tmp_path, tiny_recipe_path):
    # Its batch norms are Python layers, out of reach of Tessera's process group: an error naming the layer, on
    # every rank, before any batch (no metrics written).
    run_dir = tmp_path / "run"
    overrides = {"algorithms": [], "run_dir": str(run_dir), "distributed": {"sync_batch_norm": True}}
    log = _launch(tmp_path, tiny_recipe_path, overrides, 2, extra_env={"TESSERA_TEST_PYTHON_BATCH_NORM": "1"},
                  fails=True)
    assert "distributed.sync_batch_norm: module '1' (" in log, log
    assert "a Python or TorchScript model's layers are out of reach of Tessera's process group" in log, log
    assert not (run_dir / "metrics.jsonl").exists() or (run_dir / "metrics.jsonl").read_text() == ""


def test_a_python_eval_metric_is_exact_over_two_ranks_with_its_counts_and_refused_without(tmp_path):
    # Each rank evaluates its share of the eval loader; the metric's counts are added up over the ranks, so both
    # get the error rate of the whole eval set under the final weights.
    here = {"TESSERA_TEST_DIR": os.path.dirname(os.path.abspath(__file__))}
    results, log = _launch(tmp_path, "-", {}, 2, extra_env=here, script=METRIC_WORKER)
    assert results[0]["fingerprint"] == results[1]["fingerprint"], log
    for r in results:
        assert r["error_rate"] == pytest.approx(r["expected"], abs=1e-12), (r, log)
    assert 0 < results[0]["error_rate"] < 0.5, results  # it learnt something, and not everything
    log = _launch(tmp_path, "-", {}, 2, extra_env=dict(here, TESSERA_TEST_METRIC="PlainErrorRate"),
                  script=METRIC_WORKER, fails=True)
    assert 'metric "error_rate" cannot be added up over 2 ranks' in log, log
