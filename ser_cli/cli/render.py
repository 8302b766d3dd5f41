"""Human-readable renderings of results on stdout (Rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

stdout_console = Console()


def print_data_info(d: dict[str, Any]) -> None:
    """The `ser data info` view of a data file."""
    h, w, c = d["image_shape"]
    stdout_console.print(f"[bold]{d['path']}[/]  schema v{d['schema_version']}  images {h}x{w}x{c} "
                         f"({d['storage']})  {d['n_classes']} classes")
    table = Table("split", "images", "maps", "fixations", "masks", "images per class (min-max)")
    for split, s in d["splits"].items():
        per = s["per_class"]
        table.add_row(split, str(s["images"]), "yes" if s["has_maps"] else "no", str(s["fixations"]),
                      "yes" if s.get("has_masks") else "no", f"{min(per)}-{max(per)}" if per else "-")
    stdout_console.print(table)
    names = d["class_names"]
    shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
    stdout_console.print(f"classes: {shown}")
    stdout_console.print(f"fingerprint: {d['fingerprint']}")
    prov = d["provenance"]
    stdout_console.print("provenance: " + ", ".join(f"{k}={v}" for k, v in prov.items() if k != "params"))
    if "params" in prov:
        stdout_console.print("generator params: " + ", ".join(f"{k}={v}" for k, v in prov["params"].items()))


def print_maps_info(d: dict[str, Any]) -> None:
    """The `ser data info` view of a maps file (`ser precompute`)."""
    h, w = d["map_shape"]
    sizes = ", ".join(f"{n} {split}" for split, n in d["sizes"].items())
    lines = [f"[bold]{d['path']}[/]  maps file, schema v{d['schema_version']}  maps {h}x{w} uint8 ({sizes}), "
             f"{d['compression']}"]
    settings = ", ".join(f"{k}={v}" for k, v in d["method_settings"].items())
    lines.append(f"method: {d['method']}" + (f" ({settings})" if settings else ""))
    if d["model_sha256"] and d["method"] == "model":
        lines.append(f"model sha256: {d['model_sha256']}")
    lines.append(f"made for data fingerprint: {d['data_fingerprint']}")
    for line in lines:
        stdout_console.print(line, soft_wrap=True)  # hashes stay on one line, whatever the terminal's width
