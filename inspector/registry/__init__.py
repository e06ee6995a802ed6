"""The model registry (MLflow), below the stages: detect follows an alias through it,
learn registers, promotes and rolls back through it.

Every version carries the sha256 of its entry file, its classes and input size, the
hash of its training data, its card and metrics. Aliases (``champion``,
``challenger``) name versions; each alias keeps a history tag so ``rollback`` knows
where to go back to. Moves are announced on the ``model-events`` topic
(:mod:`inspector.registry.announce`).
"""

from inspector.registry.client import (
    ModelVersion,
    Registry,
    RegistryError,
    RegistryUnavailable,
    parse_model_uri,
)

__all__ = [
    "ModelVersion",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "parse_model_uri",
]
