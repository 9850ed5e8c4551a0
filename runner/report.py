"""Plain-text tables of `runner`'s results, for the terminal (the CLI prints them)."""

from __future__ import annotations

from typing import Sequence

from runner.bench import EMULATED_NOTE, BenchResult
from runner.kernels import KernelTable
from runner.session import DeviceQueue


def render_bench(result: BenchResult) -> str:
    """The benchmark as a short report: what ran where, the check, latency statistics, FPS."""
    timing = result.timing
    threads = f"{result.threads} thread(s)"
    if result.threads_requested is not None and result.threads_requested != result.threads:
        threads += f" ({result.threads_requested} requested)"
    lines = []
    if result.emulated:
        lines.append(f"*** EMULATED: {EMULATED_NOTE} ***")
    lines += [
        f"artifact  {result.artifact}",
        f"target    {result.target_preset} ({result.target_arch}, {result.device_type})",
        f"device    {result.device_key} at {result.tracker}, {threads}"
        + (" [emulated]" if result.emulated else ""),
    ]
    if result.check is not None:
        check = result.check
        lines.append(
            f"check     {'passed' if check.passed else 'FAILED'}: max abs error "
            f"{check.max_abs_error:.3g}, max rel error {check.max_rel_error:.3g} "
            f"(atol {check.atol:g}, rtol {check.rtol:g})"
        )
    lines += [
        f"measured  {result.protocol.describe()}",
        "",
        _table(
            ["", "mean", "median", "std", "p90", "min", "max", "runs", "FPS"],
            [[
                "latency ms" + (" (emulated)" if result.emulated else ""),
                *map(_number, (timing.mean_ms, timing.median_ms, timing.std_ms,
                               timing.p90_ms, timing.min_ms, timing.max_ms)),
                str(timing.runs), _number(timing.fps),
            ]],
        ),  # fmt: skip
        f"FPS = 1000 / median latency = {_number(timing.fps)}"
        + (" (emulated, not a device figure)" if result.emulated else ""),
    ]
    if result.baseline is not None:
        base = result.baseline
        lines += [f"baseline  {base.artifact}: median {_number(base.timing.median_ms)} ms, timed in turns with it",
                  f"ratio     {base.ratio:.4f} (benched / baseline: the median of {len(base.ratios)} rounds' ratios, "
                  f"their IQR {100 * base.ratio_spread:.1f}% of it)"]
    if result.kernels is not None:
        lines += ["", render_kernels(result.kernels, result.emulated)]
    return "\n".join(lines)


def render_kernels(table: KernelTable, emulated: bool = False) -> str:
    """Per-kernel table, most expensive first, with the sum against the end-to-end median."""
    rows = [
        [row.name, str(row.calls), _number(row.timing.median_ms), _number(row.total_ms),
         f"{100 * table.share(row):.1f}%", "yes" if row.tuned else "NO"]
        for row in table.rows
    ]  # fmt: skip
    ratio = table.sum_ms / table.end_to_end_ms if table.end_to_end_ms > 0 else float("nan")
    title = "per-kernel times" + (" (emulated, not device figures)" if emulated else "")
    untuned = sum(not row.tuned for row in table.rows)
    lines = [
        title,
        _table(["kernel", "calls", "median ms", "calls x ms", "share", "tuned"], rows),
        f"sum of kernels {_number(table.sum_ms)} ms vs end-to-end median "
        f"{_number(table.end_to_end_ms)} ms "
        f"({100 * ratio:.0f}%)",
    ]
    if untuned:
        lines.append(f"{untuned} of {len(table.rows)} kernel(s) have no tuned schedule")
    return "\n".join(lines)


def render_devices(queues: Sequence[DeviceQueue], tracker: str) -> str:
    """The keys a tracker knows, with free and pending counts."""
    if not queues:
        return f"no devices registered at tracker {tracker}"
    rows = [[q.key, str(q.servers), str(q.free), str(q.pending)] for q in queues]
    return f"tracker {tracker}\n" + _table(["key", "servers", "free", "pending"], rows)


def _number(value: float) -> str:
    """Four significant digits without exponents: 0.04271, 12.35, 23,410."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if abs(value) >= 1e-4 else f"{value:.2e}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    return "\n".join([line(header), *map(line, rows)])
