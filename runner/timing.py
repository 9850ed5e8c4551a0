"""The one timing protocol of edgeseg: how a function is timed on a device, and the statistics.

Everything runs on the device through TVM's time_evaluator, so the clock is the device's own
and no network round trip is timed. `warmup` calls are timed and thrown away first (caches,
lazy allocation, CPU frequency ramp-up); then `repeat` samples, each the mean of `number` calls
(more when a repeat takes less than `min_repeat_ms`), with `cooldown_ms` of rest between
samples (thermal throttling on phones). `latency_model` times single layers with this too, and
benchmarks time host-side peers (ONNX Runtime, PyTorch) with `time_callable` by the same rules.
A timing whose samples spread by more than `max_spread` (interquartile range over the median)
is not a figure: `latency_model collect` times it again, then records it as noisy.

A shared machine (and a phone that heats up) changes speed over seconds and minutes, and every
kernel slows together: `rounds` spreads the samples over rounds taken in turns with whatever is
timed beside (a batch of layers, a baseline), and `drift_reference` times the device's drift
reference in every round and scales each round's samples by its nominal over its time in that
round (`runner.drift`), so figures taken minutes or days apart share one unit. A session is a
process of its own on the device, with its own memory layout and thread placement, and the
same layer measured in two sessions a second apart differed by up to 30%: `sessions` spreads
the rounds over that many sessions, so a figure is a median over several of them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

from runner.errors import EdgesegError


@dataclass(frozen=True)
class TimingProtocol:
    """How to time: warm-up calls, samples, calls per sample, rest between samples, and the
    spread above which a timing is noisy. Samples last at least 10 ms by default, for a layer of
    tens of microseconds and a whole network alike: one protocol, so that the layers a predictor
    learns from and the network it predicts are measured the same way."""

    warmup: int = 3
    repeat: int = 20
    number: int = 1
    min_repeat_ms: int = 10
    cooldown_ms: int = 0
    max_spread: float = 0.25
    rounds: int = 1
    drift_reference: bool = False
    sessions: int = 1

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeat < 1 or self.number < 1:
            raise EdgesegError(
                f"timing protocol {self} is not usable: warmup must be >= 0 and repeat and "
                "number >= 1.",
                "Pass --warmup 0 or more and --repeat 1 or more.",
            )
        if self.min_repeat_ms < 0 or self.cooldown_ms < 0:
            raise EdgesegError(f"timing protocol {self} has a negative duration.",
                               "Pass --min-repeat-ms and --cooldown-ms as 0 or more.")  # fmt: skip
        if not 1 <= self.rounds <= self.repeat:
            raise EdgesegError(f"timing protocol {self} takes {self.repeat} samples in {self.rounds} rounds.",
                               "Pass --timing-rounds between 1 and --repeat (a round takes one sample or more).")
        if not 1 <= self.sessions <= self.rounds:
            raise EdgesegError(f"timing protocol {self} spreads {self.rounds} rounds over {self.sessions} sessions.",
                               "Pass --timing-sessions between 1 and --timing-rounds (a session takes a round or more).")
        if not self.max_spread > 0:
            raise EdgesegError(f"timing protocol {self} has a spread limit of {self.max_spread}.",
                               "Pass a positive limit, e.g. 0.25 (interquartile range / median).")

    def is_noisy(self, timing: "Timing") -> bool:
        return timing.spread > self.max_spread

    def describe(self) -> str:
        """One line for reports: how the numbers were taken."""
        text = (f"{self.warmup} warm-up call(s) discarded, then {self.repeat} samples of "
                f"{self.number} call(s) each")  # fmt: skip
        if self.min_repeat_ms:
            text += f" (at least {self.min_repeat_ms} ms per sample)"
        if self.cooldown_ms:
            text += f", {self.cooldown_ms} ms cool-down between samples"
        if self.rounds > 1:
            text += f", in {self.rounds} rounds taken in turns with what is timed beside"
        if self.sessions > 1:
            text += f", spread over {self.sessions} RPC sessions"
        if self.drift_reference:
            text += ", each round's samples scaled by the drift reference's nominal over its time in that round"
        return text + "; timed on the device's own clock (TVM time_evaluator)"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Timing:
    """Latency samples in milliseconds (each the mean of the protocol's calls per sample)."""

    samples_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples_ms:
            raise ValueError("a Timing needs at least one sample")

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.samples_ms))

    @property
    def mean_ms(self) -> float:
        return float(statistics.fmean(self.samples_ms))

    @property
    def std_ms(self) -> float:
        """Sample standard deviation (0 for a single sample)."""
        return float(statistics.stdev(self.samples_ms)) if self.runs > 1 else 0.0

    @property
    def p90_ms(self) -> float:
        return self._percentile(90)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)

    @property
    def spread(self) -> float:
        """Interquartile range over the median: how far apart the samples are (0 for one sample)."""
        q1, q3 = self._percentile(25), self._percentile(75)
        return float((q3 - q1) / self.median_ms) if self.median_ms > 0 else 0.0

    def _percentile(self, q: float) -> float:
        """numpy's default (linear) percentile, in the standard library: `--help` of every command
        that times stays free of numpy."""
        ordered = sorted(self.samples_ms)
        position = (len(ordered) - 1) * q / 100
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    @property
    def runs(self) -> int:
        """Number of timed samples (warm-up calls not counted)."""
        return len(self.samples_ms)

    @property
    def fps(self) -> float:
        """Frames per second at the median latency."""
        return 1000.0 / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        return {
            "fps": self.fps, "median_ms": self.median_ms, "mean_ms": self.mean_ms,
            "std_ms": self.std_ms, "p90_ms": self.p90_ms, "min_ms": self.min_ms,
            "max_ms": self.max_ms, "runs": self.runs, "samples_ms": list(self.samples_ms),
        }  # fmt: skip


