#!/usr/bin/env python3
"""How OpenMP's waiting policy changes a tessera-run training step on this machine (issue 13).

OpenMP worker threads wait between parallel regions either by spinning (fast to wake, but they hold a core)
or by sleeping in the kernel (the core is free for the data loader's threads, but each wake-up costs
microseconds). libgomp reads the choice from the environment when it loads: OMP_WAIT_POLICY=ACTIVE or
PASSIVE, and GOMP_SPINCOUNT (how many spins before it sleeps; unset, 300000, roughly 3 ms).

For each recipe variant, every policy is run once per round, in an order that rotates with the round;
`train time` (evaluation and start-up excluded) is read from tessera-run's summary. Printed: the median
training time per policy and the median over rounds of its ratio to the policy `auto` (what tessera-run
chooses) when it is measured, else to the first policy.

    python3 benchmarks/bench_wait_policy.py --runner build/release/tessera-run --rounds 3 --batches 60
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

RECIPE = "examples/recipes/fashion_mnist_baseline.yaml"
COMMON = ["callbacks=[console_summary]", "checkpoint={}", "loggers=[]", "eval_interval=0ba", "data.eval.subset_batches=1",
          "schedulers=[{cosine: {warmup: 0.1dur}}]"]
NO_AUG = "data.train.transforms=[{normalize: {mean: [0.2860], std: [0.3530]}}]"
MLP = "model={mlp: {in_features: 784, hidden: [256, 256]}}"
VARIANTS = {
    # name: (overrides on top of the baseline recipe: ResNet-8, batch 128, random crop + flip, 1 loader
    # worker; batches run, as a multiple of --batches: an MLP step is ~30x shorter than a ResNet-8 one)
    "resnet-t2": (["threads=2"], 1),
    "resnet-t2-noaug": (["threads=2", NO_AUG], 1),
    "resnet-t2-w0": (["threads=2", "data.train.loader.workers=0"], 1),
    "resnet-t1": (["threads=1"], 1),
    "resnet-t4": (["threads=4"], 1),
    "mlp-t2": (["threads=2", MLP, NO_AUG], 20),
    "mlp-t1": (["threads=1", MLP, NO_AUG], 20),
}
# name: environment (None: leave the variable unset, so tessera-run chooses)
POLICIES = {
    "auto": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},
    "active": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None},
    "spin300k": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "300000"},   # libgomp's default when unset
    "spin30k": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "30000"},
    "spin3k": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"},
}


def run_once(runner, overrides, env_changes, run_dir):
    env = dict(os.environ)
    for key, value in env_changes.items():
        env.pop(key, None)
        if value is not None:
            env[key] = value
    out = subprocess.run([runner, RECIPE, *overrides, f"run_dir={run_dir}"], env=env, capture_output=True,
                         text=True, check=False)
    match = re.search(r"train time\s+([0-9.]+) s", out.stdout + out.stderr)
    if out.returncode != 0 or match is None:
        sys.exit(f"bench_wait_policy: {runner} failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    chosen = re.search(r"^cpu threads: (.*)$", out.stdout, re.M)
    return float(match.group(1)), (chosen.group(1) if chosen else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runner", default="build/release/tessera-run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args()
    variants = args.variants.split(",")
    policies = args.policies.split(",")
    for name in variants + policies:
        if name not in VARIANTS and name not in POLICIES:
            sys.exit(f"bench_wait_policy: unknown variant or policy '{name}'; expected one of "
                     f"{', '.join(VARIANTS)} / {', '.join(POLICIES)}")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {args.rounds} rounds of "
          f"{args.batches} batches", flush=True)
    base = "auto" if "auto" in policies else policies[0]
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            extra, factor = VARIANTS[variant]
            overrides = [f"max_duration={args.batches * factor}ba", *COMMON, *extra]
            times = {p: [] for p in policies}
            chosen = ""
            for r in range(args.rounds):
                order = policies[r % len(policies):] + policies[:r % len(policies)]
                for policy in order:
                    seconds, line = run_once(args.runner, overrides, POLICIES[policy], tmp)
                    times[policy].append(seconds)
                    if policy == "auto":
                        chosen = line
            print(f"\n{variant} ({' '.join(extra)}, {args.batches * factor} batches); auto chose: {chosen or '?'}; "
                  f"load {os.getloadavg()[0]:.2f}")
            print(f"  {'policy':10s} {'median s':>9s} {'range s':>13s} {'ratio to ' + base:>14s}")
            for policy in policies:
                ratios = [t / b for t, b in zip(times[policy], times[base])]
                print(f"  {policy:10s} {statistics.median(times[policy]):9.2f} "
                      f"{min(times[policy]):6.2f}-{max(times[policy]):<6.2f} {statistics.median(ratios):14.3f}",
                      flush=True)


if __name__ == "__main__":
    main()
