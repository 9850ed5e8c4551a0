"""Running a bench/ script's main() as its smoke tests do: small flags, a kept --work folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence


def run_bench_script(main: Callable[[list[str]], int], flags: Sequence[str], tmp_path: Path) -> dict[str, Any]:
    """`main(flags + --work + -o)`, which must exit 0; the result JSON it wrote."""
    out = tmp_path / "result.json"
    assert main([*flags, "--work", str(tmp_path / "work"), "-o", str(out)]) == 0
    return json.loads(out.read_text())
