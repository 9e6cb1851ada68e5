"""The image score of an anomaly map, as an architecture declares it (DeSTSeg's eval.py: mean of the top-k
pixels; ADPS Algorithm 1: max of the Gaussian-smoothed map); :mod:`pfadseg.score.maps` computes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreRule:
    """Image score from an anomaly map: top-k mean or, with ``sigma``, the max of the Gaussian-smoothed map."""

    top_k: int
    sigma: float | None = None

    def describe(self) -> str:
        return f"mean of the top-{self.top_k} pixels" if self.sigma is None else \
            f"max of the Gaussian-smoothed map (sigma {self.sigma:g})"

    def problem(self, size: int) -> str | None:
        """Why the rule cannot score size x size maps, or None."""
        if self.sigma is None and not 1 <= self.top_k <= size * size:
            return f"top_k must lie in [1, {size * size}] (pixels per map), got {self.top_k}"
        return None
