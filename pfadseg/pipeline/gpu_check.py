"""``pfadseg bench gpu-check`` (benchmarks/gpu-check.sh): what a GPU run needs measured, in one table and a JSON.

Composer samples/s, iterations/s of both training stages for DeSTSeg and PFADSeg (fp32, bf16, bf16 compiled),
inference images/s at two batch sizes, peak memory, one category through the real stage functions, and the
projected wall time of the full protocol (15 categories x (3,000 student + 4,000 seg iterations) at batch 16)
from the measured rates. ``tiny`` shrinks every size so the CPU can run the same code in CI.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from pfadseg.bench.predict import bench_predict
from pfadseg.bench.synth import bench_synth
from pfadseg.bench.train import bench_train
from pfadseg.config import Config, config_from_dict
from pfadseg.device import resolve_device
from pfadseg.fsio import read_json, write_json
from pfadseg.paths import Layout
from pfadseg.pipeline.acquire import ACQUIRE_IMAGES, ACQUIRE_TEXTURES
from pfadseg.pipeline.bank import BANK
from pfadseg.pipeline.calibrate import CALIBRATE
from pfadseg.pipeline.destseg import TRAIN_SEG, TRAIN_STUDENT
from pfadseg.pipeline.evaluate import EVALUATE

PROTOCOL = {"categories": 15, "student_iterations": 3000, "seg_iterations": 4000, "batch_size": 16}
# --tiny: the CI twin's data, bank and schedule (the GPU run keeps params.yaml's at 256 px).
TINY_RUN = ("data.synthetic.n_train=8", "data.synthetic.n_test_good=3", "data.synthetic.n_test_per_defect=2",
            "data.synthetic.n_defect_types=2", "data.procedural_textures.n_classes=2",
            "data.procedural_textures.per_class=3", "bank.n_masks=64", "bank.n_textures=8", "calibrate.n_samples=8",
            "eval.batch_size=8", "train.student.batch_size=4", "train.seg.batch_size=4")


def _with(cfg: Config, *overrides: str) -> Config:
    return config_from_dict(cfg.to_dict(), overrides)


def _one_category(cfg: Config, device: str, image_size: int, iterations: int, precision: str) -> dict[str, Any]:
    """A procedural category through the DVC stage functions (full networks), timed per stage."""
    run = _with(cfg, "data.source=synthetic", "data.textures=procedural", "model.teacher_weights=random",
                "data.categories=[carpet]", "seeds=[0]", f"data.image_size={image_size}",
                f"data.synthetic.image_size={image_size}", f"data.procedural_textures.image_size={image_size}",
                f"train.device={device}", f"train.student.iterations={iterations}",
                f"train.seg.iterations={iterations}", f"train.checkpoint_every={iterations + 1}")
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pfadseg-gpu-check-") as tmp:
        layout = Layout(Path(tmp))
        for stage in (ACQUIRE_IMAGES, ACQUIRE_TEXTURES, BANK):
            stage.invoke(run, layout)
        for stage in (TRAIN_STUDENT, TRAIN_SEG, CALIBRATE, EVALUATE):
            began = time.perf_counter()
            stage.invoke(run, layout, "carpet", 0, **({"progress": False} if stage.arch else {}))
            times[stage.name] = time.perf_counter() - began
        metrics = read_json(layout.metrics("carpet", 0))
    return {"image_size": image_size, "iterations": iterations, "precision": precision, "seconds": times,
            "student_it_s": iterations / times["train_student"], "seg_it_s": iterations / times["train_seg"],
            "image_auroc": metrics["seg"]["image_auroc"]}


def projected_protocol_s(student_it_s: float, seg_it_s: float) -> float:
    """Wall time of the full protocol's training at these rates (evaluation excluded)."""
    return PROTOCOL["categories"] * (PROTOCOL["student_iterations"] / student_it_s
                                     + PROTOCOL["seg_iterations"] / seg_it_s)


