"""Learned evidence fusion: the model's score and the corpus's evidence (``rac.evidence``) into one score.

A logistic model over a dozen per-(text, label) features. Each feature belongs to one evidence source, so a
result can say how far each source moved a label's score (``contributions``). Relative features (a label's
model logit or prototype cosine minus the best candidate's) let one linear model work across label sets of
any size, and the ``unseen_model`` feature gives the model its own weight on labels the index has no
example of (``coverage``, the share of candidates the index holds, says how much of the label set is new):
a label added this week wins when the model is sure of it, where a fixed mix with the neighbours' vote
could never let it. The label-name cosine (``name_gap``, ``unseen_name``) is a second zero-shot opinion on
such labels, from the embedder that already serves retrieval.

The weights are fitted on the training pool with label drift simulated (``rac.fusion_fit``, ``rac
fit-fusion``) and stored as a small JSON file beside the model (no pickle).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rac.evidence import Evidence
from rac.storage import read_json_artifact

FORMAT_NAME = "rac-fusion"
FORMAT_VERSION = 1
FILE_NAME = "fusion.json"
#: Sigmoid scores are clipped before the logit so a saturated model cannot dominate by sheer magnitude.
SCORE_CLIP = 1e-4

#: Feature -> evidence source (the unit of ``contributions``).
FEATURE_SOURCES: dict[str, str] = {
    "model_logit": "model",
    "model_gap": "model",
    "unseen_model": "model",
    "reliable_model": "model",
    "shown": "examples",
    "knn": "neighbours",
    "reliable_knn": "neighbours",
    "near_knn": "neighbours",
    "prototype": "prototype",
    "prototype_gap": "prototype",
    "reliable_prototype_gap": "prototype",
    "probe": "probe",
    "reliable_probe": "probe",
    "name_gap": "name",
    "unseen_name": "name",
    "indexed": "index",
    "coverage": "index",
    "reliability": "index",
}
ALL_FEATURES = tuple(FEATURE_SOURCES)
#: The features the shipped fusion uses: those whose removal cost leave-one-dataset-out F1 or unseen-label
#: hits on the training pool (``rac.fusion_fit.ABLATIONS``, ``benchmarks/results/fusion_fit.md``).
DEFAULT_FEATURES = ("model_logit", "unseen_model", "knn", "reliable_knn", "near_knn", "prototype_gap", "probe",
                    "reliable_probe", "unseen_name", "indexed", "coverage", "reliability")
SOURCES = tuple(dict.fromkeys(FEATURE_SOURCES.values()))


def features(evidence: Evidence, names: Sequence[str] = ALL_FEATURES) -> np.ndarray:
    """``(n_labels, len(names))`` feature matrix of one text's evidence."""
    clipped = np.clip(evidence.model, SCORE_CLIP, 1 - SCORE_CLIP)
    logit = np.log(clipped) - np.log1p(-clipped)
    indexed = evidence.indexed
    if indexed.any():
        prototype_gap = indexed * (evidence.prototype - evidence.prototype[indexed > 0].max())
    else:
        prototype_gap = np.zeros_like(logit)
    r = evidence.reliability
    probe = evidence.probe if evidence.probe is not None else np.zeros_like(logit)
    name_gap = np.zeros_like(logit) if evidence.name is None else evidence.name - evidence.name.max()
    columns = {
        "model_logit": logit,
        "model_gap": logit - logit.max(),
        "unseen_model": (1.0 - indexed) * logit,
        "reliable_model": r * logit,
        "shown": evidence.shown,
        "knn": evidence.knn,
        "reliable_knn": r * evidence.knn,
        "near_knn": evidence.nearest * evidence.knn,
        "prototype": indexed * evidence.prototype,
        "prototype_gap": prototype_gap,
        "reliable_prototype_gap": r * prototype_gap,
        "probe": probe,
        "reliable_probe": r * probe,
        "name_gap": name_gap,
        "unseen_name": (1.0 - indexed) * name_gap,
        "indexed": indexed,
        "coverage": np.full_like(logit, indexed.mean()),
        "reliability": np.full_like(logit, r),
    }
    return np.stack([columns[name] for name in names], axis=1)


