"""The code each DVC stage runs, from the import graph: `python -m tools.dvc_deps [--write | --check]`.

A stage's command (`ser data synth`, `ser train`, ...) runs its CLI module and its `stages/` module;
everything they import, directly or not, inside `ser_cli/` (imports inside functions included) is code whose change
can change the stage's outputs, so `dvc.yaml` must list it (the file itself or a folder above it) under the stage's
`deps`. Without arguments, print each stage's import closure as the entries to list; with `--write`, put them into
`dvc.yaml` (replacing each stage's `ser_cli...` lines); with `--check`, exit 1 naming every imported file a stage's
`deps` miss (what `tests/test_dvc_deps.py` asserts). A subpackage is listed whole when the stage imports all of it,
module by module otherwise, so editing a module reruns exactly the stages that import it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ser_cli", "stages")  # the package and the top-level stage modules it runs
# `ser <command>` -> the modules the command itself runs
ENTRY = {
    "data synth": ["ser_cli/cli/data.py", "stages/synth.py"],
    "data spurious": ["ser_cli/cli/data.py", "stages/spurious.py"],
    "data import": ["ser_cli/cli/data.py", "stages/import_data.py"],
    "pretrain-saliency": ["ser_cli/cli/pretrain.py", "stages/pretrain_saliency.py"],
    "precompute": ["ser_cli/cli/precompute.py", "stages/precompute.py"],
    "train": ["ser_cli/cli/train.py", "stages/train.py"],
    "evaluate": ["ser_cli/cli/evaluate.py", "stages/evaluate.py"],
    "compare": ["ser_cli/cli/compare.py", "stages/compare.py"],
}


def module_file(name: str) -> Path | None:
    """`ser_cli.data.store` -> ser_cli/data/store.py (or the package's __init__.py); None outside our packages."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path) -> set[Path]:
    """Our modules that `path` imports (and the packages on the way, whose __init__ runs too)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                file = module_file(".".join(parts[:i]))
                if file is not None:
                    found.add(file)
    return found


def closure(entries: list[str]) -> set[Path]:
    """Every file of ours reachable from `entries` through imports."""
    todo, seen = [ROOT / e for e in entries], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imports_of(path) - seen)
    return seen


def stage_commands() -> dict[str, str]:
    """dvc.yaml stage name -> the `ser` command it runs."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        words = stage["cmd"].split()
        command = " ".join(words[1:3]) if words[1] == "data" else words[1]
        out[name] = command
    return out


def code_deps(command: str) -> list[str]:
    """The `deps` entries that cover a command's import closure: a subpackage whole when the command imports every
    module of it, its modules one by one otherwise (so editing a module reruns only the stages that import it)."""
    needed = closure(ENTRY[command])
    entries = set()
    for f in needed:
        rel = f.relative_to(ROOT)
        package = ROOT / Path(*rel.parts[:2])
        whole = len(rel.parts) > 2 and set(package.rglob("*.py")) <= needed
        entries.add(str(package.relative_to(ROOT)) if whole else str(rel))
    return sorted(entries)


def write_deps(path: Path) -> None:
    """Replace each stage's code entries (`ser_cli...`, `stages/...`) in `path` by `code_deps`, keeping every other
    line."""
    lines, out, stage = path.read_text().splitlines(), [], None
    commands = stage_commands()
    for line in lines:
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip()[:-1]
        if _is_code_entry(line) and stage in commands:
            indent = line[: line.index("-")]
            if not out or not _is_code_entry(out[-1]):
                out.extend(f"{indent}- {d}" for d in code_deps(commands[stage]))
            continue
        out.append(line)
    path.write_text("\n".join(out) + "\n")


def _is_code_entry(line: str) -> bool:
    return line.strip().startswith(tuple(f"- {package}" for package in PACKAGES))


def missing_deps() -> dict[str, list[str]]:
    """Per stage, the imported files that none of its `deps` covers."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, command in stage_commands().items():
        deps = [ROOT / d for d in stages[name].get("deps", [])]
        needed = closure(ENTRY[command])
        uncovered = sorted(str(f.relative_to(ROOT)) for f in needed
                           if not any(f == d or d in f.parents for d in deps))
        if uncovered:
            missing[name] = uncovered
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml misses an imported file")
    parser.add_argument("--write", action="store_true", help="rewrite the code deps of every stage in dvc.yaml")
    args = parser.parse_args(argv)
    if args.write:
        write_deps(ROOT / "dvc.yaml")
    if args.check:
        missing = missing_deps()
        for stage, files in missing.items():
            print(f"{stage}: deps miss {', '.join(files)}")
        return 1 if missing else 0
    for name, command in stage_commands().items():
        print(f"{name} (ser {command}):")
        print("\n".join(f"  - {d}" for d in code_deps(command)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
