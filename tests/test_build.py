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
