"""DVC dependencies that cannot go stale: every stage lists every module it imports (from the import graph), and
editing a shared module marks exactly the stages that import it as changed in `dvc status`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.dvc_deps import ENTRY, ROOT, closure, missing_deps, stage_commands

DVC = Path(sys.executable).parent / "dvc"


def test_every_imported_module_is_a_dependency_of_its_stage() -> None:
    assert missing_deps() == {}


def test_the_closure_follows_imports_inside_functions() -> None:
    files = {str(f.relative_to(ROOT)) for f in closure(ENTRY["train"])}
    # stages/train.py imports these inside the module; cli/train.py imports the stage inside its function
    assert {"stages/train.py", "ser_cli/continual/loop.py", "ser_cli/models/normalize.py",
            "ser_cli/saliency/encoder_init.py"} <= files
    assert "stages/compare.py" not in files


@pytest.mark.slow
def test_editing_a_shared_module_marks_every_stage_that_imports_it(tmp_path: Path) -> None:
    for name in ("ser_cli", "stages", "dvc.yaml", "params.yaml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run(str(DVC), "init", "-q")
    _placeholder_outputs(tmp_path)
    run(str(DVC), "commit", "-f", "-q")
    assert json.loads(run(str(DVC), "status", "--json").stdout) == {}
    shared = tmp_path / "ser_cli" / "models" / "normalize.py"
    shared.write_text(shared.read_text() + "\n# edited\n")
    changed = {name.split("@")[0] for name in json.loads(run(str(DVC), "status", "--json").stdout)}
    importers = {stage for stage, command in stage_commands().items()
                 if ROOT / "ser_cli" / "models" / "normalize.py" in closure(ENTRY[command])}
    assert changed == importers and {"pretrain_saliency", "precompute", "train"} <= changed


def _placeholder_outputs(root: Path) -> None:
    """An empty file for every output and metric of the pipeline, so `dvc commit` can record the stages."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        items = [{"method": m, "variant": v} for m in stage["matrix"]["method"] for v in stage["matrix"]["variant"]] \
            if "matrix" in stage else [{}]
        for item in items:
            for key in ("outs", "metrics", "plots"):
                for entry in stage.get(key, []):
                    path = entry if isinstance(entry, str) else next(iter(entry))
                    paths.append(path.replace("${item.method}", item.get("method", ""))
                                 .replace("${item.variant}", item.get("variant", "")))
    for path in paths:
        target = root / path
        if path == "report":
            target.mkdir(parents=True, exist_ok=True)
            (target / "table.txt").write_text("x")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("{}" if path.endswith(".json") else "x")
