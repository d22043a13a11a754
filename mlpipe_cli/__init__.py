"""mlpipe: a command-line toolchain for ML data pipelines."""

__version__ = "0.1.0"

# Bumped when the layout or meaning of an artifact file changes incompatibly; readers refuse
# artifacts whose format_version they do not know.
ARTIFACT_FORMAT_VERSION = 1
