"""Compiles every component into component_specs/ and every pipeline beside its module.

Usage:
    python scripts/compile.py            # write the YAML files
    python scripts/compile.py --check    # exit 1 and name the stale files, writing nothing

One component per module in components/ (component_specs/<module>.yaml); one ``@dsl.pipeline``
per module in pipelines/ (pipelines/<module>.yaml). The image reference comes from
batchpredict.image (BATCHPREDICT_IMAGE_REGISTRY picks the registry).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _targets() -> list[tuple[object, Path]]:
    from kfp.dsl.base_component import BaseComponent
    from kfp.dsl.graph_component import GraphComponent

    import components
    import pipelines

    targets: list[tuple[object, Path]] = []
    for pkg, out_dir, kind in (
        (components, ROOT / "component_specs", "component"),
        (pipelines, ROOT / "pipelines", "pipeline"),
    ):
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
            found = {
                id(v): v
                for v in vars(module).values()
                if isinstance(v, BaseComponent)
                and _defined_in(v, module.__name__)
                and (isinstance(v, GraphComponent) == (kind == "pipeline"))
            }
            if len(found) > 1:
                raise SystemExit(f"{module.__name__} defines {len(found)} {kind}s; keep one.")
            for comp in found.values():
                targets.append((comp, out_dir / f"{info.name}.yaml"))
    return targets


def _defined_in(comp: object, module_name: str) -> bool:
    func = getattr(comp, "pipeline_func", None) or getattr(comp, "python_func", None)
    return getattr(func, "__module__", None) == module_name


def _compile(comp: object, path: Path) -> None:
    from kfp import compiler

    compiler.Compiler().compile(comp, str(path))


def main(argv: list[str] | None = None) -> int:
    """Compiles, or checks that the committed YAML is what compiling gives now."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files, write none")
    args = parser.parse_args(argv)
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for comp, path in _targets():
            fresh = Path(tmp) / path.name
            _compile(comp, fresh)
            text = fresh.read_text()
            if not path.exists() or path.read_text() != text:
                stale.append(path.relative_to(ROOT))
                if not args.check:
                    path.write_text(text)
    if args.check and stale:
        print("Stale compiled YAML (run `make compile`):", *stale, sep="\n  ")
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
