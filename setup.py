"""Builds afd_ext._C: op schemas and C++ CPU kernels always, CUDA kernels when nvcc is found.

Environment:
  AFD_BUILD_CUDA=0|1   force the CUDA part off / on (default: on when nvcc is found
                       in CUDA_HOME or /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST  GPU architectures, e.g. "8.0;9.0+PTX", "9.0a", "10.0a+PTX", "Hopper" or
                       "native" (default: the visible GPUs' architectures; with none visible,
                       DEFAULT_CUDA_ARCHS). The kernels need compute capability 8.0 or newer
                       (mma.sync m16n8k16, cp.async, ldmatrix).
  MAX_JOBS              parallel compile jobs (ninja)
"""
import glob
import os
import re
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
#: torch.utils.cpp_extension's architecture names (combined names first: they are replaced in order)
NAMED_CUDA_ARCHS = {"Kepler+Tesla": "3.7", "Kepler": "3.5+PTX", "Maxwell+Tegra": "5.3", "Maxwell": "5.0;5.2+PTX",
                    "Pascal": "6.0;6.1+PTX", "Volta+Tegra": "7.2", "Volta": "7.0+PTX", "Turing": "7.5+PTX",
                    "Ampere+Tegra": "8.7", "Ampere": "8.0;8.6+PTX", "Ada": "8.9+PTX", "Hopper": "9.0+PTX",
                    "Blackwell+Tegra": "11.0", "Blackwell": "10.0;10.3;12.0;12.1+PTX", "Rubin": "10.7+PTX"}
#: "9.0", "9.0a" (sm_90a: the architecture-specific features), "10.0f" (family), each optionally "+PTX"
_ARCH_RE = re.compile(r"^(\d+)\.(\d+)([af]?)(\+PTX)?$")


def parse_arch_list(archs: str) -> list:
    """[(entry, (major, minor))] of a TORCH_CUDA_ARCH_LIST value (";" or " " separated, torch's names
    such as "Hopper" expanded); ValueError naming an entry that reads as none of "8.0", "9.0a",
    "10.0f", "9.0+PTX", "10.0a+PTX"."""
    for name, value in NAMED_CUDA_ARCHS.items():
        archs = archs.replace(name, value)
    out = []
    for arch in archs.replace(" ", ";").split(";"):
        if not arch:
            continue
        m = _ARCH_RE.match(arch)
        if m is None:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: cannot read architecture {arch!r} "
                             "(e.g. 8.0, 9.0a, 10.0a, 9.0+PTX)")
        out.append((arch, (int(m.group(1)), int(m.group(2)))))
    return out


def _visible_archs() -> str:
    try:
        import torch
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    except Exception:  # no driver, no GPU
        caps = []
    return ";".join(f"{major}.{minor}" for major, minor in caps)


def cuda_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST if set ("native": the visible GPUs'), else the visible GPUs'
    architectures, else DEFAULT_CUDA_ARCHS; ValueError for an entry that cannot be read or an
    architecture older than MIN_CUDA_ARCH (nvcc would fail deep in the build)."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if archs == "native":
        archs = _visible_archs()
        if not archs:
            raise ValueError("TORCH_CUDA_ARCH_LIST=native, but no GPU is visible: name the architectures "
                             f"(e.g. {DEFAULT_CUDA_ARCHS})")
    archs = archs or _visible_archs() or DEFAULT_CUDA_ARCHS
    for arch, cap in parse_arch_list(archs):
        if cap < MIN_CUDA_ARCH:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: {arch} is older than the kernels need "
                             f"({MIN_CUDA_ARCH[0]}.{MIN_CUDA_ARCH[1]}: mma.sync m16n8k16, cp.async); build without "
                             "CUDA (AFD_BUILD_CUDA=0: Triton kernels instead) or for 8.0+")
    return archs


#: what _C is compiled from: a build whose recorded digest differs is out of date
SOURCE_GLOBS = ("setup.py", "csrc/**/*.cpp", "csrc/**/*.h", "csrc/**/*.cu", "csrc/**/*.cuh", "kernels/*.cu",
                "kernels/*.cuh", "kernels/*.h")


def source_digest(root: str = ROOT) -> str:
    """sha256 over the names and bytes of the files _C is compiled from (SOURCE_GLOBS), recorded in
    _build_info.json: tools/gpu_session.sh skips the install when the build in place matches."""
    import hashlib
    h = hashlib.sha256()
    files = sorted({os.path.relpath(f, root) for g in SOURCE_GLOBS
                    for f in glob.glob(os.path.join(root, g), recursive=True) if os.path.isfile(f)})
    for rel in files:
        h.update(rel.replace(os.sep, "/").encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as fh:
            h.update(fh.read() + b"\0")
    return h.hexdigest()


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
                   "cuda_archs": os.environ.get("TORCH_CUDA_ARCH_LIST") if cuda_home else None,
                   "sources": source_digest()}, fh)


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
