"""The rooms of ARCHITECTURE.md and which may import which, checked on the source (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "evalharness"

# room -> (its modules, as prefixes of dotted names under evalharness), and the rooms it may import besides itself
ROOMS = {
    "foundation": ({"version", "errors", "checksum", "environment", "progress", "locking", "distributed", "untrusted"},
                   set()),
    "card model": ({"protocol"}, {"foundation"}),
    "pixels": ({"sampling", "video"}, {"card model", "foundation"}),
    "measures": ({"metrics", "masks", "localization_metrics", "segmentation_metrics"}, {"foundation"}),
    "datasets": ({"datasets"}, {"measures", "card model", "foundation"}),  # measures: annotation files' readers
    "backbones": ({"backbones"}, {"foundation"}),
    "store": ({"store"}, {"card model", "foundation"}),
    "probes": ({"probes"}, {"store", "datasets", "measures", "card model", "foundation"}),
    "cards": ({"cards"}, {"probes", "datasets", "card model", "foundation"}),
    "extract": ({"extract"}, {"pixels", "datasets", "backbones", "store", "card model", "foundation"}),
    "results": ({"results"}, {"cards", "probes", "measures", "card model", "foundation"}),
    "scoring": ({"scoring"}, {"results", "cards", "probes", "store", "datasets", "card model", "foundation"}),
    "report": ({"report"}, {"measures", "foundation"}),
    "submit": ({"submit"}, {"scoring", "report", "results", "store", "cards", "datasets", "card model", "foundation"}),
    "runs": ({"runs"}, {"extract", "scoring", "report", "results", "cards", "datasets", "card model", "foundation"}),
    "demo": ({"demo"}, {"runs", "datasets", "foundation"}),
    "api": ({"", "api"}, None),  # the package's lazy exports and the Python API, like the command, may import anything
    "cli": ({"cli", "__main__"}, None),  # the command may import anything
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def room_of(module: str) -> str:
    top = module.split(".")[0]
    found = [room for room, (modules, _) in ROOMS.items() if top in modules]
    assert len(found) == 1, f"module evalharness.{module} belongs to {found or 'no room'}: add it to ROOMS"
    return found[0]


def imports(path: Path) -> set[str]:
    """Modules of evalharness that a file imports, anywhere in it, as names under evalharness."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("evalharness").lstrip(".") for a in node.names if a.name.split(".")[0] == "evalharness"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "evalharness":
                target = node.module.removeprefix("evalharness").lstrip(".")
            else:
                continue
            found.add(target)
            found |= {f"{target}.{a.name}".lstrip(".") for a in node.names
                      if (PACKAGE / Path(*f"{target}.{a.name}".lstrip(".").split("."))).with_suffix(".py").exists()}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_goes_to_the_same_room_or_one_it_may_use():
    wrong = []
    for module, targets in graph().items():
        room = room_of(module)
        allowed = ROOMS[room][1]
        for target in targets:
            other = room_of(target)
            if allowed is not None and other != room and other not in allowed:
                wrong.append(f"evalharness.{module} ({room}) imports evalharness.{target} ({other})")
    assert wrong == []


def test_the_library_never_imports_the_command():
    assert [m for m, targets in graph().items() if room_of(m) != "cli" and any(room_of(t) == "cli" for t in targets)] == []


def test_no_import_cycles():
    edges = graph()
    names = set(edges)

    def resolve(target: str) -> str | None:
        while target and target not in names:
            target = target.rpartition(".")[0]
        return target if target in names else None

    adjacency = {m: {t for t in map(resolve, targets) if t is not None and t != m} for m, targets in edges.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(adjacency[node]):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, path + [nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(adjacency):
        if state.get(start) is None and visit(start, [start]):
            break
    assert cycle == []


def test_every_package_is_listed_for_the_wheel():
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    found = {"evalharness" + ("." + ".".join(p.parent.relative_to(PACKAGE).parts) if p.parent != PACKAGE else "")
             for p in PACKAGE.rglob("__init__.py")}
    assert set(config["packages"]) == found | {"evalharness.protocols"}
    assert config["package-dir"] == {"evalharness.protocols": "protocols"}
