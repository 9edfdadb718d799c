"""The op schemas are written once (csrc/afd_schemas.h): registered by csrc/ops.cpp and the CUDA
emulator from the header, read by afd_ext.ops from the same header when the extension is missing."""
import subprocess
import sys
from pathlib import Path

from afd_ext import ops

ROOT = Path(__file__).resolve().parents[1]


def test_schemas_are_written_once():
    header = ops.schemas_from_header()
    assert sorted(header) == sorted(ops.OP_NAMES)
    assert ops.compiled_schemas() == header
    for src in (ROOT / "csrc" / "ops.cpp", ROOT / "kernels" / "emu" / "emu_launchers.cpp"):
        text = src.read_text()
        assert "afd_schemas.h" in text and "(Tensor" not in text, f"{src} spells out a schema"
        for op in ops.OP_NAMES:
            assert f"m.def(AFD_SCHEMA_{op.upper()});" in text, (src, op)
    assert "(Tensor" not in (ROOT / "afd_ext" / "ops.py").read_text()


def test_without_the_extension_the_schemas_come_from_the_header():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'afd_ext._C':\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch, afd_ext\n"
        "from afd_ext import ops\n"
        "assert ops._C is None and afd_ext.current_backend('cpu') == 'reference'\n"
        "assert ops.compiled_schemas() == ops.schemas_from_header()\n"
        "print(tuple(torch.ops.afd.block_dct(torch.rand(1, 3, 8, 16) * 255).shape))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("(1, 192, 1, 2)")
