"""tessera.Trainer: the C++ trainer built from a recipe (file, dict or Recipe) or from components."""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch

from . import _C
from ._metrics import entries, per_evaluator
from ._optimizers import from_torch
from ._plan import Plan
from ._recipe import Overrides, RecipeLike, load_recipe, overrides_list
from ._schedulers import TorchTable, check_horizons, every_batch_of, is_torch_schedule, unwrap
from ._schedulers import from_torch as schedules_from_torch

if TYPE_CHECKING:  # typed keyword arguments for checkers; nothing is imported at run time
    from typing_extensions import Unpack

    from ._options import TrainerOptions

AlgorithmLike = Union[_C.Algorithm, str, Mapping[str, Any]]
CallbackLike = Union[_C.Callback, str, Mapping[str, Any]]

# keyword -> recipe key path
_SECTIONS = {
    "model": "model",
    "train_data": "data.train",
    "eval_data": "data.eval",
    "optimizer": "optimizer",
    "schedulers": "schedulers",
    "loggers": "loggers",
    "checkpoint": "checkpoint",
}


def _is_entry(x: Any) -> bool:
    return isinstance(x, (str, Mapping))


def _user_parts(
    model: Any,
    train_dataloader: Any,
    train_metrics: Any,
    eval_dataloader: Any,
    eval_metrics: Any,
    loss_fn: Optional[Callable[..., Any]],
    loss_terms: Optional[Callable[..., Any]],
    model_call: str,
    output_key: str,
    input_key: str,
    target_key: str,
    dataloader_resume: str,
) -> Dict[str, Any]:
    """The objects passed to the C++ trainer beside the recipe (python/src/user_parts.h)."""
    user: Dict[str, Any] = {}
    if isinstance(model, torch.nn.Module):
        user["module"] = model
    if train_dataloader is not None:
        user["train_dataloader"] = train_dataloader
        if train_metrics is not None:
            user["train_metrics"] = entries(train_metrics, "train_metrics")
    elif train_metrics is not None:
        raise _C.InputError("train_metrics: applies to the training on train_dataloader; with train_data (or a recipe) "
                            "give the metrics there by name, e.g. {..., 'metrics': ['accuracy', 'cross_entropy']}")
    if eval_dataloader is not None:
        if isinstance(eval_dataloader, Mapping):
            user["eval_dataloaders"] = [(str(label), loader) for label, loader in eval_dataloader.items()]
        else:
            user["eval_dataloaders"] = [("eval", eval_dataloader)]
        if eval_metrics is not None:
            metrics = per_evaluator(eval_metrics, len(user["eval_dataloaders"]))
            user["eval_dataloaders"] = [(label, loader, m) for (label, loader), m in
                                        zip(user["eval_dataloaders"], metrics)]
    elif eval_metrics is not None:
        raise _C.InputError("eval_metrics: applies to the evaluators made from eval_dataloader; with eval_data (or a "
                            "recipe) give the metrics there by name, e.g. {..., 'metrics': ['accuracy', "
                            "'cross_entropy']}")
    if loss_fn is not None:
        if "module" not in user:
            raise _C.InputError("loss_fn: applies to a model given as a torch.nn.Module; recipe models have their own loss")
        user["loss_fn"] = loss_fn
    if loss_terms is not None:
        if "module" not in user:
            raise _C.InputError("loss_terms: applies to a model given as a torch.nn.Module; recipe models count "
                                "their own")
        user["loss_terms"] = loss_terms
    # The keywords that say how to call the user's module and read the user's batches: refused where nothing they
    # apply to is given, rather than ignored.
    given = {"model_call": (model_call, "auto", "module"), "output_key": (output_key, "logits", "module"),
             "input_key": (input_key, "input", "data"), "target_key": (target_key, "target", "data"),
             "dataloader_resume": (dataloader_resume, "refuse", "train_dataloader")}
    has = {"module": "module" in user, "train_dataloader": "train_dataloader" in user,
           "data": "train_dataloader" in user or "eval_dataloaders" in user}
    for key, (value, default, needs) in given.items():
        if value != default and not has[needs]:
            what = {"module": "a model given as a torch.nn.Module",
                    "data": "batches from train_dataloader or eval_dataloader",
                    "train_dataloader": "a train_dataloader"}[needs]
            raise _C.InputError(f"{key}={value!r}: applies to {what}, and none is given; leave it out")
    if user:
        user.update(model_call=model_call, output_key=output_key, input_key=input_key, target_key=target_key,
                    dataloader_resume=dataloader_resume)
    return user


