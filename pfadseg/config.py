"""params.yaml -> typed, validated, frozen config objects.

The dataclasses below carry no defaults: every value comes from ``params.yaml``, the single source of
truth. Loading fails before any work on a missing or unknown key, a wrong type or an out-of-range value,
and the error names the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pfadseg.data.sources import SOURCES
from pfadseg.errors import PfadsegError

DEFAULT_PARAMS = Path("params.yaml")
log = logging.getLogger(__name__)

# A category names a folder and is one argument of a stage command in dvc.yaml (single-quoted there), so it may hold
# spaces, unicode and shell characters, but not these: a path separator, the quote, DVC's stage-name separator '@'.
CATEGORY_FORBIDDEN = ("/", "\\", "'", "@")
# PFADSeg's student (AFF or PCAR on) diverges below this batch size with loss_reduction: sum at the protocol's lr 0.5:
# its weights and BN statistics grow without bound while the loss falls (measured at batch 2; batch 3 and up, and
# DeSTSeg's student, stay bounded). The training loop's divergence guard stops such a run.
STUDENT_SAFE_BATCH = 3


class ConfigError(PfadsegError, ValueError):
    """A params file or override that cannot be used; the message names the key."""

    exit_status = 2


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict[str, Any]:
    return {"range": (lo, hi, lo_open)}


def num(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Any:
    """A dataclass field constrained to ``lo <= x <= hi`` (``lo < x`` when ``lo_open``)."""
    return field(metadata=_range(lo, hi, lo_open=lo_open))


# --------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ArchiveConfig:
    url: str
    sha256: str | None  # null: unknown; the download prints the computed sha256 and asks to pin it


@dataclass(frozen=True)
class ArchiveLimitsConfig:
    """How far a downloaded archive may expand; a larger one (a zip or tar bomb) fails before anything is written."""

    max_extracted_gib: float = num(0.0, lo_open=True)  # all members together
    max_ratio: float = num(1.0)  # uncompressed / compressed size: per member of a zip, the whole of a tar


@dataclass(frozen=True)
class SyntheticDataConfig:
    image_size: int = num(32, 4096)
    n_train: int = num(1)
    n_test_good: int = num(1)
    n_test_per_defect: int = num(1)
    n_defect_types: int = num(1, 6)
    seed: int = num(0)


@dataclass(frozen=True)
class ProceduralTexturesConfig:
    n_classes: int = num(1)
    per_class: int = num(1)
    image_size: int = num(32, 4096)  # the image reader's minimum side (pfadseg.data.images.MIN_IMAGE_SIDE)
    seed: int = num(0)


@dataclass(frozen=True)
class DataConfig:
    source: Literal["mvtec", "synthetic", "folder", "ksdd2"]
    root: str | None
    textures: Literal["dtd", "procedural"]
    image_size: int = num(64, 1024)
    categories: list[str]
    mvtec: ArchiveConfig
    dtd: ArchiveConfig
    ksdd2: ArchiveConfig
    archive_limits: ArchiveLimitsConfig
    synthetic: SyntheticDataConfig
    procedural_textures: ProceduralTexturesConfig

    def validate(self, key: str) -> None:
        if not self.categories:
            raise ConfigError(f"{key}.categories: must name at least one category")
        for name in self.categories:
            if problem := category_name_problem(name):
                raise ConfigError(f"{key}.categories: {name!r} cannot be a category name: {problem}")
        if len(set(self.categories)) != len(self.categories):
            raise ConfigError(f"{key}.categories: duplicate names in {self.categories}")
        if self.image_size % 32:
            raise ConfigError(f"{key}.image_size: must be a multiple of 32 (the student reaches 1/32), "
                              f"got {self.image_size}")
        source = SOURCES[self.source]
        if source.reads_root and not self.root:
            raise ConfigError(f"{key}.root: required when data.source is {self.source} (your dataset in MVTec "
                              "layout)")
        if problem := source.category_problem(self.categories):
            raise ConfigError(f"{key}.categories: {problem}")


def category_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a category (a folder and a stage argument), or None."""
    if name.strip() in ("", ".", ".."):
        return "it names no folder (empty, '.' or '..')"
    if name != name.strip():
        return "leading or trailing spaces (a folder name that is easy to get wrong)"
    if bad := [c for c in CATEGORY_FORBIDDEN if c in name]:
        return f"it holds {' '.join(bad)} (allowed: any other printable characters, spaces and unicode included)"
    if any(not c.isprintable() for c in name):
        return "it holds a control character (a newline or tab, say)"
    return None


