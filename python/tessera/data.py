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

import decimal
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sized, Union

import torch

from ._C import InputError
from ._C import data as _native

fashion_mnist = _native.fashion_mnist
# MDS shards (MosaicML Streaming's format; docs/streaming.md): random access with the C++ reader, what
# `tessera-shard inspect` prints, merging parallel writers' parts (`tessera-shard merge`), and MdsWriter below.
MdsReader = _native.MdsReader
mds_inspect = _native.mds_inspect
merge_index = _native.merge_index
# Byte-level BPE tokenizers (Hugging Face tokenizer.json; docs/language-models.md "Tokenizers").
Tokenizer = _native.Tokenizer
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


class MdsWriter:
    """Writes an MDS data set folder as Streaming's MDSWriter does (the same bytes for the same samples), with the
    C++ writer: no Streaming install needed. docs/streaming.md, "Writing from Python".

        with tessera.data.MdsWriter("data/train", {"image": "jpeg", "label": "int", "meta": "json"}) as out:
            for image, label in source:
                out.write({"image": image, "label": label, "meta": {"source": "camera 2"}})

    Values: int, float, str, bytes and torch.Tensor as they are; numpy arrays (as tensors: give a column whose
    encoding names the dtype for uint16, uint32 and uint64 arrays, which torch 1.13 cannot hold) and numpy scalars;
    PIL images in modes L, LA, RGB and RGBA for png, jpeg and pil columns; decimal.Decimal for str_decimal; any
    JSON value for json (json.dumps, as Streaming). Leaving the `with` block by an exception writes no index.json:
    the shards written so far stay, but the folder is not a data set until a run completes (a half-converted data
    set is never read as a whole one). `finish()` (or the end of the block) writes the last shard and index.json.
    """

    def __init__(self, out: Any, columns: Dict[str, str], compression: Optional[str] = None,
                 hashes: Optional[List[str]] = None, size_limit: int = 1 << 26, exist_ok: bool = False,
                 jpeg_quality: int = 75) -> None:
        if not isinstance(columns, dict) or not columns:
            raise InputError(f"MdsWriter: columns must be a non-empty dict {{name: encoding}}, got {columns!r}")
        self.columns = dict(columns)
        self._native = _native._MdsWriter(os.fspath(out), list(self.columns.items()), compression or "",
                                          list(hashes or []), size_limit, exist_ok, jpeg_quality)
        self.finished = False

    def _value(self, column: str, value: Any) -> Any:
        encoding = self.columns.get(column, "")  # an unknown column: the C++ writer names it
        if encoding == "json":
            try:
                return json.dumps(value.tolist() if _is_numpy_array(value) else value)
            except (TypeError, ValueError) as error:  # a value json cannot write (a set, a numpy scalar, ...)
                raise InputError(f"MdsWriter.write: column {column!r} (json): {error}") from error
        if isinstance(value, decimal.Decimal):
            return str(value)
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if _is_numpy_array(value):
            import numpy
            if value.dtype in (numpy.uint16, numpy.uint32, numpy.uint64):
                if not encoding.startswith("ndarray:") and encoding not in ("uint16", "uint32", "uint64"):
                    raise InputError(f"MdsWriter.write: column {column!r} ({encoding}): a {value.dtype} array needs "
                                     f"an encoding that names its dtype (e.g. ndarray:{value.dtype}); torch 1.13 "
                                     "has no such tensor type")
                value = value.astype(numpy.int64)
            return torch.from_numpy(numpy.ascontiguousarray(value))
        if type(value).__module__ == "numpy":  # numpy scalars
            return value.item()
        if hasattr(value, "mode") and hasattr(value, "tobytes") and hasattr(value, "size"):  # a PIL image
            if value.mode not in ("L", "LA", "RGB", "RGBA"):
                raise InputError(f"MdsWriter.write: column {column!r}: PIL mode {value.mode!r} is not stored; "
                                 "convert the image to L, LA, RGB or RGBA first (image.convert('RGB'))")
            import numpy
            return torch.from_numpy(numpy.array(value))
        return value

    def write(self, sample: Dict[str, Any]) -> None:
        """Adds one sample: {column: value} with exactly the writer's columns."""
        if self.finished:
            raise InputError("MdsWriter.write: the writer is finished")
        if not isinstance(sample, dict):
            raise InputError(f"MdsWriter.write: expected a dict {{column: value}}, got {type(sample).__name__}")
        self._native.write({k: self._value(k, v) for k, v in sample.items()})

    def finish(self) -> Dict[str, int]:
        """Writes the last shard and index.json; returns {"shards": ..., "samples": ...}."""
        if self.finished:
            raise InputError("MdsWriter.finish: the writer is already finished")
        self.finished = True
        return self._native.finish()

    def __enter__(self) -> "MdsWriter":
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if kind is None and not self.finished:
            self.finish()


