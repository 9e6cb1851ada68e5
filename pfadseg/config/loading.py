"""Reading params: a YAML file or tree, ``KEY=VALUE`` overrides and profiles, stored configs of older versions,
validated into a :class:`~pfadseg.config.schema.Config`. Errors name the file, the line and the dotted key."""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pfadseg.config.schema import Config, ConfigError

DEFAULT_PARAMS = Path("params.yaml")

# Keys added after trained model files started storing their config, with the value that reproduces what older
# versions did: a stored config lacking one is read with it (anything else missing still fails validation).
ADDED_KEYS: dict[str, Any] = {
    "model.adps.backbone": "resnet18",
    "train.accelerator_path_on_cpu": False,
    "data.archive_limits": {"max_extracted_gib": 1.0e9, "max_ratio": 1.0e9},  # older versions extracted unbounded
    "train.cuda_graphs": False,
    "train.fewer_kernels": False,
}

# pydantic's error types, worded as this project words them: {key}, {value} and the error's context
_MESSAGES = {
    "missing": "{key}: missing; add it to params.yaml",
    "bool_type": "{key}: expected true or false, got {value!r}",
    "int_type": "{key}: expected an integer, got {value!r}",
    "float_type": "{key}: expected a number, got {value!r}",
    "finite_number": "{key}: must be a finite number, got {value!r}",
    "string_type": "{key}: expected a string, got {value!r}",
    "list_type": "{key}: expected a list, got {value!r}",
    "none_required": "{key}: expected null, got {value!r}",
    "greater_than_equal": "{key}: {value!r} is out of range; must be >= {ge}",
    "greater_than": "{key}: {value!r} is out of range; must be > {gt}",
    "less_than_equal": "{key}: {value!r} is out of range; must be <= {le}",
}


def _field_type(cls: type, loc: Sequence[Any]) -> Any:
    """The annotated type at ``loc`` (field names and list indices) below the dataclass ``cls``."""
    tp: Any = cls
    for part in loc:
        if isinstance(part, int):
            tp = typing.get_args(tp)[0]
            continue
        tp = typing.get_type_hints(tp)[part]
        while typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
    return tp


def _problem(cls: type, prefix: str, exc: ValidationError) -> str:
    """The first problem pydantic found building ``cls`` at ``prefix``, worded with its dotted key; unknown keys
    first (a misspelt key is also a missing one)."""
    errors = exc.errors()
    error = next((e for e in errors if e["type"] == "unexpected_keyword_argument"), errors[0])
    loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
    key = ".".join([prefix, *map(str, loc)] if prefix else map(str, loc))
    kind = error["type"]
    if kind == "unexpected_keyword_argument":
        unknown = [e["loc"][-1] for e in errors if e["type"] == kind]
        fields = [f.name for f in dataclasses.fields(cls)]
        return (f"{prefix or 'params'}: unknown key(s) "
                f"{', '.join(f'{prefix}.{k}' if prefix else str(k) for k in unknown)}; allowed: {', '.join(fields)}")
    if kind == "literal_error":
        allowed = ", ".join(repr(a) for a in typing.get_args(_field_type(cls, loc)))
        return f"{key}: {error['input']!r} is not allowed; use one of {allowed}"
    template = _MESSAGES.get(kind)
    if template is None:
        return f"{key}: {error['msg']}"
    return template.format(key=key, value=error.get("input"), **error.get("ctx", {}))


def _build(cls: type, data: Any, prefix: str) -> Any:
    """``cls`` from a mapping, its sections built first (pydantic's strict mode takes no dicts for them), then
    its own cross-field ``validate``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    values = {name: _build(hints[name], value, f"{prefix}.{name}" if prefix else name)
              if name in hints and dataclasses.is_dataclass(hints[name]) else value
              for name, value in data.items()}
    try:
        obj = cls(**values)
    except ValidationError as exc:
        raise ConfigError(_problem(cls, prefix, exc)) from None
    if validate := getattr(obj, "validate", None):
        validate(prefix or "params")
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


def apply_overrides(tree: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of a params tree with overrides applied and the result validated."""
    out = copy.deepcopy(dict(tree))
    for override in overrides:
        _apply_override(out, override)
    _build(Config, out, "")
    return out


def config_from_dict(tree: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Validate a params tree (plus ``KEY=VALUE`` overrides, YAML-typed) into a :class:`Config`."""
    return _build(Config, apply_overrides(tree, overrides) if overrides else copy.deepcopy(dict(tree)), "")


def upgrade_stored_config(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config stored by an older pfadseg with each missing :data:`ADDED_KEYS` entry filled in."""
    out = copy.deepcopy(dict(tree))
    for dotted, value in ADDED_KEYS.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = copy.deepcopy(value)
    return out


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


def key_lines(text: str) -> dict[str, int]:
    """The line (from 1) of every dotted key of a YAML mapping."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines[dotted] = key.start_mark.line + 1
                walk(value, dotted)

    walk(yaml.compose(text), "")
    return lines


def _line_of(key: str, lines: Mapping[str, int]) -> int | None:
    """The line of ``key``, or of its nearest parent in the file."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


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


def load_config(path: Path | str = DEFAULT_PARAMS, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a params file; errors name the file, the line (of a key the file holds, unless an
    override set it) and the key."""
    tree = read_params(path)  # its errors name the file already
    try:
        return config_from_dict(tree, overrides)
    except ConfigError as exc:
        message = str(exc)
        key = message.split(":", 1)[0]  # every message names its key first
        from_file = not message.startswith("override ") and key not in {o.split("=", 1)[0].strip() for o in overrides}
        line = _line_of(key, key_lines(Path(path).read_text())) if from_file else None
        raise ConfigError(f"{path}{f' line {line}' if line else ''}: {message}") from None
