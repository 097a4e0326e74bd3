"""The runtime of the pipeline components around batch prediction.

One module per component, each a plain function over paths and a ``run_*`` entry point over KFP
artifacts (duck-typed: ``uri``, ``path``, ``metadata``), so that everything is unit-testable
without KFP:

- ``dataset``: load a bundled scikit-learn data set or a user's CSV/Parquet, split train/test.
- ``train``: fit a scikit-learn or XGBoost model, saved in the layout of Vertex's prebuilt
  prediction containers.
- ``prepare``: turn a table into batch prediction instances (jsonl, csv, parquet).
- ``collect``: read a batch prediction output directory (ours or Vertex's) into a table joined
  with the ground truth.
- ``evaluate``: classification and regression metrics, an HTML report, a quality gate.

What the steps pass to each other (problem types, keys, the ``predicted`` and ``score_<label>``
columns) is defined once in ``contract``; a task imports ``contract`` and ``batchpredict.io``, never
another task. Tables are read and written through ``batchpredict.io.tables``, prediction output
directories through ``batchpredict.io.results``.
"""
