"""MosaicML Streaming's side of the streaming benchmark (benchmarks/bench_streaming.sh), run with the Python of the
Streaming venv (scripts/install-peers.sh streaming): `streaming.StreamingDataset` over the same MDS folder as
bench_streaming.cpp, in a PyTorch DataLoader, delivering the same batches (float [B, 1, 28, 28] images in [0, 1],
int64 labels), measured the same way:

  * throughput: samples/s over whole shuffled epochs, per number of DataLoader workers (median of the epochs;
    persistent workers, so that epochs after the first do not pay for starting them);
  * resume: seconds from constructing the dataset to holding the first batch of epoch 0 resumed at 90% of it
    (`load_state_dict` with that `sample_in_epoch`, as Composer does on resume; median of fresh constructions).

Then, given Tessera's JSON (--tessera), prints both side by side with the ratios. With --stream (repeated) instead of
--folder, the folders are mixed streams (`Stream(local=DIR)`, each read whole) in batches of --batching (random,
stratified, per_stream); the two sides may then cut their epochs at different sample counts (each drops what fills
no batch), which the table shows.

With --tokens S the folder holds token samples (column tokens, S + 1 bytes each, as `tessera-shard write --text`
writes them), delivered as Tessera delivers them: int64 [B, S] next-token inputs and targets.

  python bench_streaming.py (--folder DIR | --stream DIR --stream DIR ...) [--batching random] [--batch 128]
                            [--epochs 3] [--workers 0,2] [--trials 5] [--tokens S] [--tessera tessera.json]
                            [--label raw]
"""
import argparse
import glob
import json
import os
import statistics
import time

import torch
from streaming import Stream, StreamingDataset
from streaming.base.util import clean_stale_shared_memory
from torch.utils.data import DataLoader, default_collate


class Images(StreamingDataset):
    """Samples as (uint8 [28, 28], label); `collate` makes a batch of them what Tessera's StreamingDataset
    delivers. Converting whole batches is the fast way: a per-sample torch conversion in __getitem__ ran at a
    third of the rate here (measured; probably because each op releases the GIL to Streaming's threads)."""

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        return sample['image'], sample['label']


def collate(samples):
    images, labels = default_collate(samples)
    return images.unsqueeze(1).float().div_(255), labels


class Tokens(StreamingDataset):
    """Samples as their token bytes; `collate_tokens` makes a batch the next-token inputs and targets."""

    def __getitem__(self, index):
        return super().__getitem__(index)['tokens']


def collate_tokens(samples):
    ids = torch.frombuffer(bytearray(b''.join(samples)), dtype=torch.uint8).view(len(samples), -1).long()
    return ids[:, :-1], ids[:, 1:]


TOKENS = 0  # --tokens: the sequence length of token samples (0: images)


def make(folders, batch, batching, shuffle_seed=42):
    """A fresh dataset over one folder or several mixed, as a new run makes it. Streaming decompresses a compressed
    shard into a file beside it (`shard.N.mds` next to `shard.N.mds.zstd`) and reads that file from then on; they are
    removed first, so that every construction starts from the compressed folder as Tessera's does (Tessera
    decompresses in memory)."""
    for folder in folders:
        for unzipped in glob.glob(os.path.join(folder, 'shard.*.mds')):
            if os.path.exists(unzipped + '.zstd'):
                os.remove(unzipped)
    clean_stale_shared_memory()
    kind = Tokens if TOKENS else Images
    if len(folders) == 1:
        return kind(local=folders[0], batch_size=batch, shuffle=True, shuffle_seed=shuffle_seed)
    return kind(streams=[Stream(local=f) for f in folders], batch_size=batch, shuffle=True,
                shuffle_seed=shuffle_seed, batching_method=batching)


def loader(dataset, batch, workers):
    return DataLoader(dataset, batch_size=batch, num_workers=workers, persistent_workers=workers > 0,
                      collate_fn=collate_tokens if TOKENS else collate)


def throughput(folders, batch, batching, workers, epochs):
    dataset = make(folders, batch, batching)
    batches = loader(dataset, batch, workers)
    rates, samples = [], 0
    for _ in range(epochs):
        t0 = time.perf_counter()
        samples = sum(len(labels) for _, labels in batches)
        rates.append(samples / (time.perf_counter() - t0))
    del batches
    return statistics.median(rates), samples


def resume(folders, batch, batching, workers):
    t0 = time.perf_counter()
    dataset = make(folders, batch, batching)
    batches_per_epoch = -(-len(dataset) // batch)
    first_batch = batches_per_epoch * 9 // 10
    # num_canonical_nodes and initial_physical_nodes: what Streaming picks on one node with its default py1e.
    dataset.load_state_dict({'epoch': 0, 'sample_in_epoch': first_batch * batch, 'num_canonical_nodes': 1,
                             'shuffle_seed': 42, 'initial_physical_nodes': 1})
    it = iter(loader(dataset, batch, workers))
    images, labels = next(it)
    seconds = time.perf_counter() - t0
    if TOKENS:
        assert images.shape == labels.shape == (batch, TOKENS) and labels.dtype == torch.int64
    else:
        assert images.shape == (batch, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    del it
    return seconds, first_batch


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--folder')
    p.add_argument('--stream', action='append', default=[])
    p.add_argument('--batching', default='random')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--workers', default='0,2')
    p.add_argument('--trials', type=int, default=5)
    p.add_argument('--tessera', help="bench_streaming's --json output, to print the comparison")
    p.add_argument('--label', default='')
    p.add_argument('--tokens', type=int, default=0)
    a = p.parse_args()
    global TOKENS
    TOKENS = a.tokens
    if bool(a.folder) == bool(a.stream):
        p.error('give --folder, or --stream for each of several folders')
    folders = [a.folder] if a.folder else a.stream
    torch.set_num_threads(1)
    mine = {}
    print(f"{'streaming':10s}{'workers':10s} {'samples':>8s} {'samples/s':>14s} {'resume at 90% (s)':>22s}")
    for w in [int(x) for x in a.workers.split(',')]:
        rate, samples = throughput(folders, a.batch, a.batching, w, a.epochs)
        resumes = [resume(folders, a.batch, a.batching, w) for _ in range(a.trials)]
        first = statistics.median(s for s, _ in resumes)
        mine[w] = {'samples_per_s': rate, 'resume_first_batch_s': first, 'samples': samples}
        print(f"{'streaming':10s}{w:<10d} {samples:8d} {rate:14.0f} {first:22.4f}", flush=True)
    clean_stale_shared_memory()
    if not a.tessera:
        return
    with open(a.tessera) as f:
        theirs = {r['workers']: r for r in json.load(f)['runs']}
    print(f"\n| data | workers | samples (Tessera, Streaming) | Tessera samples/s | Streaming samples/s | "
          f"Tessera / Streaming | Tessera first batch at 90% (s) | Streaming (s) | Streaming / Tessera |")
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
    for w, s in mine.items():
        t = theirs.get(w)
        if t is None:
            continue
        if a.folder and t['samples'] != s['samples']:
            raise SystemExit(f'the two sides read different sample counts: {t["samples"]} vs {s["samples"]}')
        print(f"| {a.label} | {w} | {t['samples']}, {s['samples']} | {t['samples_per_s']:.0f} | {s['samples_per_s']:.0f} | "
              f"{t['samples_per_s'] / s['samples_per_s']:.2f}x | {t['resume_first_batch_s']:.4f} | "
              f"{s['resume_first_batch_s']:.4f} | {s['resume_first_batch_s'] / t['resume_first_batch_s']:.1f}x |")


if __name__ == '__main__':
    main()
