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
import os
import sys
import traceback
import typing
from typing import Any

from batchpredict.errors import BatchPredictError, environment_error
from batchpredict.spec import (
    CONTAINER_RESOURCE_FIELDS,
    VERTEX_BACKEND_FIELDS,
    VERTEX_ONLY_FIELDS,
    BatchPredictionJobSpec,
    field_choices,
    field_docs,
)

EXAMPLE_DIR = "local_outputs/example"
# Set (to anything but 0) to print the traceback of an internal error; same as --debug.
DEBUG_ENV = "BATCHPREDICT_DEBUG"
EXIT_INTERNAL = 13
EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM exits 143
PREDICT_EXAMPLES = """examples:
  # a scikit-learn model on JSONL objects keyed by "id", features sent as arrays in this order
  batchpredict predict --job-display-name nightly --model-uri model_dir \\
    --gcs-source-uris 'data/*.jsonl' --gcs-destination-output-uri-prefix out \\
    --key-field id --instance-type array --included-fields f1 f2 f3 f4

  # CSV in (header row required), Parquet out, 4 worker processes
  batchpredict predict --job-display-name scores --model-uri gs://my-bucket/model \\
    --instances-format csv --gcs-source-uris gs://my-bucket/in/part-*.csv \\
    --predictions-format parquet --gcs-destination-output-uri-prefix gs://my-bucket/out --workers 4

  # the same job on Vertex AI
  batchpredict predict --backend vertex --project my-project --job-display-name nightly \\
    --model-resource-name projects/my-project/locations/us-central1/models/123 \\
    --gcs-source-uris 'gs://my-bucket/in/*.jsonl' --gcs-destination-output-uri-prefix gs://my-bucket/out

Prints the job's result as JSON; failed instances are summarised on stderr. Exit codes: 0 done,
1 a user error (arguments, input, model), 13 an internal error.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout, and never breaks a word at a hyphen (us-central1, file-list)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _LazyParser(argparse.ArgumentParser):
    """A subcommand's parser whose arguments are added when it is first used.

    ``batchpredict --help`` and ``batchpredict example`` then never build the predict flags,
    which need the spec's docstrings and the format registry.
    """

    def __init__(self, *args: Any, populate: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _ready(self) -> None:
        populate, self._populate = self._populate, None
        if populate is not None:
            populate(self)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        self._ready()
        return super().parse_known_args(*args, **kwargs)

    def format_help(self) -> str:
        self._ready()
        return super().format_help()

    def format_usage(self) -> str:
        self._ready()
        return super().format_usage()


def _help(name: str, docs: dict[str, str], default: Any, choices: dict[str, Any]) -> str:
    text = docs.get(name, "")
    if name in CONTAINER_RESOURCE_FIELDS:
        text = f"[Vertex; locally only serving containers use it] {text}"
    elif name in VERTEX_ONLY_FIELDS:
        text = f"[Vertex only; recorded locally] {text}"
    elif name in VERTEX_BACKEND_FIELDS:
        text = f"[vertex backend] {text}"
    if name in choices:
        text += " Choices: " + ", ".join(repr(c) if c == "" else c for c in choices[name])
        text += "."
    if default is not dataclasses.MISSING:
        shown = json.dumps(default) if isinstance(default, (dict, list, str)) else default
        text += f" Default: {shown}."
    return text.replace("%", "%%")


def _add_spec_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(BatchPredictionJobSpec)
    docs = field_docs()
    choices = field_choices()
    required = parser.add_argument_group("required")
    for f in dataclasses.fields(BatchPredictionJobSpec):
        hint = hints[f.name]
        names = [f"--{f.name.replace('_', '-')}"]
        origin = typing.get_origin(hint)
        default = f.default
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        kwargs: dict[str, Any] = {"dest": f.name, "help": _help(f.name, docs, default, choices)}
        if f.name in choices:
            kwargs["choices"] = choices[f.name]
            kwargs["metavar"] = "{" + ",".join(c for c in choices[f.name] if c) + "}"
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
            kwargs.setdefault("metavar", f.name.rsplit("_", 1)[-1].upper())
        (required if kwargs.get("required") else parser).add_argument(*names, **kwargs)
        if "_" in f.name:  # --gcs_source_uris as GCPC spells it: accepted, not listed twice
            alias = {**kwargs, "help": argparse.SUPPRESS, "required": False}
            parser.add_argument(f"--{f.name}", **alias)


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
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"print the traceback of an internal error (or set {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_LazyParser)
    sub.add_parser(
        "predict",
        help="run a batch prediction job",
        description="Runs a batch prediction job: one flag per input of GCPC's "
        "ModelBatchPredictOp (same names, dashes or underscores), plus batchpredict's own. "
        "Flags marked [Vertex only] are accepted and recorded by the local backend.",
        epilog=PREDICT_EXAMPLES,
        formatter_class=_HelpFormatter,
        populate=_add_spec_flags,
    )
    example = sub.add_parser("example", help="run a small bundled example job end to end")
    example.add_argument("--workdir", default=EXAMPLE_DIR, help="where inputs and output go")
    example.add_argument("--rows", type=int, default=20000, help="instances to predict")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit code.

    0 done, 1 a user error (arguments, input, model, a full disk), 13 an internal error (one line;
    the traceback with --debug or BATCHPREDICT_DEBUG=1), 130 Ctrl-C, 143 SIGTERM.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)  # --help exits here, before the engine is imported
    from batchpredict.engine import Terminated, sigterm_stops_job

    debug = args.debug or os.environ.get(DEBUG_ENV, "0") not in ("", "0")
    try:
        with sigterm_stops_job():
            result = _run(args)
    except BatchPredictError as err:
        print(f"batchpredict: error: {err}", file=sys.stderr)
        return err.exit_code
    except Terminated:
        print(
            "batchpredict: error: stopped by SIGTERM; workers stopped, partial output removed.",
            file=sys.stderr,
        )
        return Terminated.exit_code
    except KeyboardInterrupt:
        print(
            "batchpredict: interrupted; workers stopped, partial output removed.", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - never a raw traceback
        user = environment_error(err)
        if user is not None:
            print(f"batchpredict: error: {user}", file=sys.stderr)
            return user.exit_code
        if debug:
            traceback.print_exc()
        hint = "" if debug else f" (run with --debug or {DEBUG_ENV}=1 for the traceback)"
        print(f"batchpredict: error: internal: {type(err).__name__}: {err}{hint}", file=sys.stderr)
        return EXIT_INTERNAL
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def _run(args: argparse.Namespace) -> Any:
    if args.command == "example":
        from batchpredict.example import run_example

        return run_example(args.workdir, rows=args.rows)
    from batchpredict.backends import run_batch_prediction

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(BatchPredictionJobSpec)}
    return run_batch_prediction(BatchPredictionJobSpec(**values))


if __name__ == "__main__":
    sys.exit(main())
