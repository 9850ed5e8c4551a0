"""What every edgeseg command line shares: logging set-up, whole-number flags, and turning errors
into exit codes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any, Callable

from runner.errors import EdgesegError
from runner.timing import TimingProtocol


def number_in(kind: type, low: float, *, above: bool = False, below: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a `kind` (int or float) >= `low` (> `low` with `above`), and < `below` if given."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not (value > low if above else value >= low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if above else '>='} {low:g}")
        if below is not None and not value < below:
            raise argparse.ArgumentTypeError(f"{text} must be < {below:g}")
        return value

    return parse


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (counts, trials, runs)."""
    return number_in(int, minimum)


DRIFT_SESSIONS = 5  # `latency_model collect/validate`: sessions a figure spans (bench/results, repeatability)


def add_timing_flags(parser: argparse.ArgumentParser, drift: bool = False) -> None:
    """The timing protocol's flags, one set for every command that times (`runner bench`,
    `latency_model collect/validate`): layers and networks are measured by the same rules.
    `drift`: the command times beside the device's drift reference (`runner.drift`), in rounds."""
    default = TimingProtocol()
    if drift:
        parser.add_argument("--timing-rounds", type=whole_number(1), default=None,
                            help="take the samples in this many rounds, in turns with the other layers of a batch "
                            "and the device's drift reference (default: --repeat, one sample a round)")
        parser.add_argument("--timing-sessions", type=whole_number(1), default=None,
                            help="spread the rounds over this many RPC sessions, each a process of its own on the "
                            f"device with its own memory layout and thread placement (default {DRIFT_SESSIONS}, "
                            "at most the rounds)")
        parser.add_argument("--no-drift-reference", dest="drift_reference", action="store_false",
                            help="do not scale samples by the device's drift reference (raw times; a predictor "
                            "learns from one kind only)")
    parser.add_argument("--warmup", type=whole_number(0), default=default.warmup, help="discarded warm-up runs")
    parser.add_argument("--repeat", type=whole_number(1), default=default.repeat, help="timed samples")
    parser.add_argument("--number", type=whole_number(1), default=default.number, help="runs per sample")
    parser.add_argument("--min-repeat-ms", type=whole_number(0), default=default.min_repeat_ms,
                        help="raise the runs per sample until a sample lasts this long (a kernel of a few "
                        "microseconds is otherwise timer noise) (default %(default)s)")
    parser.add_argument("--cooldown-ms", type=whole_number(0), default=default.cooldown_ms,
                        help="rest between samples (thermal throttling)")


def timing_protocol(args: argparse.Namespace) -> TimingProtocol:
    """The protocol of the flags `add_timing_flags` added."""
    rounds = getattr(args, "timing_rounds", 1) or args.repeat
    sessions = getattr(args, "timing_sessions", 1) or min(DRIFT_SESSIONS, rounds)
    return TimingProtocol(warmup=args.warmup, repeat=args.repeat, number=args.number,
                          min_repeat_ms=args.min_repeat_ms, cooldown_ms=args.cooldown_ms, rounds=rounds, sessions=sessions,
                          drift_reference=getattr(args, "drift_reference", False))


def setup_logging(verbose: bool) -> None:
    """Configure logging once, for the command line only (libraries just log)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # TVM's own loggers are chatty at INFO (one line per RPC request, per tuning round).
    for noisy in ("tvm.rpc", "RPCServer", "RPCTracker", "tvm.s_tir.meta_schedule"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def run_main(body: Callable[[], int], verbose: bool) -> int:
    """Run a command's body; print an `EdgesegError` as one paragraph and return its exit code.

    SIGTERM unwinds like Ctrl-C, so a command's embedded farm (tracker, servers, workers in
    their own process groups) is stopped by its clean-up instead of being orphaned."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)
    try:
        return body()
    except EdgesegError as err:
        if verbose:
            logging.getLogger(__name__).exception("failed")
        print(f"error: {err.problem}", file=sys.stderr)
        if err.fix:
            print(f"  fix: {err.fix}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: unwind once through the clean-up, ignoring repeats meanwhile."""
    for repeated in (signal.SIGINT, signal.SIGTERM):
        signal.signal(repeated, signal.SIG_IGN)
    raise KeyboardInterrupt
