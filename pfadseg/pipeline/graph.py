"""dvc.yaml, derived from the code: every stage's deps are its script's import closure within ``pfadseg`` (plus
its data), its params what its :class:`StageDef` declares for the architecture of params.yaml.

``pfadseg graph --check`` fails when dvc.yaml differs from what the code gives; ``pfadseg graph`` rewrites it. The
architecture decides the training stages: DeSTSeg/PFADSeg ``train_student`` -> ``train_seg``, ADPS
``train_adps``; both then ``calibrate`` -> ``evaluate`` -> ``report``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from pfadseg.arch.registry import architecture
from pfadseg.config import DEFAULT_PARAMS, Config
from pfadseg.pipeline.acquire_images import ACQUIRE_IMAGES
from pfadseg.pipeline.acquire_textures import ACQUIRE_TEXTURES
from pfadseg.pipeline.adps import TRAIN_ADPS
from pfadseg.pipeline.bank import BANK
from pfadseg.pipeline.calibrate import CALIBRATE
from pfadseg.pipeline.check_params import CHECK_PARAMS
from pfadseg.pipeline.entry import ITEM, StageDef
from pfadseg.pipeline.evaluate import EVALUATE
from pfadseg.pipeline.report import REPORT
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT

TRAINING_STAGES: dict[str, StageDef] = {s.name: s for s in (TRAIN_STUDENT, TRAIN_SEG, TRAIN_ADPS)}
HEADER = """\
# Written by `pfadseg graph` from the code (pfadseg/pipeline/graph.py): do not edit by hand.
# deps: each stage script's import closure within pfadseg, plus its data; params: what the stage reads (it runs
# on a config view that refuses any other key). The training stages are those of model.arch ({arch}); to switch
# architecture: pfadseg experiment NAME -S model.arch=ARCH (or pfadseg graph -S model.arch=ARCH, then dvc repro).
"""


def stages_for(cfg: Config) -> list[StageDef]:
    """The pipeline's stages for ``cfg``'s architecture, in order."""
    training = [TRAINING_STAGES[name] for name in architecture(cfg.model.arch).train_stages]
    return [CHECK_PARAMS, ACQUIRE_IMAGES, ACQUIRE_TEXTURES, BANK, *training, CALIBRATE, EVALUATE, REPORT]


def module_file(root: Path, module: str) -> Path | None:
    """The source file of a ``pfadseg`` module (a package's ``__init__.py``), or None if it is no module."""
    path = root.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imports(file: Path) -> Iterable[str]:
    """Every module a file imports, wherever the import stands (lazy imports inside functions too)."""
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)  # submodules imported by name


def import_closure(root: Path, script: Path) -> list[Path]:
    """The ``pfadseg`` files that ``script`` imports, directly or not, with their packages' ``__init__.py``."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in _imports(todo.pop()):
            if module != "pfadseg" and not module.startswith("pfadseg."):
                continue
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
                file = module_file(root, ".".join(parts[:depth]))
                if file is not None and file not in seen:
                    seen.add(file)
                    todo.append(file)
    return sorted(p.relative_to(root) for p in seen)


def _compact(params: Iterable[str]) -> list[str]:
    """Each key once, without keys already covered by a declared parent section."""
    keys = list(dict.fromkeys(params))
    return [k for k in keys if not any(k.startswith(p + ".") for p in keys)]


def stage_entry(stage: StageDef, cfg: Config, root: Path) -> dict[str, Any]:
    """One stage of dvc.yaml."""
    arch = cfg.model.arch
    script = Path("stages") / f"{stage.name}.py"
    code = [Path("stages/__init__.py"), script, *import_closure(root, root / script)]
    entry: dict[str, Any] = {}
    # `python -m` puts the project root first on sys.path: the stage runs the pfadseg beside it, the code DVC hashes,
    # not whatever pfadseg the interpreter has installed (an editable checkout elsewhere, a queue worker's origin).
    if stage.per_run:
        entry["matrix"] = {"category": "${data.categories}", "seed": "${seeds}"}
    # The category is single-quoted: a name may hold spaces and shell characters (never a quote: CATEGORY_FORBIDDEN).
    entry["cmd"] = f"python -m stages.{stage.name}" + (" '${item.category}' ${item.seed}" if stage.per_run else "")
    gate = stage is CHECK_PARAMS  # every other stage depends on its marker, so DVC runs it first
    checked = [] if gate else [str(ITEM.params_check)]
    kept = {"persist": True} if gate else {}  # a failed check leaves its marker, so nothing downstream turns stale
    entry["deps"] = [*map(str, code), *stage.extra_code, *stage.deps(arch), *checked]
    # The gate reads the whole params file (an unknown key anywhere fails it); the others what they declare.
    entry["params"] = [{str(DEFAULT_PARAMS): None}] if gate else _compact(stage.declared(cfg))
    report = stage.name == "report"  # Git tracks reports/
    outs = [*(({p: {"cache": False}} if report else p) for p in stage.outs(arch)),
            *({p: {"cache": False, **kept}} for p in stage.records(arch))]
    for kind, paths in (("outs", outs), ("metrics", [{p: {"cache": False}} for p in stage.metrics]),
                        ("plots", [p if stage.plots_cached else {p: {"cache": False}} for p in stage.plots(arch)])):
        if paths:
            entry[kind] = paths
    return entry


def render_graph(cfg: Config, root: Path) -> str:
    """dvc.yaml's text for ``cfg`` (its architecture's stages) and the code under ``root``."""
    stages = {stage.name: stage_entry(stage, cfg, root) for stage in stages_for(cfg)}
    return HEADER.format(arch=cfg.model.arch) + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


def graph_problem(cfg: Config, root: Path) -> str | None:
    """Why ``root/dvc.yaml`` is not what the code gives for ``cfg``, or None when it is."""
    path = root / "dvc.yaml"
    if not path.is_file():
        return f"{path}: missing; run pfadseg graph"
    if path.read_text() != render_graph(cfg, root):
        return (f"{path}: out of date with the code or with model.arch={cfg.model.arch}; run pfadseg graph "
                "(and commit it)")
    return None


def write_graph(cfg: Config, root: Path) -> Path:
    """Write ``root/dvc.yaml`` for ``cfg``."""
    path = root / "dvc.yaml"
    path.write_text(render_graph(cfg, root))
    return path
