"""Vertex AI's instance conversion: what each input record becomes before the model sees it.

Rules (Vertex ``InstanceConfig``):
- ``instance_type='object'``: table rows become objects; each JSONL line must be an object.
- ``instance_type='array'``: table rows become arrays in column order, or in ``included_fields``
  order; JSONL object lines need ``included_fields`` to give the order.
- unset: tables (csv, parquet, bigquery) behave as ``array``; JSONL lines pass through.
- ``key_field``: its value is not sent to the model; the output carries ``key`` instead of
  ``instance``.
- ``included_fields`` / ``excluded_fields``: mutually exclusive; excluded fields are not sent.
  Without ``key_field`` they are attached to the output: its ``instance`` is the whole record
  (Vertex: "excluded will be attached to the batch prediction output if key_field is not
  specified"), so an excluded id column joins results back.

Each converter takes a batch and returns the instances for the model, what the output shows for
each (the instance, or its key) and the records that could not be converted, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchpredict.errors import InstanceError, UserError

# What the output shows beside each prediction: the instance's key (when key_field is set), or
# the instance itself. Decided here for both sides: the sources' displays and the outputs' labels.
KEY = "key"
INSTANCE = "instance"


def display_label(keyed: bool) -> str:
    """The output's name for what identifies a result: ``key`` when keyed, else ``instance``."""
    return KEY if keyed else INSTANCE


@dataclass(frozen=True)
class InstanceConfig:
    """Vertex's ``instance_config``."""

    instance_type: str = ""
    key_field: str = ""
    included_fields: tuple[str, ...] = ()
    excluded_fields: tuple[str, ...] = ()

    @property
    def keyed(self) -> bool:
        """True when the output shows each instance's key instead of the instance."""
        return bool(self.key_field)

    @property
    def attach_excluded(self) -> bool:
        """True when the output shows the whole record: excluded fields, and no key_field."""
        return bool(self.excluded_fields) and not self.keyed

    def display(self, instance: Any, key: Any, record: Any) -> Any:
        """What the output shows for ``instance``.

        Its ``key`` when keyed; the whole ``record`` when excluded fields are attached; else the
        instance itself.
        """
        if self.keyed:
            return key
        return record if self.attach_excluded else instance

    @property
    def passthrough(self) -> bool:
        """True when JSONL lines go to the model unchanged."""
        return not (
            self.instance_type or self.key_field or self.included_fields or self.excluded_fields
        )


@dataclass
class Converted:
    """One batch after conversion.

    Attributes:
        instances: what the model receives, in order: a list, or a 2-D NumPy array of numeric
            rows from a source that reads them in bulk (the engine gives handlers that take
            only lists ``tolist()``).
        displays: the output's ``instance`` (or ``key``) for each instance, same order (a list,
            an array, or ``io.encoding.EncodedRows``).
        failures: ``(display, error)`` for each record that could not be converted.
        columns: the names of an array instance's values, when known (tables; JSONL objects
            turned into arrays by included_fields).
    """

    instances: Any = field(default_factory=list)
    displays: Any = field(default_factory=list)
    failures: list[tuple[Any, InstanceError]] = field(default_factory=list)
    columns: list[str] | None = None
    # For each failure, its position among the batch's input records (to locate it in the file).
    failure_index: list[int] = field(default_factory=list)

    def instance_records(self, count: int) -> list[int]:
        """The input position of each instance: the ``count`` records less the failed ones."""
        failed = set(self.failure_index)
        return [i for i in range(count) if i not in failed]


def convert_json(values: list[Any], cfg: InstanceConfig) -> Converted:
    """Converts parsed JSONL lines."""
    if cfg.passthrough:
        return Converted(instances=values, displays=values)
    out = Converted()
    if cfg.instance_type == "array" and cfg.included_fields:  # arrays of these named values
        out.columns = [f for f in cfg.included_fields if f != cfg.key_field]
    for index, value in enumerate(values):
        try:
            instance, display = _convert_json_value(value, cfg)
        except InstanceError as err:
            err.record = True  # the failure shows the line's value, never a key
            out.failures.append((value, err))
            out.failure_index.append(index)
            continue
        out.instances.append(instance)
        out.displays.append(display)
    return out


