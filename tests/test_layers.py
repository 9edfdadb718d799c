"""The package's layers: a module imports only its own layer or lower ones, and no two modules import
each other (imports inside functions count). The package's __init__ is the facade above them all."""
import ast
import importlib
import itertools
from pathlib import Path

import pytest

import afd_ext

PACKAGE = Path(afd_ext.__file__).parent
# Lowest first, one folder a layer where the package has one (docs/design.md §4). The reference
# (python/, installed as afd_ext.reference) is the definition of every op.
LAYERS = [
    ("foundations", {"afd_ext._version", "afd_ext._C", "afd_ext.reference", "afd_ext.utils",
                     "afd_ext.data", "afd_ext.data.errors", "afd_ext.data.files", "afd_ext.data.jpeg",
                     "afd_ext.data.transforms", "afd_ext.data.images", "afd_ext.data.degradations",
                     "afd_ext.data.labels",
                     "afd_ext.benchmark", "afd_ext.benchmark.timing", "afd_ext.benchmark.flops",
                     "afd_ext.benchmark.results"}),
    ("ops", {"afd_ext.ops"}),
    ("nn modules", {"afd_ext.modules", "afd_ext.block_grid"}),
    ("classifiers, checkpoints and attach", {"afd_ext.models.backbones", "afd_ext.models.backbones.efficientnet_lite",
                                             "afd_ext.models.weights", "afd_ext.models.checkpoint",
                                             "afd_ext.models.adapters", "afd_ext.models.classifier",
                                             "afd_ext.checkpoint", "afd_ext.weights"}),
    ("models", {"afd_ext.models", "afd_ext.models.registry", "afd_ext.models.factory", "afd_ext.models.timm_registry",
                "afd_ext.timm_models"}),
    ("jobs", {"afd_ext.evaluation", "afd_ext.demo", "afd_ext.benchmark.e2e",
              "afd_ext.train", "afd_ext.train.config", "afd_ext.train.dataset", "afd_ext.train.losses",
              "afd_ext.train.run_folder", "afd_ext.train.phases", "afd_ext.train.loop", "afd_ext.train.lineage",
              "afd_ext.train.gate_fit", "afd_ext.train.average", "afd_ext.train.widen",
              "afd_ext.inference", "afd_ext.inference.decode", "afd_ext.inference.pipeline",
              "afd_ext.inference.ray_data", "afd_ext.inference.export", "afd_ext.pipeline", "afd_ext.ray_data"}),
    ("command line", {"afd_ext.cli", "afd_ext.__main__"}),
]
LAYER_OF = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
#: Documented import paths (README, docs/) of modules that moved into a subpackage: each re-exports
#: the public names of its home (the package itself imports the homes, never these).
REEXPORTS = {"afd_ext.checkpoint": {"afd_ext.models.checkpoint"}, "afd_ext.weights": {"afd_ext.models.weights"},
             "afd_ext.timm_models": {"afd_ext.models.timm_registry"},
             "afd_ext.pipeline": {"afd_ext.inference.pipeline", "afd_ext.inference.decode"},
             "afd_ext.ray_data": {"afd_ext.inference.ray_data"}}
#: Every name README.md and docs/ document by its dotted path (the package facade's included).
DOCUMENTED = ["afd_ext.create_model", "afd_ext.list_models", "afd_ext.attach", "afd_ext.load_classifier",
              "afd_ext.load_checkpoint", "afd_ext.save_checkpoint", "afd_ext.shipped_checkpoint",
              "afd_ext.CheckpointError", "afd_ext.AFDModule", "afd_ext.RepConv", "afd_ext.evaluate",
              "afd_ext.TrainConfig", "afd_ext.use_backend", "afd_ext.current_backend", "afd_ext.available_backends",
              "afd_ext.ops.block_dct", "afd_ext.reference.block_dct", "afd_ext.reference.repconv_reparam",
              "afd_ext.checkpoint.MAX_AFD_PARAMS", "afd_ext.weights.RELEASES", "afd_ext.weights.list_releases",
              "afd_ext.timm_models.register", "afd_ext.pipeline.Pipeline", "afd_ext.ray_data.Predictor",
              "afd_ext.data.load_image", "afd_ext.data.ImageError", "afd_ext.data.image_errors",
              "afd_ext.data.list_images", "afd_ext.data.IMAGE_EXTENSIONS", "afd_ext.data.MAX_FILE_BYTES",
              "afd_ext.data.MAX_IMAGE_PIXELS", "afd_ext.data.MAX_ASPECT_RATIO", "afd_ext.data.in_decision_set",
              "afd_ext.data.PROTOCOLS", "afd_ext.data.CODECS", "afd_ext.evaluation.evaluate",
              "afd_ext.train.CSV_COLUMNS", "afd_ext.train.INT_RANGES", "afd_ext.train.GATE_CLOSED_FROM",
              "afd_ext.utils.atomic_path", "afd_ext.block_grid.detect_block_grid"]


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


def test_documented_paths_re_export_their_home_and_nothing_imports_them():
    mods = _modules()
    for path, homes in REEXPORTS.items():
        assert _imports(path, mods[path]) == homes, path
    importers = {n: sorted(_imports(n, p) & set(REEXPORTS)) for n, p in mods.items() if n not in REEXPORTS}
    assert {n: i for n, i in importers.items() if i and n != "afd_ext"} == {}


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_documented_name_imports_from_where_the_docs_say(name):
    module, attr = name.rsplit(".", 1)
    assert hasattr(importlib.import_module(module), attr), name


def test_every_subpackage_is_in_the_install():
    """pyproject.toml's packages list names every package under afd_ext/: a fresh, non-editable
    install ships the subpackages, not only the top-level modules."""
    import tomllib
    pyproject = PACKAGE.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("an installed package: no pyproject.toml beside it")
    listed = set(tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(f.parent.relative_to(PACKAGE.parent).parts) for f in PACKAGE.rglob("__init__.py")}
    assert sorted(found - listed) == []