@dataclass(frozen=True)
class BankConfig:
    n_masks: int = num(1)
    n_textures: int = num(1)
    perlin_min_exponent: int = num(0, 8)
    perlin_max_exponent: int = num(0, 8)
    perlin_threshold: float = num(-1.0, 1.0)
    rotation_degrees: float = num(0.0, 180.0)
    opacity_min: float = num(0.0, 1.0)
    opacity_max: float = num(0.0, 1.0)
    texture_augment: bool

    def validate(self, key: str) -> None:
        if self.perlin_min_exponent > self.perlin_max_exponent:
            raise ConfigError(f"{key}.perlin_min_exponent: must not exceed perlin_max_exponent")
        if self.opacity_min >= self.opacity_max:
            raise ConfigError(f"{key}.opacity_min: must be below opacity_max")


@dataclass(frozen=True)
class AFFConfig:
    reduction: int = num(1)
    factor_two: bool


@dataclass(frozen=True)
class SPRConfig:
    reduction: int = num(1)


@dataclass(frozen=True)
class PCARConfig:
    branches: Literal["dilated", "kernels", "plain"]
    shared_spr: bool
    softmax: Literal["branch", "pixel"]


@dataclass(frozen=True)
class RCMConfig:
    band_kernel: int = num(1)
    square_kernel: int = num(1)
    mlp_ratio: int = num(1)
    layer_scale_init: float = num(0.0)

    def validate(self, key: str) -> None:
        for name in ("band_kernel", "square_kernel"):
            if getattr(self, name) % 2 == 0:
                raise ConfigError(f"{key}.{name}: must be odd (an even kernel changes the map size)")


Backbone = Literal["resnet18", "wide_resnet50_2"]  # torchvision ResNets a teacher/student can be built on


@dataclass(frozen=True)
class ADPSConfig:
    """ADPS (Xing et al., TNNLS 2024, Sec. III): every field is a detail the paper leaves open except ``k``."""

    backbone: Backbone
    k: int = num(1, 64)
    split_at: Literal["input", "stage1", "stage2"]
    wmb_detach_student: bool
    psm_widths: list[int]
    target_resize: Literal["bilinear", "maxpool"]
    clamp_anomalous_cos: bool
    score_sigma: float = num(0.0)

    def validate(self, key: str) -> None:
        if len(self.psm_widths) != 4 or min(self.psm_widths) < 1:
            raise ConfigError(f"{key}.psm_widths: expected 4 positive widths (up-blocks 1..4), got {self.psm_widths}")


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["pfadseg", "adps"]
    use_aff: bool
    use_pcar: bool
    use_rcm: bool
    teacher_weights: str
    aff: AFFConfig
    spr: SPRConfig
    pcar: PCARConfig
    rcm: RCMConfig
    decoder_upsample: Literal["between_stages", "in_block"]
    adps: ADPSConfig


@dataclass(frozen=True)
class AugmentConfig:
    slight_degrees: float = num(0.0, 180.0)
    fill: int = num(0, 255)
    none: list[str]
    slight: list[str]
    rotate: list[str]

    def validate(self, key: str) -> None:
        seen: dict[str, str] = {}
        for group in ("none", "slight", "rotate"):
            for cat in getattr(self, group):
                if cat in seen:
                    raise ConfigError(f"{key}.{group}: {cat!r} is also in {key}.{seen[cat]}")
                seen[cat] = group

    def group_of(self, category: str) -> Literal["none", "slight", "rotate"]:
        """Rotation group of a category; categories listed nowhere get none."""
        if category in self.rotate:
            return "rotate"
        if category in self.slight:
            return "slight"
        return "none"