def gpu_check(cfg: Config, *, device: str, out: Path, tiny: bool = False, compile_: bool = True) -> dict[str, Any]:
    """Run every measurement, print the table, write ``out/gpu-check.json``; return the figures."""
    dev = resolve_device(device)
    size, batch, steps, infer_batch, stage_iters = (64, 4, 2, 4, 4) if tiny else (256, 16, 20, 64, 300)
    on_cpu = ("train.accelerator_path_on_cpu=true",) if dev.type == "cpu" else ()
    precisions = {"fp32": ("train.amp=false",), "bf16": ("train.amp=true", *on_cpu)}
    if tiny:  # bf16 on a CPU without bf16 units is emulated and slow; the tests cover that path
        precisions.pop("bf16")
    results: dict[str, Any] = {"device": str(dev), "tiny": tiny, "image_size": size, "batch_size": batch}
    results["synth"] = bench_synth(cfg, image_size=size, batch_size=batch, device=device,
                                   n_reference=8 if tiny else 64, n_batches=4 if tiny else 24)["groups"]["mvtec_mix"]
    modes = {name: (*overrides, "train.compile=false") for name, overrides in precisions.items()}
    if compile_:  # compiled in the mode a GPU run uses (each compile takes a minute or more)
        modes[f"{list(precisions)[-1]}+compile"] = (*precisions[list(precisions)[-1]], "train.compile=true")
    results["train"] = {name: bench_train(_with(cfg, *overrides), image_size=size, batch_size=batch,
                                          iterations=steps, device=device) for name, overrides in modes.items()}
    results["predict"] = bench_predict(_with(cfg, *on_cpu), image_size=size, device=device,
                                       batch_sizes=(1, infer_batch), amp_modes=("fp32", "bf16"),
                                       repeats=1 if tiny else 5)["rows"]
    precision = list(precisions)[-1]
    results["one_category"] = _one_category(_with(cfg, *precisions[precision], *(TINY_RUN if tiny else ())), device,
                                            size, stage_iters, precision)
    best = max(results["train"].values(),
               key=lambda r: 1 / (1 / r["pfadseg"]["student_it_s"] + 1 / r["pfadseg"]["seg_it_s"]))
    results["projected_protocol_s"] = projected_protocol_s(best["pfadseg"]["student_it_s"],
                                                           best["pfadseg"]["seg_it_s"])
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gpu-check.json", results)
    print(render_table(results))
    return results


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def render_table(results: dict[str, Any]) -> str:
    """The one table of the check, and the projected protocol time on a line of its own."""
    lines = [f"## gpu-check: {results['device']}, {results['image_size']} px, batch {results['batch_size']}"
             f"{' (tiny sizes)' if results['tiny'] else ''}", "",
             f"composer (MVTec mix): {results['synth']['composer_samples_per_s']:,.0f} samples/s", "",
             "| training | variant | student it/s | seg it/s | student peak MiB | seg peak MiB |",
             "|---|---|---|---|---|---|"]
    for key, run in results["train"].items():
        for variant in ("destseg", "pfadseg"):
            r = run[variant]
            lines.append(f"| {key} | {variant} | {r['student_it_s']:.2f} | {r['seg_it_s']:.2f} | "
                         f"{_mb(r['student_peak_mb'])} | {_mb(r['seg_peak_mb'])} |")
    lines += ["", "| inference | variant | batch | images/s |", "|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['variant']} | {r['batch_size']} | {r['images_per_s']:,.1f} |"
              for r in results["predict"]]
    one = results["one_category"]
    lines += ["", f"one category through the stages ({one['iterations']} iterations each, {one['precision']}): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in one["seconds"].items())
              + f"; image AUROC {one['image_auroc']:.3f} (random teacher)", "",
              f"projected full protocol (15 categories x (3,000 + 4,000) iterations, fastest training mode): "
              f"{results['projected_protocol_s'] / 60:.1f} min"
              f"{' (tiny sizes: not a projection of the real protocol)' if results['tiny'] else ''}"]
    return "\n".join(lines)

