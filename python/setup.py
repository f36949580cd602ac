"""Builds the tessera Python package: CMake compiles libtessera, the pybind11 module tessera._C and tessera-run
against the LibTorch of the Python running this build; they are copied into the package with an $ORIGIN rpath.

    /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/python -m pip install --no-build-isolation ./python

The CMake build folder is reused between builds (default: <repo>/build/python; set TESSERA_PYTHON_BUILD_DIR to
change it), so a rebuild only compiles what changed. TESSERA_BUILD_JOBS sets the parallelism (default: cores).
TESSERA_LIBRARY_BUILD_DIR=<a build folder of this repository> links the libtessera built there instead of
compiling the library again (it is still copied into the package).
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def tessera_version() -> str:
    """The C++ project's version (project(Tessera VERSION x.y.z) in the root CMakeLists.txt)."""
    text = (ROOT / "CMakeLists.txt").read_text()
    match = re.search(r"project\(\s*Tessera\s+VERSION\s+([0-9][0-9.]*)", text)
    if not match:
        raise RuntimeError(f"cannot find the version in {ROOT / 'CMakeLists.txt'}")
    return match.group(1)


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import torch  # the LibTorch to build against is the one this Python uses

        out_dir = pathlib.Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        build_dir = pathlib.Path(os.environ.get("TESSERA_PYTHON_BUILD_DIR", ROOT / "build" / "python")).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        jobs = os.environ.get("TESSERA_BUILD_JOBS", str(os.cpu_count() or 2))
        # The interpreter itself, not a venv's symlink to it: the build folder stays valid across venvs.
        python = os.path.realpath(sys.executable)
        # Optionally link the libtessera of an existing build folder instead of compiling it here.
        prebuilt = os.environ.get("TESSERA_LIBRARY_BUILD_DIR", "")
        prebuilt = str(pathlib.Path(prebuilt).resolve()) if prebuilt else ""
        args = [
            "cmake", "-S", str(HERE), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={python}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DTESSERA_TORCH_LIB_DIR={pathlib.Path(torch.__file__).parent / 'lib'}",
            f"-DTESSERA_LIBRARY_BUILD_DIR={prebuilt}",
        ]
        try:
            import pybind11

            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError:
            pass  # pybind11-dev's config in /usr/lib/cmake
        if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
            args += ["-G", "Ninja"]
        subprocess.run(args, check=True, stdout=None if self.verbose else subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "python_package", "-j", jobs], check=True)

        # the module, libtessera (named as its SONAME, libtessera.so.N) and the runner, as CMake built them
        module, library, soname, runner = (build_dir / "package_files.txt").read_text().split()
        shutil.copy2(module, self.get_ext_fullpath(ext.name))
        shutil.copy2(library, out_dir / soname)
        shutil.copy2(runner, out_dir / "tessera-run")
        # Stubs whose keyword arguments come from the C++ Options, generated from the module just built.
        env = dict(os.environ, PYTHONPATH=str(out_dir.parent))
        subprocess.run([sys.executable, "-m", "tessera._stubgen", str(out_dir)], check=True, env=env, cwd=out_dir.parent)
        (out_dir / "_build_info.py").write_text(
            f'"""Written by setup.py."""\ntorch_version = {torch.__version__!r}\n'
            f"build_dir = {str(build_dir)!r}\n"
        )


setup(
    version=tessera_version(),
    packages=["tessera"],
    package_data={"tessera": ["*.pyi", "py.typed"]},
    ext_modules=[CMakeExtension("tessera._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
