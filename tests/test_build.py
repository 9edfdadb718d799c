"""The compiled extension links the shared libstdc++ (the one torch uses).

A static copy inside _C.so (e.g. LDFLAGS=-static-libstdc++) has its own locale facets: error
messages then lose their numbers ("got " instead of "got 12x16") or the process crashes while
formatting them (seen on a GPU image: SIGSEGV in std::ostream::_M_insert<long> inside _C.so).
"""
import shutil
import subprocess
import sys

import pytest

import afd_ext

_C = afd_ext.ops._C
needs_extension = pytest.mark.skipif(_C is None, reason=f"extension not built: {afd_ext.ops.extension_error()}")


@needs_extension
@pytest.mark.skipif(shutil.which("nm") is None or not sys.platform.startswith("linux"), reason="needs nm (Linux)")
def test_extension_does_not_carry_its_own_libstdcxx():
    symbols = subprocess.run(["nm", "-C", "--defined-only", _C.__file__], capture_output=True, text=True,
                             check=True).stdout
    bundled = [line for line in symbols.splitlines()
               if "std::ostream::_M_insert<" in line or "std::locale::classic" in line]
    assert not bundled, f"{_C.__file__} defines libstdc++ internals: {bundled[:3]}"


@needs_extension
def test_compiled_error_message_keeps_its_numbers_in_a_child_process():
    code = ("import torch, afd_ext\nwith afd_ext.use_backend('cpp'):\n    try:\n"
            "        torch.ops.afd.block_dct(torch.rand(1, 3, 12, 16))\n"
            "    except ValueError as e:\n        print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-500:]}"
    assert "multiples of 8, got 12x16" in r.stdout, r.stdout


def test_a_missing_extension_warns_with_both_torch_versions(tmp_path):
    """When afd_ext._C cannot import, afd_ext warns once, naming the torch it was built for, the
    running one and the error, and the ops still work through another backend."""
    import subprocess
    import sys
    code = ("import sys, warnings\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'afd_ext._C': raise ImportError('blocked for the test')\n"
            "sys.meta_path.insert(0, Block())\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import torch, afd_ext\n"
            "msgs = [str(x.message) for x in w if 'afd_ext._C did not import' in str(x.message)]\n"
            "assert len(msgs) == 1, msgs\n"
            "assert 'blocked for the test' in msgs[0] and torch.__version__ in msgs[0]\n"
            "assert 'built for torch' in msgs[0]\n"
            "assert 'cpp' not in afd_ext.available_backends()\n"
            "print(torch.ops.afd.block_dct(torch.rand(1, 3, 8, 8)).shape)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch.Size([1, 192, 1, 1])" in r.stdout


def test_the_built_package_carries_the_schema_header(tmp_path):
    """An installed wheel has no csrc/: build_py ships the header inside afd_ext/, where afd_ext.ops
    looks first, so a _C that does not import (built for another torch) still has its schemas."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)], cwd=root,
                       capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                          "AFD_BUILD_CUDA": "0"})
    assert r.returncode == 0, r.stderr[-2000:]
    shipped = tmp_path / "afd_ext" / "afd_schemas.h"
    assert shipped.read_bytes() == (root / "csrc" / "afd_schemas.h").read_bytes()
    assert afd_ext.ops.SCHEMA_HEADERS[0].name == shipped.name
    assert afd_ext.ops.schemas_from_header(shipped) == afd_ext.ops.compiled_schemas()


def _setup_module():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("afd_setup", Path(__file__).resolve().parents[1] / "setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # defines; setup() runs only as __main__
    return mod


def test_cuda_arch_list_default_and_floor(monkeypatch):
    """TORCH_CUDA_ARCH_LIST wins; unset: the visible GPUs' architectures, else the documented
    default with PTX; an architecture the kernels cannot run on is refused before nvcc starts."""
    import torch
    setup = _setup_module()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6;9.0+PTX")
    assert setup.cuda_arch_list() == "8.6;9.0+PTX"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert setup.cuda_arch_list() == setup.DEFAULT_CUDA_ARCHS and "+PTX" in setup.DEFAULT_CUDA_ARCHS
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: [(9, 0), (8, 0)][i])
    assert setup.cuda_arch_list() == "8.0;9.0"
    for bad, needle in (("7.5", "older than the kernels need"), ("sm_90", "cannot read architecture")):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", bad)
        with pytest.raises(ValueError, match=needle):
            setup.cuda_arch_list()


def test_cuda_arch_list_reads_arch_suffixes_names_and_native(monkeypatch):
    """Entries as torch.utils.cpp_extension reads them: "9.0a" / "10.0a" (architecture-specific
    features, sm_90a), "+PTX", "12.0f" (family), torch's names, " " or ";" between; "native" is the
    visible GPUs'. The floor still refuses anything older than 8.0, in any of those spellings."""
    import torch
    setup = _setup_module()
    for ok in ("9.0a", "10.0a", "8.0+PTX", "9.0a+PTX", "10.0a+PTX", "12.0f", "8.0;9.0a", "8.0 9.0a+PTX", "Hopper",
               "Ampere;Hopper"):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", ok)
        assert setup.cuda_arch_list() == ok
    assert [cap for _, cap in setup.parse_arch_list("8.0;9.0a 10.0a+PTX;Hopper")] == [(8, 0), (9, 0), (10, 0), (9, 0)]
    for bad, needle in (("7.5", "7.5 is older"), ("7.5+PTX", "7.5\\+PTX is older"), ("Turing", "older than"),
                        ("8.0;7.0a", "7.0a is older"), ("9.0b", "cannot read"), ("sm_90a", "cannot read"),
                        ("9", "cannot read"), ("9.0+ptx", "cannot read")):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", bad)
        with pytest.raises(ValueError, match=needle):
            setup.cuda_arch_list()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "native")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="no GPU is visible"):
        setup.cuda_arch_list()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    assert setup.cuda_arch_list() == "9.0"


