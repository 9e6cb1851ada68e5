"""``pfadseg bench gpu-check`` (benchmarks/gpu-check.sh): what a GPU run needs measured, in tables and a JSON.

Composer samples/s; iterations/s, ops and kernels per step of both training stages for DeSTSeg and PFADSeg (fp32,
bf16; each beside its per-parameter form), with the profile of the bf16 steps (kernels, busy %, MFU); inference
images/s at two batch sizes; one category through the real stage functions with each loop's one-off costs; the
aggregate rate of 1, 2 and 4 training processes sharing the device; torch.compile, bounded in time; and the
projected wall time of the full protocol (15 categories x (3,000 student + 4,000 seg iterations) at batch 16) from
the bench's rates and from the stage loops. The JSON is written after each phase. ``tiny`` shrinks every size so
the CPU can run the same code in CI.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pfadseg.arch.destseg import SEG_FILE, STUDENT_FILE
from pfadseg.artifacts import load_model_file
from pfadseg.bench.predict import bench_predict
from pfadseg.bench.synth import bench_synth
from pfadseg.bench.train import bench_train
from pfadseg.config import Config, config_from_dict
from pfadseg.device import resolve_device
from pfadseg.errors import RunError
from pfadseg.fsio import read_json, write_json
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire_images import ACQUIRE_IMAGES
from pfadseg.pipeline.acquire_textures import ACQUIRE_TEXTURES
from pfadseg.pipeline.bank import BANK
from pfadseg.pipeline.calibrate import CALIBRATE
from pfadseg.pipeline.evaluate import EVALUATE
from pfadseg.pipeline.queue import worker_env
from pfadseg.pipeline.train_seg import TRAIN_SEG
from pfadseg.pipeline.train_student import TRAIN_STUDENT
from pfadseg.train.loop import WARMUP_STEPS

PROTOCOL = {"categories": 15, "student_iterations": 3000, "seg_iterations": 4000, "batch_size": 16}
# --tiny: the CI twin's data, bank and schedule (the GPU run keeps params.yaml's at 256 px).
TINY_RUN = ("data.synthetic.n_train=8", "data.synthetic.n_test_good=3", "data.synthetic.n_test_per_defect=2",
            "data.synthetic.n_defect_types=2", "data.procedural_textures.n_classes=2",
            "data.procedural_textures.per_class=3", "bank.n_masks=64", "bank.n_textures=8", "calibrate.n_samples=8",
            "eval.batch_size=8", "train.student.batch_size=4", "train.seg.batch_size=4")


def _with(cfg: Config, *overrides: str) -> Config:
    return config_from_dict(cfg.to_dict(), overrides)


def _one_category(cfg: Config, device: str, image_size: int, iterations: int, precision: str) -> dict[str, Any]:
    """A procedural category through the DVC stage functions (full networks), timed per stage; each training
    stage's one-off costs and steady loop rate as its model file records them."""
    run = _with(cfg, "data.source=synthetic", "data.textures=procedural", "model.teacher_weights=random",
                "data.categories=[carpet]", "seeds=[0]", f"data.image_size={image_size}",
                f"data.synthetic.image_size={image_size}", f"data.procedural_textures.image_size={image_size}",
                f"train.device={device}", f"train.student.iterations={iterations}",
                f"train.seg.iterations={iterations}", f"train.checkpoint_every={iterations + 1}")
    times: dict[str, float] = {}
    loops: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="pfadseg-gpu-check-") as tmp:
        layout = Layout(Path(tmp))
        for stage in (ACQUIRE_IMAGES, ACQUIRE_TEXTURES, BANK):
            stage.invoke(run, layout)
        for stage in (TRAIN_STUDENT, TRAIN_SEG, CALIBRATE, EVALUATE):
            began = time.perf_counter()
            stage.invoke(run, layout, "carpet", 0, **({"progress": False} if stage.arch else {}))
            times[stage.name] = time.perf_counter() - began
        for name, file in (("student", STUDENT_FILE), ("seg", SEG_FILE)):
            meta = load_model_file(layout.model("carpet", 0, file.name), file.format)["meta"]
            loops[name] = {k: meta[k] for k in ("setup_s", "warmup_s", "steady_it_s")}
        metrics = read_json(layout.metrics("carpet", 0))
    return {"image_size": image_size, "iterations": iterations, "precision": precision, "seconds": times,
            "loops": loops, "image_auroc": metrics["seg"]["image_auroc"]}


def projected_protocol_s(student_it_s: float, seg_it_s: float) -> float:
    """Wall time of the full protocol's training at these rates (evaluation excluded)."""
    return PROTOCOL["categories"] * (PROTOCOL["student_iterations"] / student_it_s
                                     + PROTOCOL["seg_iterations"] / seg_it_s)


def projected_from_loops(loops: dict[str, dict[str, Any]]) -> float | None:
    """The protocol's training time from the real stage loops: per category and stage its one-off costs (set-up and
    the warm-up steps) plus the remaining iterations at its steady rate; ``None`` without a steady rate."""
    total = 0.0
    for stage, key in (("student", "student_iterations"), ("seg", "seg_iterations")):
        loop = loops[stage]
        if not loop["steady_it_s"]:
            return None
        total += loop["setup_s"] + loop["warmup_s"] + (PROTOCOL[key] - WARMUP_STEPS - 1) / loop["steady_it_s"]
    return PROTOCOL["categories"] * total


