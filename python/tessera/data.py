"""Data for Tessera runs from Python.

Your own data: pass a torch.utils.data.DataLoader (or any re-iterable of batches with a len()) as
`train_dataloader=` / `eval_dataloader=` to tessera.Trainer. Build it with a ResumableSampler to make
resuming exact and O(1):

    loader = torch.utils.data.DataLoader(dataset, batch_size=128, num_workers=2,
                                         sampler=tessera.data.ResumableSampler(dataset))

Tessera's own datasets as tensors (one tessera.Batch with 'input' and 'target'), e.g. to feed a plain PyTorch
loop the same data a recipe trains on:

    batch = tessera.data.synthetic(size=1024, input_shape=[1, 8, 8], num_classes=10, seed=0)
    x, y = batch["input"], batch["target"]
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sized, Union

import torch

from ._C import InputError
from ._C import data as _native

fashion_mnist = _native.fashion_mnist
# MDS shards (MosaicML Streaming's format; docs/streaming.md): random access with the C++ reader, and what
# `tessera-shard inspect` prints.
MdsReader = _native.MdsReader
mds_inspect = _native.mds_inspect
synthetic = _native.synthetic
shuffled_order = _native.shuffled_order
streaming_order = _native.streaming_order


class ResumableSampler(torch.utils.data.Sampler):
    """A sampler whose order is a pure function of (seed, epoch) and that can start at any example.

    The order is the one Tessera's own DataLoader uses (shuffled_order(seed, epoch, n), the same on every
    platform and torch version), or 0..n-1 with shuffle=False. The Trainer sets the seed (the run's), the epoch
    and, when it resumes inside an epoch, the first example; outside a Trainer, call set_epoch yourself.
    len() is always the whole epoch, so len(DataLoader) does not change on resume.
    """

    def __init__(self, data_source: Union[Sized, int], shuffle: bool = True, seed: int = 0) -> None:
        n = data_source if isinstance(data_source, int) else len(data_source)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError(f"ResumableSampler: expected a sized dataset or a count >= 0, got {data_source!r}")
        self.num_samples = n
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, seed: Optional[int] = None, start: int = 0) -> None:
        """The next pass is epoch `epoch` (of run seed `seed`, when given) from example `start` on."""
        if epoch < 0:
            raise InputError(f"ResumableSampler.set_epoch: epoch must be >= 0, got {epoch}")
        if not 0 <= start <= self.num_samples:
            raise InputError(f"ResumableSampler.set_epoch: start {start} is out of range [0, {self.num_samples}]")
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)
        self.start = int(start)

    def order(self) -> list:
        """The whole order of the current epoch."""
        if not self.shuffle:
            return list(range(self.num_samples))
        return shuffled_order(self.seed, self.epoch, self.num_samples).tolist()

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0  # a later pass without set_epoch is a whole epoch
        return iter(self.order()[start:])

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return f"tessera.data.ResumableSampler({self.num_samples}, shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch})"


class StreamingSampler(ResumableSampler):
    """A ResumableSampler in the streaming order of MDS shards (docs/streaming.md): block-shuffled across shards,
    cut into canonical partitions, the order the C++ StreamingDataset uses, for a torch DataLoader over an
    MdsReader (or any dataset laid out as the shards). Pass the loader's batch size (the global batch: the order
    gives each partition fixed rows of every batch). Starting at any example computes nothing before it.

        reader = tessera.data.MdsReader("data/fmnist/train")
        loader = torch.utils.data.DataLoader(MyDataset(reader), batch_size=128,
                                             sampler=tessera.data.StreamingSampler(reader, batch_size=128))
    """

    def __init__(self, reader: Any, batch_size: int, shuffle: bool = True, seed: int = 0,
                 shuffle_block_size: int = 262144, partitions: int = 8) -> None:
        offsets = list(reader.shard_offsets if hasattr(reader, "shard_offsets") else reader)
        if not offsets or offsets[0] != 0:
            raise InputError("StreamingSampler: expected an MdsReader or shard offsets starting at 0, got "
                             f"{reader!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"StreamingSampler: batch_size must be an int >= 1, got {batch_size!r}")
        super().__init__(offsets[-1], shuffle=shuffle, seed=seed)
        self.shard_offsets = offsets
        self.batch_size = batch_size
        self.shuffle_block_size = int(shuffle_block_size)
        self.partitions = int(partitions)

    def _range(self, begin: int) -> list:
        return streaming_order(self.shard_offsets, self.seed, self.epoch, self.batch_size, begin, -1, self.shuffle,
                               self.shuffle_block_size, self.partitions).tolist()

    def order(self) -> list:
        """The whole order of the current epoch."""
        return self._range(0)

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self._range(start))

    def __repr__(self) -> str:
        return (f"tessera.data.StreamingSampler({self.num_samples} samples in {len(self.shard_offsets) - 1} shards, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch})")


def resumable_loader(dataset: Any, batch_size: int, shuffle: bool = True, **kwargs: Any) -> torch.utils.data.DataLoader:
    """torch.utils.data.DataLoader(dataset, batch_size, sampler=ResumableSampler(dataset, shuffle), **kwargs)."""
    if "sampler" in kwargs or "batch_sampler" in kwargs or "shuffle" in kwargs:
        raise InputError("resumable_loader: the sampler is Tessera's; do not pass sampler, batch_sampler or shuffle")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=ResumableSampler(dataset, shuffle), **kwargs)


__all__ = ["MdsReader", "ResumableSampler", "StreamingSampler", "fashion_mnist", "mds_inspect", "resumable_loader",
           "shuffled_order", "streaming_order", "synthetic"]
