"""One module per command: what `mlpipe X` does, callable from Python.

Each module holds one function (``ops.validate.validate``, ``ops.fit.fit``, ...) that takes a
:class:`~mlpipe_cli.ops.project.Project` and typed keyword arguments, returns a frozen result
dataclass whose ``to_dict()`` is the command's ``--json`` document, prints nothing, and
raises the ``mlpipe_cli.errors`` tree. A result that records a failed gate (validation,
drift, skew, freshness, breaking schema change) says so in ``raise_for_status()``, which
raises the same ``DataCheckFailed`` the CLI turns into exit 1, so the CLI can render the
result first and callers can choose to inspect it instead.

``cli/`` parses flags, calls one function here and renders; ``mlpipe_cli.Pipeline`` wraps
the same functions. Nothing here imports ``cli``; domain packages never import ``ops``.
"""