class Trainer(_C._Trainer):
    """Trains a model in Tessera's C++ loop.

    From a recipe (a YAML path, a dict with the same schema, or a tessera.Recipe), with overrides:

        trainer = tessera.Trainer("recipe.yaml", {"optimizer.sgd.lr": 0.05}, max_duration="2ep")

    or from your own model and data, as with Composer (any torch.nn.Module, any DataLoader):

        trainer = tessera.Trainer(
            model=my_resnet,                                   # a torch.nn.Module (or torch.jit.script(...))
            train_dataloader=DataLoader(train_set, batch_size=128, num_workers=2,
                                        sampler=tessera.data.ResumableSampler(train_set)),
            eval_dataloader=DataLoader(test_set, batch_size=256),
            optimizer={"sgd": {"lr": 0.1, "momentum": 0.9}},
            algorithms=[tessera.algorithms.BlurPool(), tessera.algorithms.LabelSmoothing(smoothing=0.1)],
            max_duration="2ep")

    The forward runs from the C++ loop (the GIL is taken for that call only); backward and the optimizer step
    run in C++. `loss_fn(outputs, batch)` computes the loss (give it a `reduction` keyword for selective
    backprop); without it the loss is the model's own (an output dict with "loss", as Hugging Face models) or
    cross-entropy against the batch's target. Microbatches and ranks weigh by the terms the loss averages over:
    for that cross-entropy the positions whose target is not -100; with a `loss_fn`, the examples, unless
    `loss_terms(batch)` counts them per example (an integer tensor [N], e.g. `lambda b: (b["labels"] != -100).sum(1)`).
    Batches may be tensors, tuples (input, target, ...) or dicts
    (`input_key`/`target_key` name the input and the labels; dicts go to the model as keyword arguments unless
    `model_call` says "input" or "batch"). `output_key` names the outputs in a dict output ("logits").
    `eval_metrics` chooses what the evaluators of `eval_dataloader` compute (default: accuracy), and `train_metrics`
    what the training on `train_dataloader` computes (metrics/train/<name>; default: accuracy): Tessera's metrics by
    name ("accuracy", "top5_accuracy", "cross_entropy", "perplexity", "precision", "recall", "f1", and
    "weighted_precision", "weighted_recall", "weighted_f1"; options in a dict
    by name: {"f1": {"num_classes": 10, "per_class": True}}) and Python objects with update(outputs, target),
    compute() and reset() (a torchmetrics Metric, or a class of your own), in a list or a dict by name; a compute()
    returning a tensor of one value per class or a dict logs each as metrics/<label>/<name>/<index or key>.
    `dataloader_resume`: what resuming inside an epoch does with a loader that has no ResumableSampler:
    "refuse" (default) or "skip" (read and drop the batches before it). See docs/python.md.

    or from components, each given as in a recipe (`{name: {options}}` or a bare name):

        trainer = tessera.Trainer(
            model={"mlp": {"hidden": [64]}},
            train_data={"dataset": {"synthetic": {"size": 512}}, "loader": {"batch_size": 64}},
            optimizer={"sgd": {"lr": 0.1}},
            algorithms=[tessera.algorithms.LabelSmoothing(smoothing=0.1), MyPythonAlgorithm()],
            callbacks=[LossRecorder()],
            max_duration="2ep", seed=0)

    `optimizer` may be a torch.optim optimizer over the module's parameters and `schedulers` torch's lr schedulers
    over it (one, or a list beside Tessera's entries): both are translated into the Tessera optimizer and schedules
    that make the same updates and set the same lrs (schedulers with no Tessera equivalent are stepped by torch over the
    run before step 1 and followed as a table of their rates), or refused with the reason; torch schedulers are stepped
    once per epoch unless step_schedulers_every_batch=True, as in Composer (docs/python.md, "Schedulers from torch").

    Other keyword arguments are TrainerOptions fields (max_duration, seed, threads, microbatch_size,
    eval_interval, deterministic, precision, eval_precision, loss_scaling, run_dir, log_interval, nonfinite_loss,
    device). `precision` is "fp32", "amp_bf16" (CPU or CUDA) or "amp_fp16" (CUDA only; a GradScaler scales the loss);
    `eval_precision` takes the same names for the evaluation forward (default "fp32");
    `microbatch_size` is a whole number or "auto" (halve on out-of-memory errors). With a recipe,
    every keyword overrides the recipe's value. `device` is "cpu", "cuda", "cuda:N" or "auto" (the default: the
    GPU when there is one); CUDA asked for where there is none raises tessera.InputError here. `algorithms` and `callbacks` take objects (C++ or Python subclasses) and recipe
    entries; they run after the recipe's own, in the order given (the engine then orders algorithms per
    event by their declared specs). The plan is compiled, and INIT runs, in the constructor: refused
    combinations raise tessera.InputError here, before any training.

    Checkpoints come from the recipe's `checkpoint:` section (or the `checkpoint` keyword, a dict of the same
    keys: folder, interval, keep, autoresume, fresh_start_if_invalid, load_path, weights_only, strict). With a
    folder, fit() saves every `interval` and at the end; with autoresume=True the constructor loads the newest
    valid checkpoint of the folder, so that fit() continues that run exactly (same weights, bit for bit, as one
    uninterrupted run):

        trainer = tessera.Trainer("recipe.yaml", checkpoint={"folder": "ck", "interval": "1ep", "autoresume": True})
        trainer.fit()
        trainer.loaded_checkpoint   # the file it resumed from ('' = started fresh)

    save_checkpoint(path) and load_checkpoint(path, weights_only=False, strict=True) do the same by hand;
    tessera.inspect_checkpoint(path) reads a file's metadata. Invalid files raise tessera.CheckpointError.
    """

    def __init__(
        self,
        recipe: Optional[RecipeLike] = None,
        overrides: Overrides = None,
        *,
        algorithms: Iterable[AlgorithmLike] = (),
        callbacks: Iterable[CallbackLike] = (),
        model: Any = None,
        train_dataloader: Any = None,
        train_metrics: Any = None,
        eval_dataloader: Any = None,
        eval_metrics: Any = None,
        loss_fn: Optional[Callable[..., Any]] = None,
        loss_terms: Optional[Callable[..., Any]] = None,
        model_call: str = "auto",
        output_key: str = "logits",
        input_key: str = "input",
        target_key: str = "target",
        dataloader_resume: str = "refuse",
        train_data: Optional[Mapping[str, Any]] = None,
        eval_data: Any = None,
        optimizer: Any = None,
        schedulers: Any = None,
        loggers: Optional[Sequence[Any]] = None,
        checkpoint: Optional[Mapping[str, Any]] = None,
        **options: Unpack[TrainerOptions],
    ) -> None:
        torch_optimizers = isinstance(optimizer, (list, tuple)) and optimizer and all(
            isinstance(o, torch.optim.Optimizer) for o in optimizer)
        # torch schedulers (one, or in a list beside Tessera's entries) become Tessera schedules with the optimizer.
        schedule_list = list(schedulers) if isinstance(schedulers, (list, tuple)) else (
            [] if schedulers is None else [schedulers])
        torch_schedules = [s for s in schedule_list if is_torch_schedule(s)]
        tables: List[TorchTable] = []  # torch schedules no Tessera schedule equals, followed as torch steps them
        torch_optimizer: Any = None
        if isinstance(optimizer, torch.optim.Optimizer) or torch_optimizers:
            if not isinstance(model, torch.nn.Module):
                kind = "+".join(type(o).__name__ for o in optimizer) if torch_optimizers else type(optimizer).__name__
                raise _C.InputError(
                    f"optimizer: a {kind} (torch.optim) is translated for a model given as a "
                    "torch.nn.Module (its parameters, by name); with a recipe's model give the optimizer as a recipe "
                    "entry, e.g. optimizer={'sgd': {'lr': 0.1, 'momentum': 0.9}} (tessera.registered('optimizers'))"
                )
            torch_optimizer = optimizer
            optimizer = from_torch(optimizer, model, scheduled=bool(torch_schedules))  # the same updates
        if torch_schedules:
            if torch_optimizer is None:
                raise _C.InputError(
                    f"schedulers: torch's {type(unwrap(torch_schedules[0])[0]).__name__} sets the lr of a torch "
                    "optimizer: give that optimizer as optimizer= (it is translated with it), or give Tessera "
                    "schedules as recipe "
                    "entries, e.g. schedulers=[{'cosine': {'t_max': '1dur'}}] (tessera.registered('schedulers'))")
            # Given, or the schedulers' dicts' interval; else the recipe's, else Composer's default with torch
            # schedulers: stepped once per epoch.
            given, where = options.get("step_schedulers_every_batch"), ""
            if given is None and recipe is not None:
                loaded = load_recipe(recipe, overrides_list(overrides))
                given = loaded.to_dict().get("step_schedulers_every_batch")
                where = loaded.location("step_schedulers_every_batch")
            every_batch = bool(every_batch_of(torch_schedules, given, where))
            options["step_schedulers_every_batch"] = every_batch
            optimizers = list(torch_optimizer) if isinstance(torch_optimizer, (list, tuple)) else [torch_optimizer]
            entries = schedules_from_torch(torch_schedules, optimizers, bool(every_batch))
            tables = [e for e in entries if isinstance(e, TorchTable)]
            entries = [e for e in entries if not isinstance(e, TorchTable)]
            first = next(i for i, s in enumerate(schedule_list) if is_torch_schedule(s))
            rest = [s for s in schedule_list if not is_torch_schedule(s)]
            schedulers = rest[:first] + entries + rest[first:]
        if train_dataloader is not None and train_data is not None:
            raise _C.InputError("train_dataloader and train_data both describe the training data; give one")
        user = _user_parts(model, train_dataloader, train_metrics, eval_dataloader, eval_metrics, loss_fn, loss_terms,
                           model_call, output_key, input_key, target_key, dataloader_resume)
        if "module" in user:
            model = None
        if tables:
            user["torch_tables"] = [(t, t.name, not options["step_schedulers_every_batch"]) for t in tables]
        sections = {
            "model": model,
            "train_data": train_data,
            "eval_data": eval_data,
            "optimizer": optimizer,
            "schedulers": schedulers,
            "loggers": loggers,
            "checkpoint": checkpoint,
        }
        given = {k: v for k, v in sections.items() if v is not None}
        callbacks = list(callbacks)
        callback_entries = [c for c in callbacks if _is_entry(c)]
        callback_objects = [c for c in callbacks if not _is_entry(c)]
        if recipe is None:
            have = set(given)
            if "module" in user:
                have.add("model")
            if "train_dataloader" in user:
                have.add("train_data")
            missing = [k for k in ("model", "train_data", "optimizer") if k not in have]
            if missing:
                raise _C.InputError(
                    "Trainer: give a recipe, or the components " + ", ".join(missing).replace(
                        "train_data", "train_dataloader (or train_data)") + " (and optionally "
                    "eval_dataloader/eval_data, schedulers, loggers, checkpoint, algorithms, callbacks)"
                )
            doc: Dict[str, Any] = dict(options)
            if "model" in given:
                doc["model"] = given["model"]
            if "train_data" in given:
                doc["data"] = {"train": given["train_data"]}
            if "eval_data" in given:
                doc.setdefault("data", {})["eval"] = given["eval_data"]
            for key in ("optimizer", "schedulers", "loggers", "checkpoint"):
                if key in given:
                    doc[key] = given[key]
            if callback_entries:
                doc["callbacks"] = callback_entries
            rec = load_recipe(doc, overrides, name="<components>")
        else:
            extra = overrides_list(overrides)
            extra += overrides_list({_SECTIONS[k]: v for k, v in given.items()})
            extra += overrides_list(options)
            rec = load_recipe(recipe, extra)
            if callback_entries:
                existing = rec.to_dict().get("callbacks") or []
                rec = load_recipe(rec, {"callbacks": list(existing) + callback_entries})
        algorithm_objects: List[_C.Algorithm] = [
            _C.algorithms.make(a) if _is_entry(a) else a for a in algorithms
        ]
        super().__init__(rec, algorithm_objects, callback_objects, user)
        self._module = user.get("module")
        if torch_schedules and not tables:  # where torch's would leave its closed form, now that the length is known
            length, per_epoch = self.state.max_duration, self.state.batches_per_epoch
            batches = {"ep": length.value * per_epoch, "ba": length.value}.get(str(length.unit))
            if batches is not None:  # in the schedule's own steps: scale_schedule_ratio scaled both
                steps = batches if self.options["step_schedulers_every_batch"] else -(-batches // per_epoch)
                check_horizons(torch_schedules, math.ceil(steps / self.options["scale_schedule_ratio"] - 1e-9))

    @property
    def module(self) -> Optional[torch.nn.Module]:
        """The torch.nn.Module given as `model` (trained in place: its parameters are the ones Tessera trains), or
        None for a recipe model (see `model`)."""
        return self._module

    @property
    def plan(self) -> Plan:
        """The engine's plan for this run (per event, the algorithms in run order)."""
        return Plan(self._plan)

    def eval(self) -> Dict[str, float]:
        """Alias of evaluate()."""
        return self.evaluate()

    def export_huggingface(self, folder: Union[str, "os.PathLike[str]"], tokenizer: Any = None) -> None:
        """Writes the gpt model as a Hugging Face checkpoint into `folder` (config.json and model.safetensors:
        transformers' AutoModelForCausalLM.from_pretrained(folder) reads it): Llama's for a model of Llama's
        architecture (rotary positions, RMSNorm, gated feed-forward networks), GPT-2's otherwise; the weights as they
        are now (after a run with ema or swa, the averages); with `tokenizer` (the tessera.data.Tokenizer of the
        model's text) its tokenizer.json too, for transformers' AutoTokenizer. Refused, writing nothing, for a model
        the format cannot hold (ALiBi, gated linear units on GPT-2, factorized layers, stochastic depth, a bert
        model). Call it outside fit() or from a callback at batch end."""
        _C.functional.save_huggingface(self.model, os.fspath(folder), tokenizer)

    def generate(self, prompt: Union[str, bytes, torch.Tensor], tokenizer: Any = None,
                 **options: Any) -> Union[str, bytes, torch.Tensor]:
        """The prompt continued by the language model (tessera.functional.generate; options max_new_tokens,
        temperature, top_k, top_p, seed, eos_token, eos_text, max_context, kv_cache). A str or bytes prompt is
        text, in the byte-level vocabulary of the text dataset or in the tokens of `tokenizer` (a
        tessera.data.Tokenizer, the one the model's data was tokenized with), and gives the same type back (a str
        decodes the bytes as UTF-8, invalid bytes as U+FFFD); a tensor of token ids [P] or [N, P] gives the ids
        [.., P + T]. eos_text="<|endoftext|>" stops a row at that token of `tokenizer` (or at one byte without
        one). Call it outside fit() or from a callback at batch end."""
        if isinstance(prompt, torch.Tensor):
            ids = prompt.unsqueeze(0) if prompt.dim() == 1 else prompt
            out = _C.functional.generate(self.model, ids, tokenizer, **options)
            return out[0] if prompt.dim() == 1 else out
        data = prompt.encode() if isinstance(prompt, str) else bytes(prompt)
        if tokenizer is not None:
            ids = torch.tensor([tokenizer.encode(data)], dtype=torch.long)
            out = tokenizer.decode_bytes(_C.functional.generate(self.model, ids, tokenizer, **options)[0].tolist())
        else:
            ids = torch.tensor([list(data)], dtype=torch.long)
            out = bytes(_C.functional.generate(self.model, ids, None, **options)[0].tolist())
        return out.decode(errors="replace") if isinstance(prompt, str) else out

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if "_module" not in self.__dict__:  # the constructor raised: there is no native trainer to describe
            return "tessera.Trainer(<not constructed: its constructor raised>)"
        ts = self.state.timestamp
        return (
            f"tessera.Trainer(model={self.model_name!r}, recipe={self.recipe.path!r}, "
            f"epoch={ts.epoch}, batch={ts.batch})"
        )
