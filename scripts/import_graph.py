"""The import graph of the ``batchpredict`` package, from its source (ast; nothing is imported).

``python scripts/import_graph.py`` prints, per layer (a subpackage or a top-level module), the
layers it imports, and then every module's imports within the package. Imports inside functions
count as well: a lazy import is still a dependency. ``tests/test_architecture.py`` checks the rules
on the same graph.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "batchpredict"
ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    """``batchpredict/io/fs.py`` -> ``batchpredict.io.fs`` (``__init__.py``: the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (anywhere in its body)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import module`` depends on the module; ``from pkg import name``, on pkg
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer(module: str) -> str:
    """``batchpredict.io.sinks`` -> ``io``; ``batchpredict.engine`` -> ``engine``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Layer -> the other layers its modules import."""
    out: dict[str, set[str]] = {}
    for module, deps in graph.items():
        here = layer(module)
        out.setdefault(here, set()).update(layer(d) for d in deps if layer(d) != here)
    return out


def main() -> int:
    """Prints the layer graph, then the module graph."""
    graph = imports()
    print("Layers (-> what they import):")
    for name, deps in sorted(layer_graph(graph).items()):
        print(f"  {name:18} -> {', '.join(sorted(deps)) or '-'}")
    print("\nModules:")
    for module, deps in sorted(graph.items()):
        short = sorted(d.removeprefix(PACKAGE + ".") for d in deps)
        print(f"  {module.removeprefix(PACKAGE + '.'):28} -> {', '.join(short) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
