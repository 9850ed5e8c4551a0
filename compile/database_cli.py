"""`python -m compile database export DB_DIR OUT_DIR` / `... import JSON_DIR DB_DIR`: move a
device tuning database to and from MetaSchedule's JSON pair (what other TVM tools read)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from runner.cli_support import run_main, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compile database", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    e = commands.add_parser("export", parents=[common], help="write a database folder's workloads and "
                            "records as MetaSchedule's JSON pair (database_workload.json, database_tuning_record.json)")
    e.add_argument("db_dir", type=Path, help="tuning database folder (holds tuning.sqlite)")
    e.add_argument("out_dir", type=Path, help="folder to write the JSON pair into")
    i = commands.add_parser("import", parents=[common], help="add MetaSchedule's JSON pair to a database "
                            "folder (records already there are skipped)")
    i.add_argument("json_dir", type=Path, help="folder holding database_workload.json and database_tuning_record.json")
    i.add_argument("db_dir", type=Path, help="tuning database folder (created when missing)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return run_main(lambda: {"export": _export, "import": _import}[args.command](args), args.verbose)


def _export(args: argparse.Namespace) -> int:
    from compile.database import FILENAME, export_json, open_database
    from runner.errors import EdgesegError

    if not (args.db_dir / FILENAME).is_file():
        raise EdgesegError(f"{args.db_dir} holds no {FILENAME}.", "Name a tuning database folder.")
    workloads, records = export_json(open_database(args.db_dir), args.out_dir)
    print(f"exported {workloads} workloads and {records} records to {args.out_dir}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from compile.database import import_json, open_database

    workloads, records = import_json(args.json_dir, open_database(args.db_dir))
    print(f"imported {workloads} workloads and {records} records from {args.json_dir} into {args.db_dir}")
    return 0
