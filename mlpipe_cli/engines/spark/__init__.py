"""The Spark engine: Spark schedules and moves rows, mlpipe's Polars code computes.

Every command keeps its definitions in one place. On Spark the rows of a task are handed to
the same functions the Polars engine calls (``features.engine.compute_features``,
``FittedTransform.transform_batch``, the validation checks, the profile binning), so values
agree by construction; what this package adds is the cutting into tasks, the shuffle that
puts an entity's rows into one task, and the merging of per-task results.

Modules: ``session`` (the SparkSession, errors raised inside tasks), ``frames`` (reading
inputs with their row order, carrying Polars dtypes through Spark, writing part files),
``training_set``, ``transform``, ``validate``, ``profile``.
"""
