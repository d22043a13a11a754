"""Reading a configured source: the one place its derived columns are computed.

``scan_source`` (defined in ``mlpipe_cli.config.sources`` so that validation, which may not
import this package, can call it too) is what every reader of a source calls
(`training-set` and `materialize` through the feature engine, `validate`, entity listing), so
a derived column has the same value wherever it is read, and contracts may cover it like
any stored column.
"""

from mlpipe_cli.config.sources import scan_source

__all__ = ["scan_source"]
