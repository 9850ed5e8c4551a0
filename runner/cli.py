"""`python -m runner`: serve a device farm, list devices, benchmark an artifact.

Parses, makes one keyword call into the library, renders. Heavy modules (TVM, numpy) are
imported only inside a command, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from runner.cli_support import add_timing_flags, run_main, setup_logging, timing_protocol, whole_number
from runner.device import DEFAULT_TRACKER_PORT, HOST_KEY, Tracker

if TYPE_CHECKING:
    from runner.farm import LocalFarm

EMULATE_CHOICES = ("aarch64",)
HELP = {
    "tracker": "TVM RPC tracker as HOST:PORT",
    "key": "device key the servers register under",
    "emulate": "serve TVM's aarch64 RPC server under QEMU (key emu-arm64; correctness only, "
    "its timings are not device figures)",
    "verbose": "debug logging and tracebacks",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runner", description="TVM RPC device farm and on-device benchmarks."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", help=HELP["verbose"])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run a tracker and RPC servers "
                                "of this machine until Ctrl-C")  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1",
                       help="address the tracker listens on (0.0.0.0: reachable by phones on "
                       "the LAN; only when you mean it)")  # fmt: skip
    serve.add_argument("--port", type=_port, default=DEFAULT_TRACKER_PORT, help="tracker port")
    serve.add_argument("--key", default=None, help=f"{HELP['key']} (default {HOST_KEY}, "
                       "or emu-arm64 with --emulate)")  # fmt: skip
    serve.add_argument("--servers", type=whole_number(0), default=1, help="number of RPC servers")
    serve.add_argument("--emulate", choices=EMULATE_CHOICES, help=HELP["emulate"])

    devices = commands.add_parser("devices", parents=[common], help="list the keys a tracker "
                                  "knows, with free/pending devices")  # fmt: skip
    devices.add_argument("--tracker", type=Tracker.parse,
                         default=Tracker("127.0.0.1", DEFAULT_TRACKER_PORT),
                         help=f"{HELP['tracker']} (default 127.0.0.1:{DEFAULT_TRACKER_PORT})")
    devices.add_argument("--json", action="store_true", help="print JSON instead of a table")

    bench = commands.add_parser("bench", parents=[common], help="run an artifact on a device "
                                "and report its frame rate")  # fmt: skip
    bench.add_argument("artifact", type=Path, help="artifact folder written by python -m compile")
    bench.add_argument("--tracker", type=Tracker.parse, default=None,
                       help=f"{HELP['tracker']}; without it an embedded farm of this machine "
                       "runs for the command's duration")  # fmt: skip
    bench.add_argument("--key", default=None, help=f"{HELP['key']} (default {HOST_KEY})")
    bench.add_argument("--emulate", choices=EMULATE_CHOICES,
                       help="run on an embedded emulated aarch64 device (no --tracker)")
    bench.add_argument("--threads", type=whole_number(1), default=None,
                       help="threads on the device, pinned to its big cores (default: the "
                       "device's own choice)")  # fmt: skip
    add_timing_flags(bench)
    bench.add_argument("--check", action="store_true",
                       help="compare the device's output for the stored reference input with "
                       "the stored reference output (non-zero exit on mismatch)")  # fmt: skip
    bench.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of --check")
    bench.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of --check")
    bench.add_argument("--baseline", type=Path, default=None, metavar="ARTIFACT",
                       help="time this artifact too, in turns with the benched one in the same session, and "
                       "report their ratio (the drift of a shared device hits both alike)")
    bench.add_argument("--rounds", type=whole_number(1), default=5,
                       help="turns of each with --baseline; the samples are split between them (default %(default)s)")
    bench.add_argument("--per-kernel", action="store_true",
                       help="also time every fused kernel alone and print a table")
    bench.add_argument("--wait", type=float, default=60.0,
                       help="seconds to wait for a registered, free device")
    bench.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    command = {"serve": _serve, "devices": _devices, "bench": _bench}[args.command]
    return run_main(lambda: command(args), args.verbose)


def _serve(args: argparse.Namespace) -> int:
    from runner.farm import LocalFarm

    farm = LocalFarm(key=args.key, servers=args.servers, host=args.host, port=args.port,
                     emulate=args.emulate)  # fmt: skip
    try:
        with farm:
            print(_serve_banner(farm, args.host), flush=True)
            while True:
                farm.check_alive()
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopped the tracker and every server", file=sys.stderr, flush=True)
        return 0


def _serve_banner(farm: LocalFarm, host: str) -> str:
    tracker = farm.tracker
    key = farm.key if farm.servers else "KEY"
    servers = (f"{farm.servers} server(s) registered under key {farm.key!r}" if farm.servers
               else "no local servers (devices register under their own key)")  # fmt: skip
    lines = [
        f"RPC tracker listening on {host}:{tracker.port}; {servers}"
        + (f" (emulated {farm.emulate})" if farm.emulate else ""),
        f"  benchmark: python -m runner bench ARTIFACT --tracker {tracker} --key {key}",
        f"  list:      python -m runner devices --tracker {tracker}",
    ]
    if host == "0.0.0.0":
        lines.append(f"  phones:    start TVM's RPC app with tracker THIS_MACHINE_LAN_IP:"
                     f"{tracker.port} and a key of your choice (e.g. s21-cpu)")  # fmt: skip
    if farm.emulate:
        lines.append("  emulated:  timings on this device are for correctness runs only")
    lines.append("stop with Ctrl-C")
    return "\n".join(lines)


def _devices(args: argparse.Namespace) -> int:
    from runner.report import render_devices
    from runner.session import list_devices

    queues = list_devices(args.tracker)
    if args.json:
        print(json.dumps({"tracker": str(args.tracker),
                          "devices": [queue.to_dict() for queue in queues]}, indent=2))
    else:
        print(render_devices(queues, str(args.tracker)))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from runner.bench import bench_artifact
    from runner.farm import use_device
    from runner.report import render_bench

    with use_device(args.tracker, args.key, emulate=args.emulate) as device:
        result = bench_artifact(args.artifact, device, timing_protocol(args), threads=args.threads,
                                check=args.check, per_kernel=args.per_kernel, atol=args.atol,
                                rtol=args.rtol, wait_s=args.wait, baseline=args.baseline,
                                rounds=args.rounds)  # fmt: skip
    print(render_bench(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0



def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65534)")
    return int(text)

