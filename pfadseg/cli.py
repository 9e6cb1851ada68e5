"""The ``pfadseg`` command line: one command per pipeline stage, plus benchmarks.

Every command reads ``params.yaml`` (or ``--params FILE``) and may take ``--set KEY=VALUE`` overrides; the
commands only parse arguments and call :mod:`pfadseg.pipeline` or library functions.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from pfadseg.config import DEFAULT_PARAMS, Config, load_config
from pfadseg.errors import MissingFileError, PfadsegError, UsageError
from pfadseg.paths import Layout
from pfadseg.pipeline.entry import StageDef


class _Commands(TyperGroup):
    """The one place where a command's :class:`pfadseg.errors.PfadsegError` becomes one line on stderr: exit status 2
    for a params error, 1 for any other; every other exception is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PfadsegError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(exc.exit_status) from None


app = typer.Typer(
    cls=_Commands,
    help="PFADSeg / DeSTSeg anomaly detection: data, anomaly bank, training, evaluation, reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks: each prints its figure beside a comparison measured in the same run.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Params file (the single source of truth).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-S", help="Override a param, e.g. -S model.use_rcm=false.")]
CategoryArg = Annotated[str, typer.Argument(help="Category, e.g. bottle (one of data.categories).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Training seed (one of seeds); default: the first.")]

log = logging.getLogger("pfadseg")


class ImageSource(StrEnum):
    mvtec = "mvtec"
    dtd = "dtd"
    ksdd2 = "ksdd2"


class Acquirable(StrEnum):
    images = "images"
    textures = "textures"


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _config(params: Path, overrides: list[str] | None) -> Config:
    _setup_logging()
    return load_config(params, overrides or ())


def _run_stage(stage: StageDef, params: Path, overrides: list[str] | None, *args: Any) -> None:
    """Load the config and run ``stage`` on it (a run seed of None means the first of ``seeds``)."""
    cfg = _config(params, overrides)
    if stage.per_run and args[1] is None:
        args = (args[0], cfg.seeds[0])
    stage.invoke(cfg, Layout(), *args)


