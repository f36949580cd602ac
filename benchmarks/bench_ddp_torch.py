"""PyTorch's Python DDP on the model of bench_ddp.cpp (MLP 784-1024-1024-10, per-rank batch 64, 1 MB buckets,
Gloo over loopback, one intra-op thread per rank): 1 rank without DDP, then 2 ranks.

    python3 benchmarks/bench_ddp_torch.py [steps]
"""
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

BATCH = 64


def net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                               torch.nn.ReLU(), torch.nn.Linear(1024, 10))


def measure(model, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(BATCH, 784), torch.randint(10, (BATCH,))
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def rank_main(rank, world, port, steps, queue):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = DDP(net(), bucket_cap_mb=1)
    step = measure(model, steps)
    if rank == 0:
        queue.put(step)
    dist.destroy_process_group()


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    torch.set_num_threads(1)
    one = measure(net(), steps)
    print(f"pytorch 1 rank: {one * 1e3:.2f} ms/step, {BATCH / one:.0f} samples/s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(rank_main, args=(2, port, steps, queue), nprocs=2)
    two = queue.get()
    print(f"pytorch 2 ranks (Python DDP): {two * 1e3:.2f} ms/step, {2 * BATCH / two:.0f} samples/s (global)")


if __name__ == "__main__":
    main()
