"""rac: retrieval-augmented zero-shot text classification with a GLiClass uni-encoder."""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Lazy exports: `import rac` stays cheap (no torch import) until a class is used.
_EXPORTS = {
    "RACClassifier": "rac.classifier",
    "ExampleIndex": "rac.index",
    "build_index": "rac.index",
    "Embedder": "rac.embedding",
    "RACExample": "rac.formatting",
    "generate_rac_dataset": "rac.generation",
    "GLiClassModel": "rac.model",
    "GLiClassProcessor": "rac.inputs",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rac' has no attribute {name!r}")
