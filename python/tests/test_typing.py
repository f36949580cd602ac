"""The type hints say what the API accepts: checked on the installed stubs (and with mypy, where it is installed)."""
import ast
import inspect
import pathlib
import subprocess
import sys
import textwrap
import types

import pytest

import tessera

PACKAGE = pathlib.Path(tessera.__file__).parent


def _class(stub: str, name: str) -> ast.ClassDef:
    tree = ast.parse((PACKAGE / stub).read_text())
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)


def test_algorithm_spec_is_an_attribute_or_a_method_in_the_stub():
    algorithm = _class("_C.pyi", "Algorithm")
    annotated = {node.target.id: ast.unparse(node.annotation) for node in algorithm.body
                 if isinstance(node, ast.AnnAssign)}
    methods = {node.name for node in algorithm.body if isinstance(node, ast.FunctionDef)}
    assert annotated.get("spec") == "Union[AlgorithmSpec, Callable[[], AlgorithmSpec]]"
    assert "spec" not in methods  # a method would reject the documented `spec = AlgorithmSpec(...)`


def test_trainer_options_typed_dict_lists_the_cpp_trainer_options():
    options = _class("_options.pyi", "TrainerOptions")
    fields = {node.target.id: ast.unparse(node.annotation) for node in options.body if isinstance(node, ast.AnnAssign)}
    assert fields["max_duration"] == "Union[str, Time]"
    assert fields["seed"] == "int"
    assert fields["run_dir"] == "Union[str, os.PathLike[str]]"
    assert fields["deterministic"] == "bool"
    assert fields["nonfinite_loss"] == "Literal['error', 'skip']"
    assert fields["precision"] == "Literal['fp32', 'amp_bf16', 'amp_fp16']"
    assert fields["eval_precision"] == "Literal['fp32', 'amp_bf16', 'amp_fp16']"
    assert fields["loss_scaling"] == "Literal['auto', 'dynamic', 'none']"
    assert fields["microbatch_size"] == "Union[int, Literal['auto']]"
    assert fields["profiler"] == "ProfilerOptions"
    profiler = _class("_options.pyi", "ProfilerOptions")
    nested = {node.target.id: ast.unparse(node.annotation) for node in profiler.body if isinstance(node, ast.AnnAssign)}
    assert nested == {"enabled": "bool", "skip_first": "int", "wait": "int", "warmup": "int", "active": "int",
                      "repeat": "int", "folder": "str", "torch_ops": "bool", "record_shapes": "bool"}
    # the same keys as the C++ TrainerOptions the trainer reports
    from conftest import tiny_components

    assert set(fields) == set(tessera.Trainer(**tiny_components()).options)


def _native_callables(module, seen=None):
    seen = set() if seen is None else seen
    for name in dir(module):
        value = getattr(module, name)
        if isinstance(value, types.ModuleType) and value.__name__.startswith("tessera._C") and value not in seen:
            seen.add(value)
            yield from _native_callables(value, seen)
        elif inspect.isclass(value) and value.__module__.startswith("tessera") and value not in seen:
            seen.add(value)
            yield from ((f"{value.__name__}.{n}", getattr(value, n)) for n in vars(value))
        elif callable(value):
            yield name, value


def test_signatures_in_docstrings_say_torch_tensor():
    docs = {name: getattr(f, "__doc__", None) or "" for name, f in _native_callables(tessera._C)}
    assert "torch.Tensor" in docs["smooth_labels"]
    leaking = sorted(name for name, doc in docs.items() if "at::" in doc)
    assert leaking == []


def test_mypy_accepts_both_spec_forms_and_rejects_a_dict(tmp_path):
    pytest.importorskip("mypy")
    source = tmp_path / "user.py"
    source.write_text(textwrap.dedent("""
        import tessera

        class A(tessera.Algorithm):
            spec = tessera.AlgorithmSpec(name="a")

        class B(tessera.Algorithm):
            def spec(self) -> tessera.AlgorithmSpec:
                return tessera.AlgorithmSpec(name="b")

        class C(tessera.Algorithm):
            spec = {"name": "c"}
    """))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", str(source)], capture_output=True,
                          text=True, cwd=tmp_path)
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "user.py:12" in errors[0], proc.stdout
