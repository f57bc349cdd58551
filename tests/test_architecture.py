"""The component architecture's rules: names map to classes only in the registries, every key is
declared by a component (with one meaning), and the package's import graph has no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

from impactreg.components import REGISTRIES, component_classes
from impactreg.parameters import ParameterMap, all_keys

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "impactreg"


def test_registered_names_are_the_components_own():
    for selector, (registry, default, _) in REGISTRIES.items():
        assert default is None or default in registry, selector
        for name, cls in registry.items():
            if selector in ("FixedImagePyramid", "MovingImagePyramid"):
                continue  # one class per pyramid kind, installed for both roles
            assert name == cls.elastix_name or name.endswith("Float") or name.startswith("Recursive"), (name, cls)


def test_keys_have_one_meaning():
    seen = {}
    for cls in component_classes():
        for key in cls.keys:
            if key.name in seen:
                other = seen[key.name]
                assert (key.kind, key.default, key.per_level, key.multi) == \
                       (other.kind, other.default, other.per_level, other.multi), key.name
            seen[key.name] = key


def test_impact_keys_are_typed_with_defaults_in_the_schema():
    keys = {k.name: k for k in all_keys()}
    assert keys["Mode"].allowed == ("Jacobian", "Static") and keys["Mode"].default == "Jacobian"
    assert keys["ImpactGPU"].kind == "int" and keys["ImpactGPU"].default == -1
    assert keys["PatchSize"].default == "5" and keys["Distance"].default == "L2"
    assert ParameterMap({"ImpactFeaturesMapUpdateInterval": 10}).get("ImpactFeaturesMapUpdateInterval") == 10


def _module_name(path: Path) -> str:
    parts = ["impactreg", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every module this file imports, at module level or inside functions."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_package else name.split(".")[:-1]
            module = ".".join(base[:len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_package_import_graph_has_no_cycle():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for module in _imports(path, name):
            parts = module.split(".")
            for i in range(len(parts), 1, -1):  # a module and the packages above it (their __init__ runs first)
                candidate = ".".join(parts[:i])
                if candidate in files and candidate != name and not name.startswith(candidate + "."):
                    targets.add(candidate)
        graph[name] = targets
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
