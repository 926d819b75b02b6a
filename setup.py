"""Build pycnn: the Python package, plus the CUDA extension pycnn._C when a CUDA
toolkit is present (nvcc through CMake, the pybind11 cmake_example pattern).

PYCNN_CUDA=1 insists on the extension (the build fails if it cannot be built),
PYCNN_CUDA=0 skips it; unset, it is built when nvcc and cmake are found.
PYCNN_CUDA_ARCHS overrides the GPU architectures (default "80;90").

A regular (non-editable) install also carries the benchmark's shape sets, bench/shapes/,
as pycnn/bench/shapes/, so `pycnn bench` runs from an installed package.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def find_nvcc():
    nvcc = shutil.which("nvcc")
    if nvcc:
        return nvcc
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return None


BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def say(message):
    """Print once per install: setup.py also runs for metadata, where it stays quiet."""
    if BUILD_COMMANDS & set(sys.argv[1:]):
        print(message)


def want_cuda():
    """True, or False with the reason printed in one line."""
    flag = os.environ.get("PYCNN_CUDA", "").strip()
    if flag not in ("", "0", "1"):
        sys.exit(f"PYCNN_CUDA: expected 0, 1 or unset, got {flag!r}")
    if flag == "0":
        say("pycnn: PYCNN_CUDA=0, installing the CPU (NumPy) backend only")
        return False
    missing = [name for name, found in (("nvcc", find_nvcc()), ("cmake", shutil.which("cmake"))) if not found]
    if missing:
        if flag == "1":
            sys.exit(f"pycnn: PYCNN_CUDA=1 but {' and '.join(missing)} not found on PATH")
        say(f"pycnn: no {' or '.join(missing)} found, installing the CPU (NumPy) backend only")
        return False
    return True


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        extdir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp).resolve() / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        nvcc = find_nvcc()
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCMAKE_CUDA_ARCHITECTURES={os.environ.get('PYCNN_CUDA_ARCHS', '80;90')}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        if shutil.which("ninja"):
            args.append("-GNinja")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_temp), *args], check=True)
        subprocess.run(["cmake", "--build", str(build_temp), "-j", jobs], check=True)


class BuildPy(build_py):
    """The package, plus a copy of bench/shapes/*.json in pycnn/bench/shapes/ (the one
    folder of shape sets stays bench/shapes/; pycnn.paths finds whichever is there)."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "pycnn" / "bench" / "shapes"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((ROOT / "bench" / "shapes").glob("*.json")):
            self.copy_file(str(path), str(target / path.name))


setup(
    ext_modules=[CMakeExtension("pycnn._C")] if want_cuda() else [],
    cmdclass={"build_ext": CMakeBuild, "build_py": BuildPy},
)