def _convert_json_value(value: Any, cfg: InstanceConfig) -> tuple[Any, Any]:
    if not isinstance(value, dict):
        if cfg.instance_type == "object":
            raise InstanceError(
                "instance_type='object' needs a JSON object on each line; got a JSON "
                f"{_json_type(value)}."
            )
        if cfg.key_field or cfg.included_fields or cfg.excluded_fields:
            raise InstanceError(
                "key_field, included_fields and excluded_fields need a JSON object on each line; "
                f"got a JSON {_json_type(value)}."
            )
        return value, value
    key = None
    if cfg.key_field:
        if cfg.key_field not in value:
            raise InstanceError(f"key_field {cfg.key_field!r} is missing from the instance.")
        key = value[cfg.key_field]
    if cfg.included_fields:
        missing = [f for f in cfg.included_fields if f not in value]
        if missing:
            raise InstanceError(f"included_fields {missing} missing from the instance.")
        names = [f for f in cfg.included_fields if f != cfg.key_field]
    else:
        dropped = set(cfg.excluded_fields)
        if cfg.key_field:
            dropped.add(cfg.key_field)
        names = [f for f in value if f not in dropped]
    if cfg.instance_type == "array":
        if not cfg.included_fields:
            raise UserError(
                "instance_type='array' with JSONL object lines needs included_fields to give the "
                f"order of the values; got a line with fields {list(value)[:10]}. Set "
                "included_fields, or leave instance_type empty to send objects."
            )
        instance: Any = [value[f] for f in names]
    else:
        instance = {f: value[f] for f in names}
    return instance, cfg.display(instance, key, value)


class TableConverter:
    """Converts table rows (csv, parquet, bigquery) given as lists in column order."""

    def __init__(self, columns: list[str], cfg: InstanceConfig, source: str = "the input") -> None:
        """Plans the conversion for ``columns``.

        Raises:
            UserError: a key, included or excluded field that is not a column.
        """
        self.columns = columns
        self.cfg = cfg
        index = {c: i for i, c in enumerate(columns)}
        named = [("key_field", [cfg.key_field] if cfg.key_field else [])]
        named += [("included_fields", list(cfg.included_fields))]
        named += [("excluded_fields", list(cfg.excluded_fields))]
        for label, names in named:
            missing = [n for n in names if n not in index]
            if missing:
                raise UserError(
                    f"{label} {missing} not found in the columns of {source}: {columns}."
                )
        self.key_index = index[cfg.key_field] if cfg.key_field else None
        if cfg.included_fields:
            keep = [c for c in cfg.included_fields if c != cfg.key_field]
        else:
            dropped = set(cfg.excluded_fields) | ({cfg.key_field} if cfg.key_field else set())
            keep = [c for c in columns if c not in dropped]
        self.keep_names = keep
        self.keep_index = [index[c] for c in keep]
        self.identity = self.keep_index == list(range(len(columns)))

    def convert(self, rows: list[list[Any]]) -> Converted:
        """Converts rows (each a list of column values)."""
        if self.cfg.instance_type == "object":
            names, idx = self.keep_names, self.keep_index
            instances: list[Any] = [{n: row[i] for n, i in zip(names, idx)} for row in rows]
        elif self.identity:
            instances = rows
        else:
            idx = self.keep_index
            instances = [[row[i] for i in idx] for row in rows]
        names = self.keep_names
        if self.cfg.attach_excluded:  # the whole row, excluded columns included, goes out
            if self.cfg.instance_type == "object":
                cols = self.columns
                displays: list[Any] = [dict(zip(cols, row)) for row in rows]
            else:
                displays = rows
            return Converted(instances=instances, displays=displays, columns=list(self.columns))
        if self.key_index is None:
            return Converted(instances=instances, displays=instances, columns=names)
        k = self.key_index
        return Converted(instances=instances, displays=[row[k] for row in rows], columns=names)


def _json_type(value: Any) -> str:
    """The JSON type name of a parsed value (messages name the type, never the value)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return {str: "string", list: "array"}.get(type(value), type(value).__name__)
