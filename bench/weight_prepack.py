"""Weight prepacking at equal trials: a model's heaviest weight-reading kernels, tuned twice.

`python -m compile --prepack-weights` marks every kernel's constant weights layout-free, so
MetaSchedule's `RewriteLayout` postprocessor may copy them into the tiled layout the schedule
reads, and the build packs them once at compile time. Whether that pays is a question of
schedules at a given budget, not of the idea: one try at 192 trials on a 1x1 conv was slower
(`../shared/TVM-0.27-NOTES.md`). This benchmark takes the `--kernels` kernels of segformer-b0
with the most weighted FLOPs that have a constant weight, tunes each with the same trials and
seed twice into empty databases (plain, and with layout-free weights), then times every best
schedule in interleaved rounds on the embedded device (the packed kernels without their
layout copy, as they run after the compile-time packing), and reports each pair's ratio.

    PYTHONPATH=. python bench/weight_prepack.py [--size 256 --kernels 4 --trials 64 --rounds 6] \\
        [-o bench/results/weight_prepack.json]

Run it alone: tuning and timing use this machine's 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ARMS = ("plain", "prepacked")


def _layout_free(task: Any) -> tuple[int, ...]:
    attrs = task.dispatched[0]["main"].attrs
    return tuple(int(i) for i in attrs["layout_free_buffers"]) if attrs and "layout_free_buffers" in attrs else ()


def paired_tasks(plain: list[Any], packed: list[Any], kernels: int) -> list[tuple[Any, Any]]:
    """The `kernels` packed tasks with a layout-free buffer and the most FLOPs x calls, each with
    the plain task it came from (the same PrimFunc but for the attribute)."""
    import tvm_ffi
    from tvm.s_tir.analysis import estimate_tir_flops

    def work(task: Any) -> float:
        return float(estimate_tir_flops(task.dispatched[0])) * int(task.weight)

    pairs = []
    for task in sorted((t for t in packed if _layout_free(t)), key=work, reverse=True):
        func = task.dispatched[0]["main"]
        twin = next((p for p in plain if tvm_ffi.structural_equal(
            p.dispatched[0]["main"].with_attr("layout_free_buffers", func.attrs["layout_free_buffers"]), func)), None)
        if twin is not None:
            pairs.append((twin, task))
        if len(pairs) == kernels:
            break
    return pairs


def best_schedule(db: Any, task: Any, target: Any) -> Any:
    schedule = db.query_schedule(task.dispatched[0], target, task.task_name)
    if schedule is None:
        raise RuntimeError(f"{task.task_name}: tuning left no valid record")
    return schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="input size (px)")
    parser.add_argument("--kernels", type=int, default=4, help="kernels to compare")
    parser.add_argument("--trials", type=int, default=64, help="trials per kernel and arm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/weight_prepack.json"))
    args = parser.parse_args()

    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    from bench.compile_vs_peers import export_model
    from compile.build import LoweringOptions, lower
    from compile.database import open_database
    from compile.frontend import load_model
    from compile.measure import measure_schedules
    from compile.targets import resolve_target
    from compile.tuning import tune_extracted
    from runner.cli_support import setup_logging
    from runner.farm import LocalFarm
    from runner.machine import write_result

    setup_logging(False)
    preset = resolve_target("host", threads=args.threads)
    target = preset.target()
    load_before, started = os.getloadavg(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeseg-prepack-") as scratch, LocalFarm() as farm:
        scratch = Path(scratch)
        model = load_model(export_model(args.size, scratch), None, scratch)
        extracted = {arm: ms.relax_integration.extract_tasks(
            lower(model.mod, preset, LoweringOptions(prepack_weights=arm == "prepacked")), target) for arm in ARMS}
        pairs = paired_tasks(extracted["plain"], extracted["prepacked"], args.kernels)
        tuning = {arm: 0.0 for arm in ARMS}
        for pair in pairs:
            for arm, task in zip(ARMS, pair):
                tuned_at = time.monotonic()
                tune_extracted([task], preset, lambda: farm.device, scratch / f"db-{arm}", args.trials,
                               seed=args.seed, transfer_candidates=0)
                tuning[arm] += time.monotonic() - tuned_at
        schedules = {arm: [best_schedule(open_database(scratch / f"db-{arm}", target), pair[i], target)
                           for pair in pairs] for i, arm in enumerate(ARMS)}
        seconds: dict[str, list[list[float]]] = {arm: [[] for _ in pairs] for arm in ARMS}
        for r in range(args.rounds):  # interleaved, the order alternating: drift hits both arms alike
            for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
                for k, value in enumerate(measure_schedules(schedules[arm], target, preset, farm.device)):
                    if value is not None:
                        seconds[arm][k].append(value)
    rows = []
    for k, (plain, _packed) in enumerate(pairs):
        flop = float(estimate_tir_flops(plain.dispatched[0]))
        medians = {arm: statistics.median(seconds[arm][k]) for arm in ARMS}
        rows.append({
            "kernel": plain.task_name, "calls": int(plain.weight), "gflop": round(flop / 1e9, 4),
            **{f"{arm}_us": round(medians[arm] * 1e6, 2) for arm in ARMS},
            **{f"{arm}_gflops": round(flop / medians[arm] / 1e9, 1) for arm in ARMS},
            **{f"{arm}_spread": round((max(seconds[arm][k]) - min(seconds[arm][k])) / medians[arm], 3)
               for arm in ARMS},
            "prepacked_over_plain": round(medians["prepacked"] / medians["plain"], 3),
        })  # fmt: skip
    weighted = {arm: sum(r[f"{arm}_us"] * r["calls"] for r in rows) for arm in ARMS}
    result = {
        "what": f"segformer-b0 (150 classes) at {args.size} px: the {len(rows)} weight-reading kernels with the most "
                f"FLOPs x calls, tuned with {args.trials} trials each (seed {args.seed}), plain and with layout-free weights",
        "protocol": f"each best schedule built and timed with tuning's evaluator (mean of >= 20 ms per value) in "
                    f"{args.rounds} interleaved rounds, order alternating; median over rounds; spread = (max - min) "
                    f"/ median; {args.threads} threads; packed kernels timed without their layout copy",
        "rows": rows,
        "tuning_seconds": {arm: round(s, 1) for arm, s in tuning.items()},
        "weighted_total_us": {arm: round(v, 1) for arm, v in weighted.items()},
        "prepacked_over_plain_weighted": round(weighted["prepacked"] / weighted["plain"], 3),
        "prepacked_over_plain_median": round(statistics.median(r["prepacked_over_plain"] for r in rows), 3),
    }  # fmt: skip
    write_result(args.out, result, load_before, started)
    for r in rows:
        arms = "  ".join(f"{arm} {r[f'{arm}_us']:9.1f} us ({r[f'{arm}_gflops']:6.1f} GFLOP/s, spread "
                         f"{r[f'{arm}_spread']:.0%})" for arm in ARMS)
        print(f"{r['kernel']:40s} x{r['calls']} {r['gflop']:7.3f} GFLOP  {arms}  ratio {r['prepacked_over_plain']:.3f}")
    print(f"weighted by calls: prepacked/plain {result['prepacked_over_plain_weighted']:.3f}; median ratio "
          f"{result['prepacked_over_plain_median']:.3f}; {result['protocol']}; wrote {args.out}")


if __name__ == "__main__":
    main()
