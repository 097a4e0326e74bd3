"""Dataset: a bundled scikit-learn data set or a user's table, split into train and test."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from batchpredict.image import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def dataset(
    train_data: Output[Dataset],
    test_data: Output[Dataset],
    source: str = "breast_cancer",
    target_column: str = "",
    test_fraction: float = 0.2,
    seed: int = 42,
    stratify: bool = True,
):
    """Loads a tabular data set and splits it into train and test, deterministically.

    Args:
        source: A data set bundled with scikit-learn (``breast_cancer``, ``iris``, ``wine``:
            classification; ``diabetes``: regression; no download), or the path or URI of a
            CSV / Parquet file or of a directory of them.
        target_column: The label column; bundled data sets name it ``target``.
        test_fraction: The share of rows in the test split.
        seed: The random seed of the split.
        stratify: Stratify a classification split on the target (when every class has two
            rows or more).

    Returns:
        train_data: The training rows (Parquet); metadata ``rows``, ``columns``, ``schema``,
            ``target_column``, ``problem_type``, ``label_names`` (bundled data sets).
        test_data: The held-out rows (Parquet), with the same metadata.
    """
    from batchpredict.tasks.dataset import run_dataset

    run_dataset(
        train_data=train_data,
        test_data=test_data,
        source=source,
        target_column=target_column,
        test_fraction=test_fraction,
        seed=seed,
        stratify=stratify,
    )


DatasetOp = dataset
