"""The ``batchpredict`` command line.

``batchpredict predict`` takes one flag per ModelBatchPredictOp input (``--gcs-source-uris``,
``--instances-format``, ...; underscores work too) and prints the result as JSON.
``batchpredict example`` runs a small bundled example end to end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from typing import Any

from batchpredict.errors import BatchPredictError
from batchpredict.spec import BatchPredictionJobSpec

EXAMPLE_DIR = "local_outputs/example"


def _add_spec_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(BatchPredictionJobSpec)
    for f in dataclasses.fields(BatchPredictionJobSpec):
        hint = hints[f.name]
        names = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            names.append(f"--{f.name}")
        origin = typing.get_origin(hint)
        kwargs: dict[str, Any] = {"dest": f.name}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = f.default
        elif origin is list:
            kwargs.update(nargs="+", default=[], metavar="VALUE")
        elif origin is dict:
            kwargs.update(type=_json_object, default={}, metavar="JSON")
        else:
            kwargs.update(type=hint, default=None if kwargs.get("required") else f.default)
        parser.add_argument(*names, **kwargs)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one flag per BatchPredictionJobSpec field."""
    parser = argparse.ArgumentParser(
        prog="batchpredict",
        description="Vertex AI-compatible batch prediction: locally, or on Vertex AI.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="run a batch prediction job")
    _add_spec_flags(predict)
    example = sub.add_parser("example", help="run a small bundled example job end to end")
    example.add_argument("--workdir", default=EXAMPLE_DIR, help="where inputs and output go")
    example.add_argument("--rows", type=int, default=20000, help="instances to predict")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (1 for user errors, 13 for internal ones)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "example":
            from batchpredict.example import run_example

            result = run_example(args.workdir, rows=args.rows)
        else:
            from batchpredict.backends import run_batch_prediction

            values = {
                f.name: getattr(args, f.name) for f in dataclasses.fields(BatchPredictionJobSpec)
            }
            result = run_batch_prediction(BatchPredictionJobSpec(**values))
    except BatchPredictError as err:
        print(f"batchpredict: error: {err}", file=sys.stderr)
        return err.exit_code
    print(json.dumps(result.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
