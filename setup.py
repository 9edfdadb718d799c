"""Builds afd_ext._C: op schemas and C++ CPU kernels always, CUDA kernels when nvcc is found.

Environment:
  AFD_BUILD_CUDA=0|1   force the CUDA part off / on (default: on when nvcc is found
                       in CUDA_HOME or /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST  GPU architectures (default "9.0" when no GPU is visible)
  MAX_JOBS              parallel compile jobs (ninja)
"""
import glob
import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if cand and os.path.exists(os.path.join(cand, "bin", "nvcc")):
            return cand
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def _want_cuda():
    flag = os.environ.get("AFD_BUILD_CUDA", "auto").lower()
    home = _find_cuda_home()
    if flag in ("0", "false", "no", "off"):
        return None
    if flag in ("1", "true", "yes", "on") and home is None:
        raise RuntimeError("AFD_BUILD_CUDA=1 but nvcc was not found (set CUDA_HOME)")
    return home


CUDA_HOME = _want_cuda()
if CUDA_HOME:
    # torch.utils.cpp_extension reads CUDA_HOME when imported.
    os.environ["CUDA_HOME"] = CUDA_HOME
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def extensions():
    cxx = ["-O3", "-std=c++20", "-fopenmp", "-DAFD_PYTHON_MODULE"]
    sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")))
    link = ["-fopenmp"]
    if sys.platform.startswith("linux"):
        # Link the shared libstdc++ that torch itself uses, ahead of the compiler driver's own
        # -lstdc++: a static copy (LDFLAGS=-static-libstdc++, or a toolchain without the shared
        # library's dev link) carries its own locale facets, and then every error message that
        # formats a number loses the number or crashes the process (seen on a GPU image).
        link.append("-l:libstdc++.so.6")
    kw = dict(include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "kernels")], extra_link_args=link)
    if CUDA_HOME:
        sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))
        sources += _rel(glob.glob(os.path.join(ROOT, "kernels", "*.cu")))
        nvcc = ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo"]
        return [CUDAExtension("afd_ext._C", sources, extra_compile_args={"cxx": cxx + ["-DAFD_WITH_CUDA"],
                                                                         "nvcc": nvcc + ["-DAFD_WITH_CUDA"]}, **kw)]
    return [CppExtension("afd_ext._C", sources, extra_compile_args={"cxx": cxx}, **kw)]


def _record_build_torch():
    """afd_ext/_build_info.json: the torch _C is compiled against (named when _C fails to import)."""
    import json

    import torch
    with open(os.path.join(ROOT, "afd_ext", "_build_info.json"), "w") as fh:
        json.dump({"torch": torch.__version__, "cuda": torch.version.cuda}, fh)


class BuildPyWithSchemas(build_py):
    """Ship csrc/afd_schemas.h inside the package as afd_ext/afd_schemas.h: afd_ext.ops defines the
    op schemas from it when _C does not import (e.g. built for another torch), and an installed
    wheel has no csrc/."""

    def run(self):
        super().run()
        self.copy_file(os.path.join(ROOT, "csrc", "afd_schemas.h"),
                       os.path.join(self.build_lib, "afd_ext", "afd_schemas.h"))


_record_build_torch()
setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True), "build_py": BuildPyWithSchemas},
)
