"""The package-level import graph of `ser_cli` and the layering rules it must keep: `python -m tools.layers`.

Prints one line per package with the packages it imports (imports inside functions included, from
`tools.dvc_deps.imports_of`), then every broken rule; exits 1 when there is one (`tests/test_layers.py` asserts
none). The rules are those of the architecture: data flows files -> data -> (models, metrics) -> continual -> runs
-> stages -> cli, and

- the library (every package but the faces below) never imports the faces: `cli`, `stages`, `config`,
  `config_loader` (each package owns its `params.yaml` section; `config` assembles them);
- `data`, `models`, `metrics` and `runtime` know nothing of each other beyond `runtime` (data does not know models,
  models do not know data files);
- no two library packages import each other, directly or through others;
- `stages` (the top-level package of stage modules) never imports `cli`.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from tools.dvc_deps import ROOT, imports_of

PACKAGE = ROOT / "ser_cli"
FACES = {"cli", "stages", "config", "config_loader", "api", "__main__", "sweep", "sweep_exec", "sweep_grid",
         "sweep_pipeline"}
# package -> the only library packages it may import
FOUNDATIONS = {"runtime": set(), "data": {"runtime"}, "models": {"runtime"}, "metrics": {"runtime"}}


def package_of(path: Path) -> str:
    """ser_cli/data/store.py -> data; ser_cli/config.py -> config; stages/train.py -> stages (top level)."""
    if PACKAGE not in path.parents:
        return path.relative_to(ROOT).parts[0]
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def package_graph() -> dict[str, set[str]]:
    """Each package -> the other packages its modules import (the top-level `ser_cli/__init__.py` left out)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "stages").rglob("*.py")]):
        source = package_of(module)
        edges[source]  # noqa: B018 - a package that imports nothing still has a row
        for target in map(package_of, imports_of(module)):
            if target not in (source, "__init__"):
                edges[source].add(target)
    return dict(edges)


def broken_rules(graph: dict[str, set[str]]) -> list[str]:
    """One line per import that breaks a rule of the module docstring."""
    broken = []
    for source, targets in sorted(graph.items()):
        if source in FACES or source == "__init__":
            continue
        for target in sorted(targets & FACES):
            broken.append(f"{source} imports {target}: the library never imports a face (cli, stages, config, ...)")
        if source in FOUNDATIONS:
            for target in sorted(targets - FOUNDATIONS[source] - FACES):
                broken.append(f"{source} imports {target}: {source} may import only "
                              f"{', '.join(sorted(FOUNDATIONS[source])) or 'nothing of ser_cli'}")
    if "cli" in graph.get("stages", set()):
        broken.append("stages imports cli: a stage is called by the CLI, never the other way round")
    library = {p: t - FACES for p, t in graph.items() if p not in FACES and p != "__init__"}
    broken += [f"cycle: {' -> '.join(cycle)}" for cycle in _cycles(library)]
    return broken


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each package that reaches itself (depth-first, in name order)."""
    found = []
    for start in sorted(graph):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    found.append([*path, start])
                    stack = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def main() -> None:
    graph = package_graph()
    for source, targets in sorted(graph.items()):
        print(f"{source} -> {', '.join(sorted(targets)) or '-'}")
    broken = broken_rules(graph)
    print("\n".join(broken) if broken else "layers: every rule holds")
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