@dataclass(frozen=True)
class StudentTrainConfig:
    iterations: int = num(1)
    batch_size: int = num(2)
    lr: float = num(0.0, lo_open=True)
    momentum: float = num(0.0, 1.0)
    weight_decay: float = num(0.0)
    loss_reduction: Literal["sum", "mean"]


@dataclass(frozen=True)
class SegTrainConfig:
    iterations: int = num(1)
    batch_size: int = num(2)
    lr_res: float = num(0.0, lo_open=True)
    lr_head: float = num(0.0, lo_open=True)
    momentum: float = num(0.0, 1.0)
    weight_decay: float = num(0.0)
    focal_gamma: float = num(0.0)
    focal_weight: float = num(0.0)
    l1_weight: float = num(0.0)


@dataclass(frozen=True)
class ADPSTrainConfig:
    """ADPS joint training (ADPS Sec. III-IV): one stage trains student and post-segmentation module."""

    epochs: int = num(1)
    batch_size: int = num(2)
    lr: float = num(0.0, lo_open=True)
    milestones: list[int]
    lr_decay: float = num(0.0, 1.0, lo_open=True)
    focal_gamma: float = num(0.0)
    seg_weight: float = num(0.0)
    synthesis: Literal["draem", "destseg"]
    clean_probability: float = num(0.0, 1.0)
    rotate_probability: float = num(0.0, 1.0)
    rotate_degrees: float = num(0.0, 180.0)

    def validate(self, key: str) -> None:
        if sorted(self.milestones) != self.milestones or any(not 0 < m < self.epochs for m in self.milestones):
            raise ConfigError(f"{key}.milestones: must be increasing epochs between 1 and epochs - 1 "
                              f"({self.epochs - 1}), got {self.milestones}")


@dataclass(frozen=True)
class TrainConfig:
    device: Literal["auto", "cpu", "cuda"]
    amp: bool
    channels_last: bool
    fewer_kernels: bool
    accelerator_path_on_cpu: bool
    compile: bool
    cuda_graphs: bool
    checkpoint_every: int = num(1)
    log_every: int = num(1)
    augment: AugmentConfig
    student: StudentTrainConfig
    seg: SegTrainConfig
    adps: ADPSTrainConfig


@dataclass(frozen=True)
class CalibrateConfig:
    n_samples: int = num(2)


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = num(1)
    top_k: int = num(1)
    aupro_mode: Literal["mvtec", "destseg"]
    aupro_fpr_limit: float = num(0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class ReportConfig:
    figure_examples: int = num(1, 32)


@dataclass(frozen=True)
class Config:
    seed: int = num(0)
    seeds: list[int]
    data: DataConfig
    bank: BankConfig
    model: ModelConfig
    train: TrainConfig
    calibrate: CalibrateConfig
    eval: EvalConfig
    report: ReportConfig

    def validate(self, key: str) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"seeds: must list at least one distinct non-negative seed, got {self.seeds}")
        student = self.train.student
        if (student.batch_size < STUDENT_SAFE_BATCH and student.loss_reduction == "sum"
                and (self.model.use_aff or self.model.use_pcar) and self.model.arch == "pfadseg"):
            log.warning("train.student.batch_size %d is below %d: with loss_reduction sum at lr %g, PFADSeg's student "
                        "is known to diverge (weights and BN statistics grow without bound while the loss falls); "
                        "use a batch of %d or more, a lower lr, or loss_reduction mean", student.batch_size,
                        STUDENT_SAFE_BATCH, student.lr, STUDENT_SAFE_BATCH)
        pixels = self.data.image_size ** 2  # every architecture's anomaly map is data.image_size square
        if not 1 <= self.eval.top_k <= pixels:
            raise ConfigError(f"eval.top_k: {self.eval.top_k} exceeds the {pixels} pixels of a "
                              f"{self.data.image_size} x {self.data.image_size} anomaly map (data.image_size); "
                              f"use at most {pixels}")
        if self.model.arch == "adps" and self.data.image_size % (16 * self.model.adps.k):
            raise ConfigError(f"model.adps.k: data.image_size ({self.data.image_size}) must be a multiple of 16 * k "
                              f"= {16 * self.model.adps.k}, so every patch reaches the student's 1/16 level")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what gets stored beside models and results)."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; use {_type_name(tp)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}.{i}") for i, v in enumerate(value)]
    if origin in (types.UnionType, typing.Union):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan/.inf: NaN passes every range check
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # a bug in this module, not in params