@app.command()
def acquire(
    what: Annotated[Acquirable, typer.Argument(help="images (data.source) or textures (data.textures).")],
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """DVC stage: get the dataset or the anomaly-source textures as params.yaml says (download or generate)."""
    from pfadseg.pipeline.acquire_images import ACQUIRE_IMAGES
    from pfadseg.pipeline.acquire_textures import ACQUIRE_TEXTURES

    _run_stage(ACQUIRE_IMAGES if what is Acquirable.images else ACQUIRE_TEXTURES, params, set_)


@app.command()
def download(
    dataset: Annotated[ImageSource, typer.Argument(
        help="mvtec (MVTec AD), dtd (Describable Textures) or ksdd2 (KolektorSDD2, as category ksdd2).")],
    archive: Annotated[Path | None, typer.Option(help="Use an archive you already have (still checksummed).")] = None,
    url: Annotated[str | None, typer.Option(help="Override the download URL of params.yaml.")] = None,
    sha256: Annotated[str | None, typer.Option(help="Override the expected sha256 of params.yaml.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """Download (or take --archive), verify sha256, safely extract and validate MVTec AD, DTD or KolektorSDD2."""
    from pfadseg.data.categories import KSDD2_CATEGORY
    from pfadseg.pipeline.acquire_images import acquire_images
    from pfadseg.pipeline.acquire_textures import acquire_textures

    if dataset is ImageSource.mvtec:
        cfg = _config(params, [*(set_ or []), "data.source=mvtec"])
        run = acquire_images
    elif dataset is ImageSource.ksdd2:
        cfg = _config(params, [*(set_ or []), "data.source=ksdd2", f"data.categories=[{KSDD2_CATEGORY}]"])
        run = acquire_images
    else:
        cfg = _config(params, [*(set_ or []), "data.textures=dtd"])
        run = acquire_textures
    run(cfg, Layout(), archive=archive, url=url, sha256=sha256)


@app.command("synth-data")
def synth_data(params: ParamsOpt = DEFAULT_PARAMS, set_: SetOpt = None) -> None:
    """Generate the offline procedural dataset (MVTec layout) and DTD-like textures into data/raw/."""
    from pfadseg.pipeline.acquire_images import acquire_images
    from pfadseg.pipeline.acquire_textures import acquire_textures

    cfg = _config(params, [*(set_ or []), "data.source=synthetic", "data.textures=procedural"])
    acquire_images(cfg, Layout())
    acquire_textures(cfg, Layout())


@app.command()
def bank(params: ParamsOpt = DEFAULT_PARAMS, set_: SetOpt = None) -> None:
    """DVC stage: precompute the synthetic anomaly bank (Perlin masks and textures)."""
    from pfadseg.pipeline.bank import BANK

    _run_stage(BANK, params, set_)


def _per_run_command(name: str, module: str, attr: str, doc: str) -> None:
    def command(category: CategoryArg, seed: SeedOpt = None, params: ParamsOpt = DEFAULT_PARAMS,
                set_: SetOpt = None) -> None:
        import importlib

        _run_stage(getattr(importlib.import_module(module), attr), params, set_, category, seed)

    command.__doc__ = doc
    app.command(name)(command)


_per_run_command("train-student", "pfadseg.pipeline.train_student", "TRAIN_STUDENT",
                 "DVC stage: train the denoising student of one category (resumes from its last checkpoint).")
_per_run_command("train-seg", "pfadseg.pipeline.train_seg", "TRAIN_SEG",
                 "DVC stage: train the segmentation net of one category on the frozen student.")
_per_run_command("train-adps", "pfadseg.pipeline.adps", "TRAIN_ADPS",
                 "DVC stage (model.arch: adps): train ADPS's student and post-segmentation module jointly.")
_per_run_command("calibrate", "pfadseg.pipeline.calibrate", "CALIBRATE",
                 "DVC stage: fit a trained run's image and pixel thresholds on synthetic anomalies.")
_per_run_command("evaluate", "pfadseg.pipeline.evaluate", "EVALUATE",
                 "DVC stage: evaluate one category's trained model on its test set (metrics, scores, maps, curves).")


@app.command()
def report(params: ParamsOpt = DEFAULT_PARAMS, set_: SetOpt = None) -> None:
    """DVC stage: render reports/tables.md and reports/figures/ from the runs that exist."""
    from pfadseg.pipeline.report import REPORT

    _run_stage(REPORT, params, set_)


@app.command()
def graph(
    check: Annotated[bool, typer.Option("--check", help="Only check that dvc.yaml is up to date.")] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """Write dvc.yaml from the code and params (deps: import closures; params: what each stage reads)."""
    from pfadseg.pipeline.graph import graph_problem, write_graph

    cfg = _config(params, set_)
    if check:
        if problem := graph_problem(cfg, Path.cwd()):
            raise UsageError(problem)
        typer.echo("dvc.yaml is up to date")
        return
    typer.echo(f"written: {write_graph(cfg, Path.cwd())} (model.arch={cfg.model.arch})")


def _int_list(text: str | None, option: str) -> list[int] | None:
    """``1,3,7`` -> [1, 3, 7]; a clear error naming the option otherwise."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{option} {text!r}: give comma-separated integers, e.g. {option} 1,7") from None


@app.command()
def ablate(
    run: Annotated[bool, typer.Option(help="Run the experiments first (--no-run: only render what finished).")] = True,
    adps: Annotated[bool, typer.Option(help="Also run ADPS (experiment adps, -S model.arch=adps).")] = False,
    rows: Annotated[str | None, typer.Option(help="Table 4 rows to run, e.g. 1,7 (default: all seven).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Training seeds, e.g. 0,1,2 (-S seeds=[0,1,2]).")] = None,
    jobs: Annotated[int | None, typer.Option(
        help="Run through DVC's queue with N workers (each on a free GPU; CPU threads = cores / N).")] = None,
    per_gpu: Annotated[int, typer.Option(help="With --jobs: up to K workers share one GPU (small networks leave "
                                              "a GPU mostly idle; K processes fill it).")] = 1,
    push: Annotated[str | None, typer.Option(help="Then dvc exp push them to this Git remote.")] = None,
    pull: Annotated[str | None, typer.Option(help="First dvc exp pull every experiment from this Git remote.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """PFADSeg Table 4: run the 7 switch combinations (and --adps) as DVC experiments, render reports/ablation.md."""
    from pfadseg.pipeline.ablate import plan_grid, run_grid

    _setup_logging()
    overrides = [*(set_ or ()), *([f"seeds=[{seeds}]"] if seeds else [])]
    _config(params, overrides)  # a bad value stops here, before DVC touches anything
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: give at least 1 worker")
    if per_gpu < 1:
        raise UsageError(f"--per-gpu {per_gpu}: give at least 1 worker per GPU")
    plan = plan_grid(_int_list(rows, "--rows"), adps=adps, extra_overrides=overrides)
    missing = run_grid(Layout(), plan, run=run, jobs=jobs, per_gpu=per_gpu, push=push, pull=pull)
    if missing:
        typer.echo(f"rows not run: {', '.join(map(str, missing))}")


@app.command("run")
def run_cmd(
    jobs: Annotated[int | None, typer.Option(
        help="Queue each category x seed run as a DVC experiment and train N at once (each on a free GPU; CPU "
             "threads = cores / N); without it, dvc repro in the workspace.")] = None,
    per_gpu: Annotated[int, typer.Option(help="With --jobs: up to K workers share one GPU.")] = 1,
    categories: Annotated[str | None, typer.Option(
        help="This machine's share, e.g. bottle,cable (default: all of data.categories): computed, restored and "
             "pushed; the report waits for --pull on the machine that assembles.")] = None,
    push: Annotated[str | None, typer.Option(help="Then dvc push --run-cache to this DVC remote.")] = None,
    pull: Annotated[str | None, typer.Option(
        help="First dvc pull --run-cache from this DVC remote (what other machines pushed).")] = None,
    run: Annotated[bool, typer.Option(help="--no-run: only pull and assemble (with --pull).")] = True,
) -> None:
    """The main protocol (dvc repro) with its category x seed runs spread over DVC's queue; reports/tables.md."""
    from pfadseg.pipeline.protocol import run_protocol

    _setup_logging()
    _config(DEFAULT_PARAMS, None)  # a bad value stops here, before DVC touches anything
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: give at least 1 worker")
    if per_gpu < 1:
        raise UsageError(f"--per-gpu {per_gpu}: give at least 1 worker per GPU")
    share = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    layout = Layout()
    result = run_protocol(layout, jobs=jobs, per_gpu=per_gpu, categories=share, push=push, pull=pull, run=run)
    typer.echo(f"protocol: {len(result['queued'])} runs queued, {len(result['trained_in_workspace'])} training "
               f"stages run in the workspace, {len(result['restored'])} stages restored from the run cache; "
               f"{layout.protocol_record}")


@app.command()
def experiment(
    name: Annotated[str, typer.Argument(help="Experiment name (dvc exp run -n NAME).")],
    set_: SetOpt = None,
) -> None:
    """dvc exp run -n NAME -S ... after writing the graph of its architecture (e.g. -S model.arch=adps)."""
    from pfadseg.pipeline.queue import Experiment, run_experiment

    _setup_logging()
    run_experiment(Layout(), Experiment(name, tuple(set_ or ())), capture=False)


@app.command()
def profile(name: Annotated[str, typer.Argument(help="A profile in profiles/ (destseg, demo, ci) or a file.")]) -> None:
    """Print a profile as `-S key=value` arguments, e.g. dvc exp run -n destseg $(pfadseg profile destseg)."""
    import shlex

    from pfadseg.config import profile_overrides

    path = Path(name) if Path(name).suffix else Path("profiles") / f"{name}.yaml"
    overrides = profile_overrides(path)
    typer.echo(" ".join(f"-S {shlex.quote(o)}" for o in overrides))


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo project (must not exist or be empty).")] = Path(
        "demo-run"),
    ablation: Annotated[bool, typer.Option(
        help="Then the reduced ablation, 7 rows and ADPS (profiles/demo-ablation.yaml).")] = False,
) -> None:
    """Offline demo: the whole DVC pipeline on procedural data with a random teacher (profiles/demo.yaml)."""
    from pfadseg.config import profile_overrides
    from pfadseg.pipeline.ablate import plan_grid, run_grid
    from pfadseg.pipeline.workspace import commit_all, make_workspace, run_dvc

    _setup_logging()
    if missing := [name for name in ("params.yaml", "dvc.yaml", "profiles/demo.yaml") if not Path(name).is_file()]:
        raise MissingFileError(f"{Path.cwd()} lacks {', '.join(missing)}: run `pfadseg demo` from the pfadseg "
                               "project root (the folder with params.yaml and dvc.yaml)")
    make_workspace(Path.cwd(), workdir, profile_overrides(Path("profiles/demo.yaml")))
    run_dvc(workdir, "repro", capture=False)
    commit_all(workdir, "demo baseline results")  # dvc exp show then compares experiments with them
    if ablation:
        reduced = profile_overrides(Path("profiles/demo-ablation.yaml"))
        run_grid(Layout(workdir), plan_grid(adps=True, extra_overrides=reduced))
    typer.echo(f"demo finished: {workdir / 'reports'} (tables.md{', ablation.md' if ablation else ''}, figures/)")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A run folder (models/<category>/seed<k>) or a model file in it.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("predictions"),
    threshold: Annotated[float | None, typer.Option(
        help="Image-score threshold, within the model's score range (default: calibrated).")] = None,
    pixel_threshold: Annotated[float | None, typer.Option(
        help="Mask threshold, within the model's score range (default: calibrated).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per batch (default: eval.batch_size).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    teacher: Annotated[str | None, typer.Option(help="Teacher weights file, if not where training found it.")] = None,
    max_pixels: Annotated[int | None, typer.Option(
        help="Refuse images of more pixels (width x height) than this, a guard against decompression bombs and "
             "running out of memory (default: pfadseg.data.images.MAX_IMAGE_PIXELS).")] = None,
) -> None:
    """Score your own images: per image a heatmap, an overlay and a mask PNG, plus predictions.csv."""
    from pfadseg.data.images import MAX_IMAGE_PIXELS
    from pfadseg.predict import load_predictor

    _setup_logging()
    predictor = load_predictor(model, device=device, threshold=threshold, pixel_threshold=pixel_threshold,
                               teacher_weights=teacher)
    report = predictor.predict(inputs, out, batch_size=batch_size,
                               max_pixels=MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)
    typer.echo(f"{report.n_ok} image(s) scored, {report.n_anomalous} anomalous -> {report.csv_path}")
    if report.failed:  # each one was logged with its path and reason as it happened
        typer.secho(f"{len(report.failed)} image(s) failed: see the warnings above or the error column of "
                    f"{report.csv_path}", fg=typer.colors.RED, err=True)
    if report.failed or report.n_ok == 0:
        raise typer.Exit(1)


class ExportFormat(StrEnum):
    onnx = "onnx"


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A run folder (models/<category>/seed<k>) or a model file in it.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file.")] = Path("pfadseg.onnx"),
    format_: Annotated[ExportFormat, typer.Option("--format", help="Export format.")] = ExportFormat.onnx,
    threshold: Annotated[float | None, typer.Option(help="Image threshold recorded in the metadata.")] = None,
    opset: int = 17,
) -> None:
    """One ONNX graph: normalised image -> anomaly map and image score, verified against PyTorch (pip: .\\[export])."""
    from pfadseg.export import ExportError, export_predictor, verify_onnx
    from pfadseg.predict import load_predictor

    _setup_logging()
    predictor = load_predictor(model, device="cpu", threshold=threshold, require_threshold=False)
    export_predictor(predictor, out, opset=opset)
    diff = verify_onnx(out, predictor.detector, image_size=predictor.image_size)
    worst = max(diff.values())
    if worst > 1e-4:
        raise ExportError(f"{out}: ONNX Runtime differs from PyTorch by {worst:.2e} (> 1e-4)")
    typer.echo(f"{format_.value} written to {out} (max difference to PyTorch {worst:.1e})")


@bench_app.command("predict")
def bench_predict_cmd(
    batch_size: int = 32,
    image_size: int = 256,
    device: str = "auto",
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """Images/s and latency at batch 1 and --batch-size (bf16 too on CUDA), PFADSeg vs DeSTSeg."""
    from pfadseg.bench.predict import bench_predict

    bench_predict(_config(params, set_), image_size=image_size, device=device, batch_sizes=(1, batch_size))


@bench_app.command("predict-memory")
def bench_predict_memory_cmd(
    size: Annotated[int, typer.Option(help="Side of the square test image, px.")] = 12000,
    device: str = "auto",
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """Peak RSS of predict on one --size x --size PNG beside the same process on a small image (fresh processes)."""
    from pfadseg.bench.predict import bench_predict_memory

    bench_predict_memory(_config(params, set_), size=size, device=device)


@bench_app.command("gpu-check")
def bench_gpu_check_cmd(
    out: Annotated[Path, typer.Option(help="Folder for gpu-check.json.")],
    device: str = "cuda",
    tiny: Annotated[bool, typer.Option(help="Tiny sizes (the CPU twin that CI runs).")] = False,
    compile_: Annotated[bool, typer.Option("--compile/--no-compile", help="Also time torch.compile.")] = True,
    compile_budget: Annotated[int, typer.Option(help="Seconds the compile phase may take (cut and reported as "
                                                     "such beyond).")] = 240,
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """Composer, both stages (fp32/bf16; ops, kernels, MFU), inference, one category through the stage loops,
    processes per device, torch.compile (bounded) and the projected protocol time."""
    from pfadseg.pipeline.gpu_check import gpu_check

    cfg = _config(params, set_)
    gpu_check(cfg, device=device, out=out, tiny=tiny, compile_=compile_, compile_budget_s=compile_budget)


@bench_app.command("synth")
def bench_synth_cmd(
    batch_size: int = 16,
    image_size: int = 256,
    device: str = "auto",
    images: Annotated[Path | None, typer.Option(
        help="Real training images to decode, e.g. an MVTec <category>/train/good (default: synthetic PNGs).")] = None,
    textures: Annotated[Path | None, typer.Option(
        help="Real textures: <class>/<image> folders such as DTD's images/ (default: synthetic JPEGs).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """Samples/s of the per-sample DeSTSeg-style generator vs the bank + on-device composer."""
    from pfadseg.bench.synth import bench_synth

    bench_synth(_config(params, set_), image_size=image_size, batch_size=batch_size, device=device,
                images_dir=images, textures_dir=textures)


@bench_app.command("models")
def bench_models_cmd(
    batch_size: int = 16,
    image_size: int = 256,
    device: str = "auto",
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """Parameters, GFLOPs and forward time of the DeSTSeg baseline vs PFADSeg."""
    from pfadseg.bench.models import bench_models

    bench_models(_config(params, set_), image_size=image_size, batch_size=batch_size, device=device)


@bench_app.command("metrics")
def bench_metrics_cmd(n_images: int = 160, size: int = 256) -> None:
    """Time of all metrics for one category vs a straightforward per-threshold implementation."""
    from pfadseg.bench.metrics import bench_metrics

    _setup_logging()
    bench_metrics(n_images=n_images, size=size)


@bench_app.command("train")
def bench_train_cmd(
    batch_size: int = 16,
    image_size: int = 256,
    iterations: int = 5,
    device: str = "auto",
    variant: Annotated[list[str] | None, typer.Option(help="destseg or pfadseg (repeatable; default both).")] = None,
    reference: Annotated[bool, typer.Option(help="Also measure the per-parameter form (train.fewer_kernels "
                                                 "false) beside the configured one.")] = True,
    profile: Annotated[bool, typer.Option(help="Also kernels, FLOPs and MFU per step (torch.profiler).")] = False,
    json_: Annotated[Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    set_: SetOpt = None,
) -> None:
    """Iterations/s, ops per step and peak memory of both training stages, DeSTSeg vs PFADSeg."""
    from pfadseg.arch.destseg import BENCH_VARIANTS
    from pfadseg.bench.train import bench_train

    variants = tuple(variant or BENCH_VARIANTS)
    if unknown := [v for v in variants if v not in BENCH_VARIANTS]:
        raise UsageError(f"--variant {unknown[0]}: use one of {', '.join(BENCH_VARIANTS)}")
    results = bench_train(_config(params, set_), image_size=image_size, batch_size=batch_size,
                          iterations=iterations, device=device, reference=reference, profile=profile,
                          variants=variants)
    if json_ is not None:
        from pfadseg.fsio import write_json

        write_json(json_, results)


if __name__ == "__main__":
    app()
