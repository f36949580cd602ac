"""The Python side of the adapters that put the user's own model and data into the C++ loop
(python/src/py_model.cpp, py_data.cpp): what a loader yields per epoch, where an epoch starts on resume, and
which tensors a module has. Users do not call these; see docs/python.md.
"""
from __future__ import annotations

import inspect
import io
import sys
from typing import Any, Iterable, Iterator, List, Tuple

import torch

from ._C import InputError
from .data import ResumableSampler


def accepts_keyword(fn: Any, name: str) -> bool:
    """Whether fn(..., name=...) is accepted (a parameter of that name, or **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def module_tensors(module: torch.nn.Module) -> List[Tuple[str, list, list]]:
    """[(module path, [(name, parameter)], [(name, buffer)])] in named_modules() order: every parameter once,
    and the buffers that state_dict() saves (persistent ones)."""
    out = []
    seen = set()
    for path, m in module.named_modules():
        params = [(n, p) for n, p in m._parameters.items() if p is not None and id(p) not in seen]
        seen.update(id(p) for _, p in params)
        skip = getattr(m, "_non_persistent_buffers_set", set())
        buffers = [(n, b) for n, b in m._buffers.items() if b is not None and n not in skip and id(b) not in seen]
        seen.update(id(b) for _, b in buffers)
        if params or buffers or path == "":
            out.append((path, params, buffers))
    # Modules that hold nothing are left out, but their descendants that do need them as parents.
    paths = {p for p, _, _ in out}
    full = []
    for path, params, buffers in out:
        parts = path.split(".") if path else []
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in paths:
                paths.add(parent)
                full.append((parent, [], []))
        full.append((path, params, buffers))
    return full


def _floating(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def observe_layers(module: torch.nn.Module, report: Any) -> list:
    """Forward hooks on every submodule of `module` (not the module itself: its input and output are the model's)
    that pass each floating-point tensor a submodule takes, before it runs, and gives, after, to
    report(layer name, "input.<i>" | "output" | "output.<i>", tensor). Returns the hooks' handles."""

    def before(name: str):
        def hook(_module: torch.nn.Module, args: tuple) -> None:
            for i, value in enumerate(args):
                if _floating(value):
                    report(name, f"input.{i}", value)
        return hook

    def after(name: str):
        def hook(_module: torch.nn.Module, _args: tuple, out: Any) -> None:
            if _floating(out):
                report(name, "output", out)
            elif isinstance(out, (tuple, list)):
                for i, value in enumerate(out):
                    if _floating(value):
                        report(name, f"output.{i}", value)
        return hook

    handles = []
    for name, sub in module.named_modules():
        if sub is not module:
            handles.append(sub.register_forward_pre_hook(before(name)))
            handles.append(sub.register_forward_hook(after(name)))
    return handles


def remove_hooks(handles: list) -> None:
    for handle in handles:
        handle.remove()


def script_bytes(module: torch.jit.ScriptModule) -> bytes:
    """A TorchScript module serialised, for torch::jit::load in C++."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def _resumable_sampler(loader: Any) -> Any:
    batch_sampler = getattr(loader, "batch_sampler", None)
    for candidate in (getattr(batch_sampler, "sampler", None), getattr(loader, "sampler", None)):
        if isinstance(candidate, ResumableSampler):
            return candidate
    return None


def _batch_size(loader: Any) -> Any:
    size = getattr(loader, "batch_size", None)
    if size is None:
        size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return size


def loader_info(loader: Any, what: str) -> dict:
    """num_batches, num_samples and a description of the user's data."""
    if isinstance(loader, Iterator) or inspect.isgenerator(loader):
        raise InputError(
            f"{what}: a {type(loader).__name__} can be read only once; give something that can be iterated every "
            "epoch (a torch.utils.data.DataLoader, a list of batches, or an object with __iter__ and __len__)"
        )
    if not isinstance(loader, Iterable):
        raise InputError(f"{what}: expected a torch.utils.data.DataLoader or an iterable of batches, got {loader!r}")
    try:
        num_batches = len(loader)
    except TypeError:
        raise InputError(
            f"{what}: {type(loader).__name__} has no len(); Tessera needs the number of batches per epoch (for "
            "max_duration in epochs, schedules and exact resume): give it __len__, or use a map-style dataset"
        ) from None
    if num_batches <= 0:
        raise InputError(f"{what}: it yields no batches (len() is {num_batches})")
    size = _batch_size(loader)
    dataset = getattr(loader, "dataset", None)
    if isinstance(loader, torch.utils.data.DataLoader) and size is not None and hasattr(dataset, "__len__"):
        # An epoch is what the sampler draws (a subset, a weighted sample), in batches of the batch sampler's.
        batch_sampler = getattr(loader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", None)
        sampler = loader.sampler if sampler is None else sampler  # (not `or`: an empty sampler is falsy)
        n = len(sampler) if hasattr(sampler, "__len__") else len(dataset)
        drop_last = getattr(batch_sampler, "drop_last", loader.drop_last)
        num_samples = n - n % size if drop_last else n
        workers = loader.num_workers
        order = "resumable order" if _resumable_sampler(loader) else type(loader.sampler).__name__
        drawn = f", {n} drawn an epoch" if n != len(dataset) else ""
        description = (
            f"DataLoader({type(dataset).__name__} of {len(dataset)}{drawn}, batch_size {size}, {workers} workers, "
            f"{order})"
        )
    elif isinstance(loader, (list, tuple)):
        num_samples = sum(_first_dim(b) for b in loader)
        description = f"{type(loader).__name__} of {num_batches} batches"
    else:
        num_samples = num_batches * (size or _first_dim(example_batch(loader, what)))
        description = f"{type(loader).__name__} of {num_batches} batches"
    fixed = isinstance(loader, torch.utils.data.DataLoader) and size is not None  # the examples in each batch
    return {"num_batches": num_batches, "num_samples": num_samples, "batch_size": int(size) if fixed else 0,
            "description": description}


def _first_dim(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, (list, tuple)) and batch:
        return _first_dim(batch[0])
    if isinstance(batch, dict) and batch:
        return _first_dim(next(iter(batch.values())))
    return 1


def example_batch(loader: Any, what: str) -> Any:
    """The first batch of one pass (for checks before step 1); the pass is then abandoned."""
    state = torch.get_rng_state()
    try:
        it = iter(loader)
        try:
            return next(it)
        except StopIteration:
            raise InputError(f"{what}: it yields no batches") from None
        finally:
            del it
    finally:
        torch.set_rng_state(state)


def _seed_for(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63)


def start_epoch(loader: Any, what: str, seed: int, epoch: int, first_batch: int, resume: str) -> Iterator[Any]:
    """An iterator over epoch `epoch` of the user's data from batch `first_batch` on.

    With a tessera.data.ResumableSampler the order is a pure function of (seed, epoch) and the sampler starts
    at the first example of `first_batch`: O(1). Without it, a start inside an epoch (a resumed run) is refused,
    or with resume="skip" reached by reading and dropping batches, which is exact only when the loader yields
    the same batches on every pass (refused for a RandomSampler, whose order is drawn anew).

    Creating a DataLoader's iterator draws its workers' base seed from torch's global generator: it is drawn
    here from a generator seeded by (seed, epoch) and the global one is left as it was, so the training's random
    numbers (dropout...) are the same whether the run was resumed or not.
    """
    sampler = _resumable_sampler(loader)
    skip = 0
    if sampler is not None:
        sampler.set_epoch(epoch, seed=seed, start=first_batch * _batch_size(loader))
    elif first_batch > 0:
        inner = getattr(loader, "sampler", None)
        if resume != "skip":
            raise InputError(
                f"{what}: the run resumes inside epoch {epoch} (at batch {first_batch}), and this loader cannot be "
                "positioned there. Build the DataLoader with sampler=tessera.data.ResumableSampler(dataset) (exact, "
                "O(1)), or pass dataloader_resume=\"skip\" to read and drop the batches before it (exact only if "
                "the loader yields the same batches on every pass)"
            )
        if isinstance(inner, torch.utils.data.RandomSampler) and inner.generator is None:
            raise InputError(
                f"{what}: cannot resume inside epoch {epoch} by skipping: its RandomSampler draws a new order on "
                "every pass, so the skipped batches would not be the ones already trained on. Use "
                "sampler=tessera.data.ResumableSampler(dataset) instead"
            )
        skip = first_batch
    state = torch.get_rng_state()
    try:
        torch.random.default_generator.manual_seed(_seed_for(seed, epoch))
        it = iter(loader)
    finally:
        torch.set_rng_state(state)
    if skip:
        print(f"tessera: {what}: resuming inside epoch {epoch} by reading and dropping {skip} batches "
              "(dataloader_resume=\"skip\")", file=sys.stderr, flush=True)
        for i in range(skip):
            try:
                next(it)
            except StopIteration:
                raise InputError(f"{what}: it ended after {i} batches while skipping to batch {skip}") from None
    return it
