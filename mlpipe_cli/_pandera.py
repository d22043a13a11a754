"""Import ``pandera.polars`` without pandera importing pyspark.

pandera's package init probes for pyspark (``import pyspark.pandas``) whenever pyspark is
installed, as it is with the spark extra: that costs ~0.6 s per command, prints pyspark's
pandas-version FutureWarning, and sets ``SPARK_LOCAL_IP=127.0.0.1`` in our environment, which
would make a later Spark driver in this process unreachable from a real cluster's
executors. mlpipe never uses pandera's pyspark support, so the probe is made to fail fast
and the environment is put back.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

_PANDERA_ENV = ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")


def pandera_polars() -> ModuleType:
    """``import pandera.polars``, keeping pyspark unloaded and the environment unchanged."""
    if "pandera" not in sys.modules and "pyspark" not in sys.modules:
        saved = {name: os.environ.get(name) for name in _PANDERA_ENV}
        sys.modules["pyspark"] = None  # type: ignore[assignment]  # ImportError on import
        try:
            import pandera.polars
        finally:
            if sys.modules.get("pyspark", 0) is None:
                del sys.modules["pyspark"]
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    import pandera.polars

    return pandera.polars