def _check_range(value: Any, meta: Mapping[str, Any], key: str) -> None:
    if "range" not in meta:
        return
    lo, hi, lo_open = meta["range"]
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{key}: {value!r} is out of range; must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {value!r} is out of range; must be <= {hi}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "params"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(prefix + '.' + k if prefix else k for k in unknown)}"
                          f"; allowed: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            raise ConfigError(f"{key}: missing; add it to params.yaml")
        value = _convert(data[name], hints[name], key)
        _check_range(value, f.metadata, key)
        values[name] = value
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where)
    return obj


def _apply_override(tree: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. model.use_pcar=false")
    dotted, raw = override.split("=", 1)
    node: Any = tree
    parts = dotted.strip().split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"override {dotted}: no key {'.'.join(parts[: i + 1])} in params")
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise ConfigError(f"override {dotted}: no such key in params (overrides may only change existing keys)")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {override!r}: the value {raw!r} is not valid YAML ({problem}); quote it "
                          "or close its brackets, e.g. data.categories=[carpet,leather]") from None


def config_from_dict(tree: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Validate a params tree (plus ``KEY=VALUE`` overrides, YAML-typed) into a :class:`Config`."""
    return _build(Config, apply_overrides(tree, overrides) if overrides else _deepcopy(tree), "")


# Keys added after trained model files started storing their config, with the value that reproduces what older
# versions did: a stored config lacking one is read with it (anything else missing still fails validation).
ADDED_KEYS: dict[str, Any] = {
    "model.adps.backbone": "resnet18",
    "train.accelerator_path_on_cpu": False,
    "data.archive_limits": {"max_extracted_gib": 1.0e9, "max_ratio": 1.0e9},  # older versions extracted unbounded
    "train.cuda_graphs": False,
    "train.fewer_kernels": False,
}


def upgrade_stored_config(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config stored by an older pfadseg with each missing :data:`ADDED_KEYS` entry filled in."""
    out = _deepcopy(tree)
    for dotted, value in ADDED_KEYS.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = _deepcopy(value)
    return out


def _deepcopy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _deepcopy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deepcopy(v) for v in tree]
    return tree


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``FILE line N, column M: problem`` from a YAML parse error (whose marks count from 0)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"{path}: not valid YAML ({exc})"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    started = f" ({context} at line {context_mark.line + 1})" if context and context_mark else ""
    return f"{path} line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{started}; fix the YAML there"


def read_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """The raw params tree of a YAML file, with a clear error when it is missing, empty or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or pass --params FILE")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc})") from None
    if tree is None:
        raise ConfigError(f"{path}: the file is empty (or only comments); restore it, e.g. with "
                          f"`git checkout -- {path}`, or pass --params FILE")
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got a {type(tree).__name__}")
    return tree


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


def profile_overrides(path: Path | str) -> list[str]:
    """A profile file (flat ``dotted.key: value`` YAML, e.g. profiles/destseg.yaml) as ``KEY=VALUE`` overrides."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read profile ({exc})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of dotted keys to values")
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            for key, value in tree.items()]


def apply_overrides(tree: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of a params tree with overrides applied and the result validated."""
    out = _deepcopy(tree)
    for override in overrides:
        _apply_override(out, override)
    _build(Config, out, "")
    return out


def load_config(path: Path | str = DEFAULT_PARAMS, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a params file; errors name the file and the key."""
    tree = read_params(path)  # its errors name the file already
    try:
        return config_from_dict(tree, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
