"""Online serving: the `mlpipe serve` feature server and `mlpipe model` registration.

Public API::

    build_runtime(config, artifact_dir, transform_ref=, model_ref=, log_dir=) -> ServingRuntime
        # loads + verifies everything once (ArtifactError exit 3, ServiceUnavailable exit 4)
    FeatureService.lookup(entity) / lookup_many(entities) -> Served   # no HTTP
    ServingApp(service, metrics, logger, ...)                         # RSGI + ASGI app
    serve(ServeSpec) -> exit code                                     # Granian, signals
    register_model(store, path, transform_ref) / load_model(store, ref, transform_version=)
    FeatureLogger                                                     # serving-log writer

docs/serve.md documents endpoints, metrics, the log format and exit codes.
"""

from mlpipe_cli.serving.featurelog import FeatureLogger
from mlpipe_cli.serving.model import load_model, register_model
from mlpipe_cli.serving.service import FeatureService, Served, ServingRuntime, build_runtime

__all__ = [
    "FeatureLogger",
    "FeatureService",
    "Served",
    "ServingRuntime",
    "build_runtime",
    "load_model",
    "register_model",
]