@dataclass
class EvidenceFusion:
    """Standardised features -> logistic score. ``fitted_on`` records the data and command that fitted it."""

    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [name for name in self.feature_names if name not in FEATURE_SOURCES]
        if unknown:
            raise ValueError(f"unknown fusion feature(s) {unknown}; known: {', '.join(ALL_FEATURES)}")
        self.mean, self.scale, self.coef = (np.asarray(a, dtype=np.float64) for a in (self.mean, self.scale, self.coef))
        if not self.mean.shape == self.scale.shape == self.coef.shape == (len(self.feature_names),):
            raise ValueError("fusion mean, scale and coef must each have one entry per feature")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.coef).all() and (self.scale > 0).all()):
            raise ValueError("fusion weights must be finite and scales positive")

    def __repr__(self) -> str:
        return f"EvidenceFusion({len(self.feature_names)} features: {', '.join(self.feature_names)})"

    def uses(self, source: str) -> bool:
        """Whether a feature reads evidence ``source`` (one of ``SOURCES``): the classifier skips what no
        feature reads (the linear probe's fit, the label-name embeddings)."""
        return any(FEATURE_SOURCES[name] == source for name in self.feature_names)

    def _terms(self, evidence: Evidence) -> np.ndarray:
        return (features(evidence, self.feature_names) - self.mean) / self.scale * self.coef

    def score(self, evidence: Evidence) -> np.ndarray:
        """Fused probability per label."""
        logit = self._terms(evidence).sum(1) + self.intercept
        return 1.0 / (1.0 + np.exp(-logit))

    def contributions(self, evidence: Evidence) -> list[dict[str, float]]:
        """Per label, how far each source moved the fused logit from the fitting data's average label."""
        terms = self._terms(evidence)
        sources = np.array([FEATURE_SOURCES[name] for name in self.feature_names])
        by_source = {source: terms[:, sources == source].sum(1) for source in SOURCES if (sources == source).any()}
        return [{source: float(values[j]) for source, values in by_source.items()} for j in range(len(terms))]

    # -- persistence --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "features": list(self.feature_names),
            "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
            "intercept": float(self.intercept), "fitted_on": self.fitted_on,
        }

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (``path`` is a file, or a folder that gets ``fusion.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(self.to_dict(), indent=1) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvidenceFusion:
        """Read a fusion file (or a folder's ``fusion.json``); a malformed one is an error naming the file."""
        path = Path(path)
        raw = read_json_artifact(path / FILE_NAME if path.is_dir() else path, FORMAT_NAME, "rac fusion file")
        if not isinstance(raw.get("format_version"), int) or raw["format_version"] > FORMAT_VERSION:
            raise ValueError(f"{path}: fusion format version {raw.get('format_version')!r} is not supported; upgrade rac")
        try:
            return cls(tuple(raw["features"]), raw["mean"], raw["scale"], raw["coef"], float(raw["intercept"]),
                       dict(raw.get("fitted_on") or {}))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid fusion file: {err}") from None

    # -- fitting ------------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        weights: np.ndarray | None = None,
        feature_names: Sequence[str] = DEFAULT_FEATURES,
        regularization: float = 1.0,
        fitted_on: dict[str, Any] | None = None,
    ) -> EvidenceFusion:
        """Logistic regression (scikit-learn, L2, ``C = regularization``) on standardised features."""
        from sklearn.linear_model import LogisticRegression

        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
        mean, scale = x.mean(0), x.std(0)
        scale = np.where(scale > 1e-8, scale, 1.0)
        model = LogisticRegression(C=regularization, max_iter=2000)
        model.fit((x - mean) / scale, y, sample_weight=weights)
        return cls(tuple(feature_names), mean, scale, model.coef_[0], float(model.intercept_[0]), dict(fitted_on or {}))
