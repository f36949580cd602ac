"""The package installs, imports and is self-contained; the version is the C++ library's."""
import importlib.metadata
import pathlib
import re

import torch

import tessera


def test_version_is_the_cpp_version(repo_root):
    cmake = (repo_root / "CMakeLists.txt").read_text()
    project_version = re.search(r"project\(\s*Tessera\s+VERSION\s+([0-9.]+)", cmake).group(1)
    # tessera._C.__version__ is TESSERA_VERSION_STRING from tessera/version.h, compiled into the extension
    assert tessera.__version__ == tessera._C.__version__ == project_version
    assert importlib.metadata.version("tessera") == project_version


def test_native_parts_load_from_the_package():
    package = pathlib.Path(tessera.__file__).resolve().parent
    assert pathlib.Path(tessera._C.__file__).resolve().parent == package
    assert (package / "libtessera.so.0").is_file()
    # libtessera is the copy beside the extension (an $ORIGIN rpath), not one from a build folder
    maps = pathlib.Path("/proc/self/maps").read_text().splitlines()
    loaded = {line.split()[-1] for line in maps if "libtessera.so" in line}
    assert loaded == {str(package / "libtessera.so.0")}


def test_built_against_this_torch():
    built = tessera._C._torch_version.split(".")[:2]
    running = torch.__version__.split(".")[:2]
    assert built == running


def test_tensors_cross_without_copies():
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    batch = tessera.Batch(x, y)
    # the same TensorImpl comes back, hence the same Python object
    assert batch["input"] is x
    assert batch.target is y
    extra = torch.ones(4)
    batch["weight"] = extra
    assert batch["weight"] is extra
    assert list(batch.keys()) == ["input", "target", "weight"]
    assert batch.size == 4 and len(batch) == 3
    picked = batch.select(torch.tensor([0, 2]))
    assert torch.equal(picked["input"], x[[0, 2]])


def test_public_names_have_docstrings():
    for name in tessera.__all__:
        obj = getattr(tessera, name)
        if callable(obj) or isinstance(obj, type):
            assert obj.__doc__, name
    for name in tessera.algorithms.__all__:
        assert getattr(tessera.algorithms, name).__doc__, name
    for name in tessera.functional.__all__:
        if name != "ops":  # torch.ops.tessera, torch's namespace object
            assert getattr(tessera.functional, name).__doc__, name


def test_tessera_run_command_is_installed():
    import os
    import subprocess
    import sys

    command = os.path.join(os.path.dirname(sys.executable), "tessera-run")
    proc = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "recipe" in proc.stdout


def test_generated_stubs_list_the_cpp_options():
    package = pathlib.Path(tessera.__file__).parent
    stub = (package / "algorithms.pyi").read_text()
    assert "class LabelSmoothing(Algorithm):" in stub
    assert "smoothing: float = ..., fused: bool = ..." in stub
    assert "input_shape: list[int] = ..." in (package / "data.pyi").read_text()
    for name in ("_C.pyi", "functional.pyi", "py.typed"):
        assert (package / name).is_file(), name
