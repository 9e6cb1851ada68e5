"""The params a stage may read: :func:`scoped_config` lets a stage read only the keys its ``dvc.yaml`` entry
declares, and :func:`select_params` gives their values (what DVC tracks for it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pfadseg.config.schema import Config, ConfigError


def select_params(cfg: Config | ParamView, keys: Sequence[str]) -> dict[str, Any]:
    """The values of dotted ``keys`` in ``cfg`` (plain values: sections as dicts), e.g. what one DVC stage reads."""
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        out[key] = _plain(node)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, ParamView):  # a section only partly declared: its other keys must not be read
        raise UndeclaredParamError(f"stage {value._stage} reads all of {value._key}, of which it declares only "
                                   "some keys")
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


class UndeclaredParamError(ConfigError):
    """A stage read a param that its dvc.yaml entry does not declare."""


class ParamView:
    """A read-only view of a config (section) that lets a stage read only the params it declares.

    Reading an undeclared key raises :class:`UndeclaredParamError` naming the key and the stage, so a stage can
    never depend on a param that DVC does not track for it. Properties and methods of the sections (e.g.
    ``AugmentConfig.group_of``) run against the view, so they too read only declared keys. ``to_dict`` is the
    whole config, for the provenance stored beside results.
    """

    __slots__ = ("_allowed", "_key", "_obj", "_root", "_stage")

    def __init__(self, obj: Any, allowed: frozenset[str], stage: str, key: str = "", root: Any = None) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_root", obj if root is None else root)

    def to_dict(self) -> dict[str, Any]:
        """The whole config as a plain dict (provenance stored beside models and results)."""
        return dataclasses.asdict(self._root)

    def __getattr__(self, name: str) -> Any:
        obj = self._obj
        if name not in obj.__dataclass_fields__:
            attr = getattr(type(obj), name)
            if isinstance(attr, property):
                return attr.fget(self)  # type: ignore[misc]
            return attr.__get__(self) if callable(attr) else attr
        dotted = f"{self._key}.{name}" if self._key else name
        value = getattr(obj, name)
        if any(dotted == a or dotted.startswith(a + ".") for a in self._allowed):
            return value
        if dataclasses.is_dataclass(value) and any(a.startswith(dotted + ".") for a in self._allowed):
            return ParamView(value, self._allowed, self._stage, dotted, self._root)
        raise UndeclaredParamError(f"stage {self._stage} reads {dotted}, which its params do not declare; add it "
                                   "to the stage's params (pfadseg/arch or pfadseg/pipeline) and rewrite "
                                   "dvc.yaml with `pfadseg graph`")

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __repr__(self) -> str:
        return f"ParamView({self._stage}: {', '.join(sorted(self._allowed))})"


def scoped_config(cfg: Config, params: Sequence[str], stage: str) -> Config:
    """``cfg`` as a :class:`ParamView` that allows only ``params`` (typed as Config for the code that reads it)."""
    return ParamView(cfg, frozenset(params), stage)  # type: ignore[return-value]
