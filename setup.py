"""Builds afd_ext._C: op schemas and C++ CPU kernels always, CUDA kernels when nvcc is found.

Environment:
  AFD_BUILD_CUDA=0|1   force the CUDA part off / on (default: on when nvcc is found
                       in CUDA_HOME or /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST  GPU architectures, e.g. "8.0;9.0+PTX" (default: the visible GPUs'
                       architectures; with none visible, DEFAULT_CUDA_ARCHS). The kernels need
                       compute capability 8.0 or newer (mma.sync m16n8k16, cp.async, ldmatrix).
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


#: With no GPU visible at build time: native code for A100-class (8.0) and H100-class (9.0) GPUs
#: (8.0 code also runs on 8.6/8.9), and 9.0 PTX that newer GPUs (Blackwell) compile when loading it.
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"
MIN_CUDA_ARCH = (8, 0)


def cuda_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST if set, else the visible GPUs' architectures, else DEFAULT_CUDA_ARCHS;
    ValueError for an architecture older than MIN_CUDA_ARCH (nvcc would fail deep in the build)."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if not archs:
        try:
            import torch
            caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        except Exception:  # no driver, no GPU: the documented default
            caps = []
        archs = ";".join(f"{major}.{minor}" for major, minor in caps) or DEFAULT_CUDA_ARCHS
    for arch in archs.replace(" ", ";").split(";"):
        if not arch:
            continue
        try:
            major, minor = (int(v) for v in arch.split("+")[0].split("."))
        except ValueError:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: cannot read architecture {arch!r} (e.g. 8.0, 9.0+PTX)") from None
        if (major, minor) < MIN_CUDA_ARCH:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: {arch} is older than the kernels need "
                             f"({MIN_CUDA_ARCH[0]}.{MIN_CUDA_ARCH[1]}: mma.sync m16n8k16, cp.async); build without "
                             "CUDA (AFD_BUILD_CUDA=0: Triton kernels instead) or for 8.0+")
    return archs




def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def extensions(cuda_home):
    from torch.utils.cpp_extension import CppExtension, CUDAExtension
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
    if cuda_home:
        sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))
        sources += _rel(glob.glob(os.path.join(ROOT, "kernels", "*.cu")))
        nvcc = ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo"]
        return [CUDAExtension("afd_ext._C", sources, extra_compile_args={"cxx": cxx + ["-DAFD_WITH_CUDA"],
                                                                         "nvcc": nvcc + ["-DAFD_WITH_CUDA"]}, **kw)]
    return [CppExtension("afd_ext._C", sources, extra_compile_args={"cxx": cxx}, **kw)]


def _record_build_torch(folder: str, cuda_home) -> None:
    """``folder``/_build_info.json, beside the _C it describes: the torch it is compiled against
    (named when _C fails to import) and the CUDA architectures."""
    import json

    import torch
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "_build_info.json"), "w") as fh:
        json.dump({"torch": torch.__version__, "cuda": torch.version.cuda,
                   "cuda_archs": os.environ.get("TORCH_CUDA_ARCH_LIST") if cuda_home else None}, fh)


class BuildPyWithSchemas(build_py):
    """Ship csrc/afd_schemas.h inside the package as afd_ext/afd_schemas.h: afd_ext.ops defines the
    op schemas from it when _C does not import (e.g. built for another torch), and an installed
    wheel has no csrc/."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs from the source tree, where afd_ext.ops finds csrc/
        target = os.path.join(self.build_lib, "afd_ext", "afd_schemas.h")
        self.mkpath(os.path.dirname(target))
        self.copy_file(os.path.join(ROOT, "csrc", "afd_schemas.h"), target)


def main():
    cuda_home = _want_cuda()
    if cuda_home:
        # torch.utils.cpp_extension reads both when imported.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list()
    from torch.utils.cpp_extension import BuildExtension

    class BuildExtRecordingTorch(BuildExtension.with_options(use_ninja=True)):
        """Compile _C and write _build_info.json next to it (in place or into the build tree)."""

        def run(self):
            super().run()
            _record_build_torch(os.path.dirname(self.get_ext_fullpath("afd_ext._C")), cuda_home)

    setup(
        ext_modules=extensions(cuda_home),
        cmdclass={"build_ext": BuildExtRecordingTorch, "build_py": BuildPyWithSchemas},
    )


if __name__ == "__main__":  # setuptools runs setup.py as __main__; tests import it for cuda_arch_list
    main()
