"""Reading YAML a user wrote (params, sweep and class-order files) within bounds: one-line errors, no bombs.

A file is refused, with one line naming it, when it is missing, unreadable, not UTF-8, larger than
`MAX_YAML_BYTES`, malformed, has a key twice in one mapping, refers to itself, or expands through aliases to more
than `MAX_YAML_NODES` values (checked on the node graph before any Python object is built).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ser_cli.runtime.errors import UserError


def load_yaml_file(path: Path, what: str = "params file") -> Any:
    """The YAML document in `path`; a missing, unreadable, non-UTF-8, oversized or malformed file is one UserError
    line (see `safe_yaml` for the bounds)."""
    if not Path(path).is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        if Path(path).stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{path}: larger than {MAX_YAML_BYTES >> 10} KiB; not a {what}")
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what} ({err.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the {what} as UTF-8") from None
    return safe_yaml(text, str(path))


MAX_YAML_BYTES = 1 << 20  # params and sweep files are a few KiB
MAX_YAML_NODES = 100_000  # values after aliases are expanded: an anchor bomb expands to billions


def safe_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load(text)`, refusing (one UserError line naming `where`) a document that is malformed, has a key
    twice in one mapping (YAML says last wins; a silent typo), refers to itself, or expands through aliases to more
    than MAX_YAML_NODES values. The node graph is checked before any Python object is built."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where, {}, set())
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise UserError(f"{where}: not valid YAML{f' (line {mark.line + 1})' if mark else ''}") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, where: str, sizes: dict[int, int], open_: set[int]) -> int:
    """Values `node` stands for once aliases are expanded (memoised by node, so linear in the document)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise UserError(f"{where}: an alias refers to a value that contains it (line {node.start_mark.line + 1})")
    open_.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys = [k for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value != "<<"]
        twice = next((k for i, k in enumerate(keys) if k.value in [o.value for o in keys[:i]]), None)
        if twice is not None:
            raise UserError(f"{where}: duplicate key {twice.value!r} (line {twice.start_mark.line + 1}); give each "
                            "key once")
        children = [n for pair in node.value for n in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(child, where, sizes, open_) for child in children)
    if size > MAX_YAML_NODES:
        raise UserError(f"{where}: expands to more than {MAX_YAML_NODES} values through its aliases (&anchor / "
                        "*alias); write the values out")
    open_.discard(id(node))
    sizes[id(node)] = size
    return size