class StreamingDataset(torch.utils.data.IterableDataset):
    """Tessera's streaming dataset (the C++ one behind recipes' `streaming:` section) for a PyTorch loop of your own:
    an iterable of whole batches (tessera.Batch: batch["input"], batch["target"]) in the streaming order, this
    rank's share of each global batch, resumable at any batch. docs/streaming.md, "From Python".

        data = tessera.data.StreamingDataset(batch_size=128, local="data/fmnist", split="train")
        for epoch in range(3):
            data.set_epoch(epoch)
            for batch in data:
                loss = loss_fn(model(batch["input"]), batch["target"])

    `options` are the recipe section's keys (local, remote, split, input, target, num_classes, seq_length, streams,
    batching_method, shuffle_block_size, ...), checked as a recipe's. `batch_size` is the global batch; with
    `world_size` ranks, rank `rank` gets rows [rank·n/w, (rank+1)·n/w) of each, as Tessera's data-parallel runs do,
    so the order is the same for any number of ranks. Batches are read in the calling process (memory-mapped
    shards); iterate it directly or in a DataLoader without workers (`batch_size=None`). For tessera.Trainer, give
    the same keys as `{"dataset": {"streaming": {...}}}`: its loader prefetches with workers.
    """

    def __init__(self, batch_size: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 **options: Any) -> None:
        super().__init__()
        for name, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1), ("rank", rank, 0),
                                 ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"StreamingDataset: {name} must be an integer >= {low}, got {value!r}")
        if rank >= world_size:
            raise InputError(f"StreamingDataset: rank {rank} is not below world_size {world_size}")
        self.native = _native._StreamingDataset(options)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, bool(shuffle)
        self.rank, self.world_size = rank, world_size
        self.positions = self.native.epoch_positions(batch_size)  # stratified / per_stream: whole batches only
        self.epoch = 0
        self.next_batch = 0

    def __len__(self) -> int:
        """Batches per epoch (the last may be short)."""
        return -(-self.positions // self.batch_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next pass is epoch `epoch` from its batch `start` on."""
        if epoch < 0 or not 0 <= start <= len(self):
            raise InputError(f"StreamingDataset.set_epoch: epoch {epoch} must be >= 0 and start {start} in "
                             f"[0, {len(self)}]")
        self.epoch, self.next_batch = int(epoch), int(start)

    def __iter__(self) -> Iterator[Any]:
        if torch.utils.data.get_worker_info() is not None:
            raise InputError("StreamingDataset: iterate it in the main process (a DataLoader with num_workers=0): "
                             "each worker would read every batch")
        while self.next_batch < len(self):
            b = self.next_batch
            begin, end = b * self.batch_size, min((b + 1) * self.batch_size, self.positions)
            ids = self.native.order_range(self.seed, self.epoch, self.batch_size, self.shuffle, begin, end)
            n = end - begin
            share = ids[self.rank * n // self.world_size:(self.rank + 1) * n // self.world_size]
            self.next_batch = b + 1  # before yielding: a state_dict taken now resumes after this batch
            yield self.native.get_batch(share)
        self.epoch, self.next_batch = self.epoch + 1, 0

    def state_dict(self) -> Dict[str, int]:
        """Where the next batch comes from: {"epoch", "batch"}."""
        return {"epoch": self.epoch, "batch": self.next_batch}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.set_epoch(state["epoch"], state["batch"])

    @property
    def num_classes(self) -> int:
        return self.native.num_classes

    @property
    def tokens_per_example(self) -> int:
        return self.native.tokens_per_example

    def __repr__(self) -> str:
        return f"tessera.data.StreamingDataset({self.native.describe()}, batch_size={self.batch_size})"


def _is_numpy_array(value: Any) -> bool:
    return type(value).__name__ == "ndarray" and type(value).__module__ == "numpy"


def resumable_loader(dataset: Any, batch_size: int, shuffle: bool = True, **kwargs: Any) -> torch.utils.data.DataLoader:
    """torch.utils.data.DataLoader(dataset, batch_size, sampler=ResumableSampler(dataset, shuffle), **kwargs)."""
    if "sampler" in kwargs or "batch_sampler" in kwargs or "shuffle" in kwargs:
        raise InputError("resumable_loader: the sampler is Tessera's; do not pass sampler, batch_sampler or shuffle")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=ResumableSampler(dataset, shuffle), **kwargs)


__all__ = ["MdsReader", "MdsWriter", "ResumableSampler", "StreamingDataset", "StreamingSampler", "fashion_mnist",
           "mds_inspect", "merge_index", "resumable_loader", "shuffled_order", "streaming_order", "synthetic"]
