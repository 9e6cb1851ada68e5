"""The architectures by name: DeSTSeg/PFADSeg and ADPS, each one :class:`Architecture` that owns its model files,
score rule, teacher, the params each stage reads and the names of its training stages.

:func:`architecture` is the one place that picks an architecture by ``model.arch``.
"""

from __future__ import annotations

from pfadseg.arch.adps import ADPS
from pfadseg.arch.base import Architecture
from pfadseg.arch.destseg import DESTSEG
from pfadseg.errors import UsageError

ARCHITECTURES: dict[str, Architecture] = {arch.name: arch for arch in (DESTSEG, ADPS)}


def architecture(name: str) -> Architecture:
    """The architecture of ``model.arch`` (``pfadseg``: DeSTSeg/PFADSeg, ``adps``: ADPS)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UsageError(f"model.arch: unknown architecture {name!r}; use one of {', '.join(ARCHITECTURES)}") \
            from None


__all__ = ["ARCHITECTURES", "Architecture", "architecture"]
