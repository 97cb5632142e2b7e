"""The lab's probes on the shipped shapes model (CPU, about an hour): when it decides motion,
colour and background, and where each bundled subject's module does its harm and its good.

1. The commitment probe (``customcrafter probe commitment --base shapes``) on two seed sets:
   seed 0 chooses ``k`` (the step by which motion is decided), seed 1 checks the curve; and
   once more on seed 0 with the deterministic sampler (eta 0 instead of the model's 1.0).
2. For every bundled subject, a module trained with the demo's recipe, then the band probe
   on seed 1: the module in one band of ten steps only, beside the base model, the module at
   every step, the paper's schedule, DWVS with the probe's ``k`` and the whole module (token
   and LoRA) held back for the probe's ``k`` steps (not in the paper).

    python benchmarks/lab_probes.py --out docs/results/lab
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from customcrafter.io.files import atomic_path, write_json
from customcrafter.probe import bands, commitment
from customcrafter.probe.commitment import CurvePoint, crossing
from customcrafter.probe.plot import plot_bands, plot_commitment
from customcrafter.probe.scoring import wilson
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.shapes.customize import moving_prompts, subject_train_config
from customcrafter.shapes.world import SUBJECTS, reference_images
from customcrafter.training import train

GRID = [0, 2, 5, 8, 12, 16, 20, 25, 30, 35, 40, 50]
ETA_GRID = [0, 2, 5, 8, 12, 16, 20, 25, 30, 40, 50]  # the deterministic sampler, one seed set
CHOOSE_SEED, REPORT_SEED = 0, 1


def pooled(results: list[dict]) -> dict:
    """The seed sets' curves added up, with intervals over all their clips."""
    data = dict(results[0], seed=[r["seed"] for r in results])
    data["samples"] = sum(r["samples"] for r in results)
    data["curves"], data["decided"] = {}, {}
    for attribute, points in results[0]["curves"].items():
        merged = []
        for i, point in enumerate(points):
            first = sum(r["curves"][attribute][i]["first"] for r in results)
            then = sum(r["curves"][attribute][i]["then"] for r in results)
            neither = sum(r["curves"][attribute][i]["neither"] for r in results)
            share = first / (first + then) if first + then else None
            low, high = wilson(first, first + then)
            merged.append(CurvePoint(point["switch_step"], first, then, neither, share, low, high))
        data["curves"][attribute] = [vars(p) for p in merged]
        data["decided"][attribute] = crossing(merged)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/lab"))
    parser.add_argument("--samples", type=int, default=4, help="noises per prompt pair")
    parser.add_argument("--subjects", default=",".join(SUBJECTS))
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args()
    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    pipe = CustomCrafterPipeline.from_pretrained("shapes")

    def probe(seed: int, eta: float | None = None) -> dict:
        stem = f"commitment-seed{seed}" if eta is None else f"commitment-eta{eta:g}-seed{seed}"
        path = args.out / f"{stem}.json"
        if path.is_file():
            data = json.loads(path.read_text())
        else:
            t = time.perf_counter()
            grid, settings = (GRID, {}) if eta is None else (ETA_GRID, {"eta": eta})
            result = commitment(
                pipe, switch_steps=grid, samples=args.samples, seed=seed, **settings
            )
            data = dict(result.as_dict(), seconds=round(time.perf_counter() - t))
            write_json(path, data)
        plot_commitment(data, args.out / stem)
        print(f"seed {seed}: decided {data['decided']}, suggested k {data['suggested_k']}")
        return data

    chosen = probe(CHOOSE_SEED)
    k = chosen["suggested_k"]
    if k is None:
        raise SystemExit("motion never crosses one half on the choosing seed: no k to test")

    extra = {
        f"DWVS 0.4/0.8, k={k} (k from the probe)": DynamicWeightSchedule(0.4, 0.8, k),
        f"whole module held back, k={k} (not in the paper)": DynamicWeightSchedule(
            0.0, 0.8, k, delay_token=True
        ),
    }
    tables = []
    for name in args.subjects.split(","):
        subject = SUBJECTS[name]
        path = args.out / f"bands-{name}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            tables.append(f"### {name}\n\n{(args.out / f'bands-{name}.md').read_text()}")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = train(subject_train_config(name, tmp, steps=args.train_steps))
            module_pipe = CustomCrafterPipeline.from_pretrained(subject=folder)
            result = bands(
                module_pipe,
                moving_prompts(subject.class_word),
                reference_images(subject),
                samples=args.samples,
                seed=REPORT_SEED,
                extra=extra,
            )
        data = result.as_dict()
        write_json(path, data)
        with atomic_path(args.out / f"bands-{name}.md") as tmp_md:
            tmp_md.write_text(result.table() + "\n")
        plot_bands(data, args.out / f"bands-{name}")
        tables.append(f"### {name}\n\n{result.table()}\n")
        print(f"\n{name}\n{result.table()}")
    with atomic_path(args.out / "bands.md") as tmp:
        tmp.write_text("\n".join(tables))
    # the second seed set last: the curve checked on noises k was not chosen on
    write_json(args.out / "commitment.json", pooled([chosen, probe(REPORT_SEED)]))
    probe(CHOOSE_SEED, eta=0.0)  # does a deterministic sampler decide motion earlier?
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