def packing(cfg: Config, device: str, *, image_size: int, batch_size: int, iterations: int,
            processes: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Aggregate PFADSeg it/s of K training processes sharing the device at once, for each K in ``processes``: each
    runs ``pfadseg bench train`` on ``cfg`` (one variant, no reference) with cores / K CPU threads, and the rates of
    the K are summed."""
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pfadseg-packing-") as tmp:
        params = Path(tmp) / "params.yaml"
        params.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        for count in processes:
            outputs = [Path(tmp) / f"k{count}-{i}.json" for i in range(count)]
            command = [sys.executable, "-m", "pfadseg.cli", "bench", "train", "--device", device, "--image-size",
                       str(image_size), "--batch-size", str(batch_size), "--iterations", str(iterations),
                       "--variant", "pfadseg", "--no-reference", "--params", str(params)]
            env = worker_env(count, per_gpu=count)  # on a CPU the K share its cores rather than oversubscribe them
            procs = [subprocess.Popen([*command, "--json", str(out)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, env=env) for out in outputs]
            for proc in procs:
                _, err = proc.communicate()
                if proc.returncode:
                    raise RunError(f"gpu-check packing: a bench process failed: {err.strip()[-2000:]}")
            runs = [read_json(out)["pfadseg"] for out in outputs]
            rows[str(count)] = {stage: sum(r[stage]["it_s"] for r in runs) for stage in ("student", "seg")}
    return rows


class _Budget:
    """A bound on a phase's wall time (POSIX alarm): the phase is cut and reported as not finished."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __enter__(self) -> _Budget:
        def cut(signum: int, frame: Any) -> None:
            raise TimeoutError(f"not finished within {self.seconds} s")

        self.previous = signal.signal(signal.SIGALRM, cut)
        signal.alarm(self.seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


def gpu_check(cfg: Config, *, device: str, out: Path, tiny: bool = False, compile_: bool = True,
              compile_budget_s: int = 240) -> dict[str, Any]:
    """Run every measurement, writing ``out/gpu-check.json`` after each phase (a cut run keeps what it measured);
    print the table; return the figures. The compile phase runs last, bounded by ``compile_budget_s``."""
    dev = resolve_device(device)
    size, batch, steps, infer_batch, stage_iters = (64, 4, 2, 4, 8) if tiny else (256, 16, 20, 64, 300)
    on_cpu = ("train.accelerator_path_on_cpu=true",) if dev.type == "cpu" else ()
    precisions = {"fp32": ("train.amp=false",), "bf16": ("train.amp=true", *on_cpu)}
    if tiny:  # bf16 on a CPU without bf16 units is emulated and slow; the tests cover that path
        precisions.pop("bf16")
    precision = list(precisions)[-1]  # the one the stages, the profile and the packing run in
    results: dict[str, Any] = {"device": str(dev), "tiny": tiny, "image_size": size, "batch_size": batch,
                               "phases_done": []}
    out.mkdir(parents=True, exist_ok=True)

    def done(phase: str) -> None:
        results["phases_done"].append(phase)
        write_json(out / "gpu-check.json", results)

    results["synth"] = bench_synth(cfg, image_size=size, batch_size=batch, device=device,
                                   n_reference=8 if tiny else 64, n_batches=4 if tiny else 24)["groups"]["mvtec_mix"]
    done("synth")
    results["train"] = {}
    for name, overrides in precisions.items():
        results["train"][name] = bench_train(_with(cfg, *overrides, "train.compile=false"), image_size=size,
                                             batch_size=batch, iterations=steps, device=device,
                                             profile=name == precision)
        done(f"train {name}")
    fastest = results["train"][precision]["pfadseg"]
    results["projected_protocol_s"] = projected_protocol_s(fastest["student"]["it_s"], fastest["seg"]["it_s"])
    results["predict"] = bench_predict(_with(cfg, *on_cpu), image_size=size, device=device,
                                       batch_sizes=(1, infer_batch), amp_modes=("fp32", "bf16"),
                                       repeats=1 if tiny else 5)["rows"]
    done("predict")
    one = results["one_category"] = _one_category(_with(cfg, *precisions[precision], *(TINY_RUN if tiny else ())),
                                                  device, size, stage_iters, precision)
    one["loop_vs_bench"] = {stage: (one["loops"][stage]["steady_it_s"] or 0) / fastest[stage]["it_s"]
                            for stage in ("student", "seg")}
    results["projected_from_loops_s"] = projected_from_loops(one["loops"])
    done("one category")
    results["packing"] = packing(_with(cfg, *precisions[precision]), device, image_size=size, batch_size=batch,
                                 iterations=steps if tiny else 40, processes=(1, 2) if tiny else (1, 2, 4))
    done("packing")
    if compile_:  # one variant, bounded: inductor's first compile of a network takes minutes
        overrides = (*precisions[precision], "train.compile=true")
        try:
            with _Budget(compile_budget_s):
                results["compile"] = bench_train(_with(cfg, *overrides), image_size=size, batch_size=batch,
                                                 iterations=steps, device=device, reference=False,
                                                 variants=("pfadseg",))
        except TimeoutError as exc:
            results["compile"] = {"finished": False, "why": str(exc)}
        done("compile")
    print(render_table(results))
    return results


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _training_rows(name: str, run: dict[str, Any]) -> list[str]:
    rows = []
    for variant, r in ((v, r) for v, r in run.items() if isinstance(r, dict)):
        student, seg = r["student"], r["seg"]
        rows.append(f"| {name} | {variant} | {student['it_s']:.2f} | {seg['it_s']:.2f} | {_num(student['ops'])} / "
                    f"{_num(student['kernel_ops'])} | {_num(seg['ops'])} / {_num(seg['kernel_ops'])} | "
                    f"{student['warmup_s']:.1f} / {seg['warmup_s']:.1f} | {_num(student['peak_mb'])} / "
                    f"{_num(seg['peak_mb'])} |")
    return rows


def _profile_lines(name: str, run: dict[str, Any]) -> list[str]:
    lines = []
    for variant, r in ((v, r) for v, r in run.items() if isinstance(r, dict)):
        for stage in ("student", "seg"):
            if prof := r[stage].get("profile"):
                lines.append(f"- {name} {variant} {stage}: {prof['kernels_per_step']:,.0f} kernels/step, "
                             f"{prof['kernel_ms_per_step']:.1f} ms of kernels in {prof['wall_ms_per_step']:.1f} ms "
                             f"(busy {_num(prof['busy_pct'])} %), {r[stage]['gflop_per_step']:,.1f} GFLOP/step, MFU "
                             f"{r[stage]['mfu_pct']:.1f} %; top: "
                             + ", ".join(f"{t['name']} {t['ms_per_step']:.2f} ms x{t['calls_per_step']:.0f}"
                                         for t in prof["top"][:5]))
    return lines


def render_table(results: dict[str, Any]) -> str:
    """The check's tables, and the projected protocol times on lines of their own."""
    tiny = " (tiny sizes: not a projection of the real protocol)" if results["tiny"] else ""
    lines = [f"## gpu-check: {results['device']}, {results['image_size']} px, batch {results['batch_size']}"
             f"{' (tiny sizes)' if results['tiny'] else ''}", "",
             f"composer (MVTec mix): {results['synth']['composer_samples_per_s']:,.0f} samples/s", "",
             "| training | variant | student it/s | seg it/s | student ops / kernels per step | seg ops / kernels "
             "| warm-up s (student / seg) | peak MiB (student / seg) |", "|---|---|---|---|---|---|---|---|"]
    for name, run in results["train"].items():
        lines += _training_rows(name, run)
    for name, run in results["train"].items():
        if (peak := run.get("peak_tflop_s")) is not None:
            lines += ["", f"where a step's time goes ({name}; MFU against a measured matmul peak of {peak:,.1f} "
                      "TFLOP/s):", *_profile_lines(name, run)]
    lines += ["", "| inference | variant | batch | images/s |", "|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['variant']} | {r['batch_size']} | {r['images_per_s']:,.1f} |"
              for r in results["predict"]]
    one = results["one_category"]
    lines += ["", f"one category through the stages ({one['iterations']} iterations each, {one['precision']}): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in one["seconds"].items())
              + f"; image AUROC {one['image_auroc']:.3f} (random teacher)"]
    for stage, loop in one["loops"].items():
        lines.append(f"- {stage} loop: set-up {loop['setup_s']:.1f} s, first {WARMUP_STEPS + 1} steps "
                     f"{loop['warmup_s']:.1f} s, then {_num(loop['steady_it_s'], 2)} it/s = "
                     f"{100 * one['loop_vs_bench'][stage]:.0f} % of the bench's step rate")
    lines += ["", "| processes on the device | PFADSeg student it/s (sum) | seg it/s (sum) |", "|---|---|---|"]
    lines += [f"| {k} | {r['student']:.2f} | {r['seg']:.2f} |" for k, r in results["packing"].items()]
    if "compile" in results:
        run = results["compile"]
        if run.get("finished") is False:
            lines += ["", f"compile: {run['why']} (reported as such; the other figures stand)"]
        else:
            lines += ["", "| compiled | variant | student it/s | seg it/s | student ops / kernels per step | seg ops "
                      "/ kernels | compile + warm-up s (student / seg) | peak MiB (student / seg) |",
                      "|---|---|---|---|---|---|---|---|", *_training_rows("compile", run)]
    loops = results["projected_from_loops_s"]
    lines += ["", f"projected full protocol (15 categories x (3,000 + 4,000) iterations) from the bench's step rates: "
              f"{results['projected_protocol_s'] / 60:.1f} min{tiny}",
              f"projected full protocol from the stage loops (one-off costs included): "
              f"{'n/a' if loops is None else f'{loops / 60:.1f} min'}{tiny}"]
    return "\n".join(lines)
