"""The package layering of `ser_cli` (`tools/layers.py`): the library never imports the faces, data / models /
metrics sit on runtime alone, and no library packages import each other in a circle."""

from __future__ import annotations

from tools.layers import broken_rules, package_graph


def test_the_package_graph_keeps_every_rule() -> None:
    graph = package_graph()
    assert broken_rules(graph) == []
    assert graph["data"] == {"runtime"}  # the old back-edge data -> config (through config_loader) is gone
    assert "config" not in graph["saliency"] and "runs" in graph["saliency"]


def test_the_checker_names_each_kind_of_broken_rule() -> None:
    graph = {"data": {"runtime", "config", "models"}, "models": {"runtime"}, "runtime": set(), "config": {"data"},
             "runs": {"saliency"}, "saliency": {"runs"}}
    broken = broken_rules(graph)
    assert "data imports config: the library never imports a face (cli, stages, config, ...)" in broken
    assert "data imports models: data may import only runtime" in broken
    assert "cycle: runs -> saliency -> runs" in broken and "cycle: saliency -> runs -> saliency" in broken
    assert len(broken) == 4