def test_source_digest_follows_what_c_is_compiled_from(tmp_path):
    """The digest recorded in _build_info.json (tools/gpu_session.sh skips the install when the
    build in place has the sources' digest): a change to a compiled source or setup.py changes it,
    a change elsewhere (Python, docs) does not; it is written beside _C."""
    import json
    setup = _setup_module()
    for rel, text in (("setup.py", "x"), ("csrc/ops.cpp", "a"), ("csrc/cuda/k.cpp", "b"), ("kernels/k.cu", "c"),
                      ("kernels/k.cuh", "d"), ("afd_ext/m.py", "e"), ("README.md", "f")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    base = setup.source_digest(str(tmp_path))
    for rel in ("afd_ext/m.py", "README.md"):
        (tmp_path / rel).write_text("changed")
        assert setup.source_digest(str(tmp_path)) == base, rel
    for rel in ("setup.py", "csrc/ops.cpp", "csrc/cuda/k.cpp", "kernels/k.cu", "kernels/k.cuh"):
        before = setup.source_digest(str(tmp_path))
        (tmp_path / rel).write_text("changed " + rel)
        assert setup.source_digest(str(tmp_path)) != before, rel
    (tmp_path / "kernels" / "new.cu").write_text("")
    assert setup.source_digest(str(tmp_path)) != before  # a new file counts
    setup._record_build_torch(str(tmp_path / "out"), None)
    info = json.loads((tmp_path / "out" / "_build_info.json").read_text())
    assert info["sources"] == setup.source_digest() and info["cuda_archs"] is None


# -- the CTest test of the plain C++ library (README "Layout", the CMake line) ------------------------

@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None,
                    reason="the CTest build needs cmake and ninja on PATH (pip install cmake ninja)")
def test_cmake_build_and_ctest_pass(tmp_path):
    """The README's CMake line, in a build folder of its own: configure (CPU only), build the library
    and tests/cpp/test_block_dct.cpp, and run ctest, which must run that test and pass it."""
    import os
    from pathlib import Path

    import torch
    root = Path(__file__).resolve().parents[1]
    build = tmp_path / "build"
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}

    def step(*cmd, timeout):
        r = subprocess.run(list(cmd), cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
        assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{(r.stdout + r.stderr)[-4000:]}"
        return r.stdout
    step("cmake", "-S", str(root), "-B", str(build), "-G", "Ninja", "-DAFD_WITH_CUDA=OFF",
         f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", timeout=300)
    step("cmake", "--build", str(build), timeout=1200)
    out = step("ctest", "--test-dir", str(build), "--output-on-failure", timeout=300)
    assert "test_block_dct" in out and "100% tests passed" in out and "0 tests failed out of 1" in out, out
