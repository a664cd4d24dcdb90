"""Label shortlist: which of a text's candidate labels the model scores when they do not fit one pass.

Past ``max_labels_per_pass`` every further chunk of labels costs a whole forward pass, and scores from
different passes compare poorly. So cheap evidence ranks every candidate first: the cosine between the
text's embedding and the label name's, plus any extra per-label evidence the caller has (added to the
cosine). Labels carried by the text's examples are always kept: the neighbours' labels are the strongest
evidence there is. The top ``size`` go to the model in one pass (``select``).

Labels left out still get a score, below every shortlisted one (``fill_scores``), so a result ranks every
candidate and a multi-label threshold never picks a label the model did not see.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: Highest score a label outside the shortlist gets: below any sensible decision threshold, and small enough
#: that a thousand of them add under 1e-3 to a softmax distribution over the shortlisted labels.
OUTSIDE_CEILING = 1e-6


@dataclass(frozen=True)
class Shortlist:
    """One text's split of its candidates: ``kept`` (ascending indices, the order the model reads them in)
    and ``rest`` (the others, best evidence first)."""

    kept: np.ndarray
    rest: np.ndarray


def select(
    similarity: np.ndarray, size: int, *, carried: Iterable[int] = (), evidence: np.ndarray | None = None
) -> Shortlist:
    """Keep the ``carried`` labels and the best of the others by ``similarity + evidence``, ``size`` in all.

    ``similarity``: one cosine per candidate (text vs label name); ``evidence``: optional extra per-label
    evidence on the same scale, added before ranking; ``carried``: indices of the labels the text's examples
    carry, kept whatever their rank, even if there are more than ``size`` of them. Ties go to the earlier
    candidate, so the choice is deterministic.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 1:
        raise ValueError(f"similarity must be one value per label, got shape {similarity.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    key = similarity if evidence is None else similarity + _per_label(evidence, len(similarity))
    order = np.argsort(-key, kind="stable")
    keep = np.zeros(len(key), dtype=bool)
    keep[list(carried)] = True
    room = size - int(keep.sum())
    if room > 0:
        keep[order[~keep[order]][:room]] = True
    return Shortlist(kept=np.flatnonzero(keep), rest=order[~keep[order]])


def fill_scores(shortlist: Shortlist, kept_scores: np.ndarray) -> np.ndarray:
    """Scores for every candidate: the model's ``kept_scores`` (in ``kept`` order) for the shortlisted ones;
    for the rest an evenly spaced band below both ``OUTSIDE_CEILING`` and the lowest kept score,
    falling with their evidence rank: the ``r``-th (from 0) of ``n`` gets ``top * (n - r) / (n + 1)``.
    """
    kept_scores = np.asarray(kept_scores, dtype=np.float64)
    if kept_scores.shape != shortlist.kept.shape:
        raise ValueError(f"got {kept_scores.size} scores for {shortlist.kept.size} shortlisted labels")
    out = np.empty(len(shortlist.kept) + len(shortlist.rest), dtype=np.float64)
    out[shortlist.kept] = kept_scores
    n = len(shortlist.rest)
    if n:
        top = min(OUTSIDE_CEILING, float(kept_scores.min()) if kept_scores.size else OUTSIDE_CEILING)
        out[shortlist.rest] = top * np.arange(n, 0, -1) / (n + 1)
    return out


def _per_label(evidence: np.ndarray, n: int) -> np.ndarray:
    evidence = np.asarray(evidence, dtype=np.float64)
    if evidence.shape != (n,):
        raise ValueError(f"evidence must be one value per label ({n}), got shape {evidence.shape}")
    return evidence