def time_function(
    module: Any, func_name: str, dev: Any, args: Sequence[Any], protocol: TimingProtocol
) -> Timing:
    """Time `module[func_name](*args)` on `dev` with `protocol`.

    `module` is anything with TVM's `time_evaluator` (a remote runtime Module, a Relax
    VirtualMachine: time `"invoke_stateful"` with args `("main",)` after `set_input`).
    """
    if protocol.warmup:
        module.time_evaluator(func_name, dev, number=1, repeat=protocol.warmup)(*args)
    result = module.time_evaluator(
        func_name,
        dev,
        number=protocol.number,
        repeat=protocol.repeat,
        min_repeat_ms=protocol.min_repeat_ms,
        cooldown_interval_ms=protocol.cooldown_ms,
    )(*args)
    return Timing(tuple(float(seconds) * 1000.0 for seconds in result.results))


def time_round_robin(machines: Sequence[Any], dev: Any, protocol: TimingProtocol, rounds: int) -> list[list[Timing]]:
    """Relax VMs (inputs set) timed in turns: each warmed up, then `rounds` rounds in which each
    takes its share of the protocol's samples (repeat / rounds, rounded up) one after the other.
    Per machine, its Timing of every round: a drift of the device's speed meets all of them
    alike within a round."""
    warm = replace(protocol, repeat=1, rounds=1, sessions=1, drift_reference=False)
    share = replace(protocol, warmup=0, repeat=-(-protocol.repeat // rounds), rounds=1, sessions=1,
                    drift_reference=False)
    for machine in machines:
        time_function(machine, "invoke_stateful", dev, ("main",), warm)
    timings: list[list[Timing]] = [[] for _ in machines]
    for _ in range(rounds):
        for machine, own in zip(machines, timings):
            own.append(time_function(machine, "invoke_stateful", dev, ("main",), share))
    return timings


def time_callable(fn: Callable[[], Any], protocol: TimingProtocol) -> Timing:
    """Time a call in this process (ONNX Runtime, PyTorch) with the same protocol as a device.

    As TVM's time_evaluator: warm-up calls are discarded, each sample is the mean of `number`
    calls (more when a sample is shorter than `min_repeat_ms`), `cooldown_ms` rest between samples.
    """
    for _ in range(protocol.warmup):
        fn()
    samples = []
    for _ in range(protocol.repeat):
        calls, start = 0, time.perf_counter()
        while True:
            for _ in range(protocol.number):
                fn()
            calls += protocol.number
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            if elapsed_ms >= protocol.min_repeat_ms:
                break
        samples.append(elapsed_ms / calls)
        if protocol.cooldown_ms:
            time.sleep(protocol.cooldown_ms / 1000.0)
    return Timing(tuple(samples))
