"""The package's layers: a module imports only its own layer or lower ones, and no two modules import
each other (imports inside functions count). The package's __init__ is the facade above them all."""
import ast
import itertools
from pathlib import Path

import afd_ext

PACKAGE = Path(afd_ext.__file__).parent
# Lowest first. The reference (python/, installed as afd_ext.reference) is the definition of every op.
LAYERS = [
    ("foundations", {"afd_ext._version", "afd_ext.reference", "afd_ext.utils", "afd_ext.data", "afd_ext.weights",
                     "afd_ext.backbones", "afd_ext.backbones.efficientnet_lite", "afd_ext._C",
                     "afd_ext.benchmark", "afd_ext.benchmark.timing", "afd_ext.benchmark.flops",
                     "afd_ext.benchmark.results"}),
    ("ops", {"afd_ext.ops"}),
    ("nn modules", {"afd_ext.modules"}),
    ("checkpoints and attach", {"afd_ext.checkpoint", "afd_ext.classifier"}),
    ("models", {"afd_ext.models", "afd_ext.timm_models"}),
    ("jobs", {"afd_ext.evaluation", "afd_ext.train", "afd_ext.pipeline", "afd_ext.export", "afd_ext.ray_data",
              "afd_ext.demo", "afd_ext.benchmark.e2e"}),
    ("command line", {"afd_ext.cli", "afd_ext.__main__"}),
]
LAYER_OF = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def _modules():
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if f.parent.name == "kernels" or "reference" in f.parts:  # installed from kernels/ and python/
            continue
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path) -> set:
    """afd_ext modules imported anywhere in ``path`` (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            mod = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            if t in LAYER_OF or t == "afd_ext":
                found.add(t)
                if t != "afd_ext":
                    break  # `from .x import y`: the module x, not the package
    found.discard(name)
    return found


def test_every_module_has_a_layer():
    assert sorted(set(_modules()) - set(LAYER_OF) - {"afd_ext"}) == []


def test_no_module_imports_a_higher_layer_or_the_package_facade():
    problems = []
    for name, path in _modules().items():
        if name == "afd_ext":
            continue
        for target in _imports(name, path):
            if target == "afd_ext":
                problems.append(f"{name} imports the package facade (import the module itself)")
            elif LAYER_OF[target] > LAYER_OF[name]:
                problems.append(f"{name} ({LAYERS[LAYER_OF[name]][0]}) imports {target} "
                                f"({LAYERS[LAYER_OF[target]][0]})")
    assert problems == []


def test_no_two_modules_import_each_other():
    mods = _modules()
    graph = {n: _imports(n, p) for n, p in mods.items()}
    mutual = [(a, b) for a, b in itertools.combinations(sorted(mods), 2) if b in graph[a] and a in graph[b]]
    assert mutual == []
