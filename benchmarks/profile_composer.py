#!/usr/bin/env python3
"""Op-level profile of the contenders of bench_composer.py (torch.profiler, CPU), to say where the time goes.

Runs each contender once (same model, data, settings and initial weights as bench_composer.py `steps`) under
torch.profiler and prints the top operators by self CPU time, per contender, plus the total of the optimizer's
ops. Tessera's loop runs in C++ on the calling thread, so the profiler sees its ATen ops too; its data-loading
thread's ops are not recorded unless the profiler follows that thread.

    benchmarks/run_composer_bench.sh --profile --configs none,five --duration 2ep
"""
from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

import bench_composer as b


def main() -> None:
    sys.argv = [sys.argv[0]] + sys.argv[1:]
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="none")
    ap.add_argument("--contenders", default="tessera,composer,plain")
    ap.add_argument("--duration", default="2ep")
    ap.add_argument("--subset", type=int, default=1280)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=22)
    a = ap.parse_args()
    args = argparse.Namespace(mode="steps", duration=a.duration, subset=a.subset, threads=a.threads, warmup=2,
                              eval_every=0, tta_warmup="0.1dur", target=1.0, seed=1000,
                              run_dir="/tmp/tessera-bench-composer")
    torch.set_num_threads(a.threads)
    train = b.tessera.data.fashion_mnist(split="train", limit=a.subset)
    data = {"x": train["input"].contiguous(), "y": train["target"].contiguous()}
    for config in a.configs.split(","):
        s = b.Setup(args, config, args.seed)
        weights = b.initial_weights(s)
        for c in a.contenders.split(","):
            if c == "plain" and config != "none":
                continue
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                if c == "tessera":
                    tl = b.run_tessera(s, data)
                elif c == "composer":
                    tl = b.run_composer(s, data, weights)
                else:
                    tl = b.run_plain(s, data, weights)
            ka = prof.key_averages()
            n = len(tl.t["batch_end"])
            total = sum(e.self_cpu_time_total for e in ka)
            print(f"\n=== {c}, config {config}: {n} batches, profiled self CPU total {total / 1e3 / n:.2f} ms/batch")
            rows = sorted(ka, key=lambda e: -e.self_cpu_time_total)[:a.rows]
            for e in rows:
                print(f"  {e.key[:60]:60s} {e.count / n:8.1f} calls/batch {e.self_cpu_time_total / 1e3 / n:9.3f} ms/batch")
            opt = [e for e in ka if "Optimizer" in e.key or "sgd" in e.key.lower() or "_foreach" in e.key]
            for e in opt[:8]:
                print(f"  [optimizer] {e.key[:60]:60s} {e.count / n:6.1f} calls/batch cpu_total {e.cpu_time_total / 1e3 / n:8.3f} ms/batch")


if __name__ == "__main__":
    main()
