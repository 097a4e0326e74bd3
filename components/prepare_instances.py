"""Prepare instances: a table turned into batch prediction input (preprocessing)."""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from batchpredict.image import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def prepare_instances(
    data: Input[Dataset],
    model: Input[Artifact],
    instances: Output[Dataset],
    key_column: str = "",
    instances_format: str = "jsonl",
    shards: int = 1,
    target_columns: List[str] = [],
    predictions_uri_prefix: str = "",
) -> NamedTuple(
    "Outputs",
    [
        ("gcs_source_uris", List[str]),
        ("included_fields", List[str]),
        ("key_field", str),
        ("predictions_uri_prefix", str),
    ],
):
    """Writes a table as batch prediction instances, in the model's feature order.

    Removes the target column(s) (as Google's TargetFieldDataRemoverOp does), orders the features
    as the model's ``feature_names`` metadata says, adds a key column when asked (the row position
    when the table lacks it) and writes ``shards`` files. A missing or extra feature is an error
    that names the columns.

    Args:
        data: The table to predict.
        model: The model; its metadata gives ``feature_names`` (order) and ``target`` (removed).
        key_column: A column carried as the instance key, so results can be joined back;
            empty: no key.
        instances_format: ``jsonl`` (one object per line), ``csv`` or ``parquet``.
        shards: The number of files.
        target_columns: More columns to remove besides the model's target.
        predictions_uri_prefix: Passed through as the output prefix; empty: a
            ``batch_predictions`` directory beside the instances.

    Returns:
        instances: The directory of instance files.
        gcs_source_uris: The files, as a wildcard URI, for ModelBatchPredictOp.
        included_fields: The features in model order (use with ``instance_type='array'``).
        key_field: The key column, for ModelBatchPredictOp's ``key_field``.
        predictions_uri_prefix: For ModelBatchPredictOp's
            ``gcs_destination_output_uri_prefix``.
    """
    from batchpredict.tasks.prepare import run_prepare_instances

    prepared, prefix = run_prepare_instances(
        data=data,
        model=model,
        instances=instances,
        key_column=key_column,
        instances_format=instances_format,
        shards=shards,
        target_columns=target_columns,
        predictions_uri_prefix=predictions_uri_prefix,
    )
    return (prepared.gcs_source_uris, prepared.included_fields, prepared.key_field, prefix)


PrepareInstancesOp = prepare_instances
