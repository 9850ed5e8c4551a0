"""The aarch64 sysroot the emulated device runs in: Debian's arm64 CPython 3.11 plus TVM's wheels.

Built once per machine and cached (`default_cache_dir`), atomically and by one caller at a time
(`runner.emulator.cache.build_once`); the build ends with a smoke test under QEMU, so a stamped
sysroot is known to import TVM. Downloads are kept until a build succeeds, so a failed build
resumes without fetching again. See shared/TVM-0.27-NOTES.md, "An emulated aarch64 RPC device".
"""

from __future__ import annotations

import compileall
import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

from tqdm import tqdm

from runner.emulator.cache import build_once
from runner.emulator.host import check_arm64_packages_available, find_qemu
from runner.errors import EdgesegError

logger = logging.getLogger(__name__)

# CPython 3.11 and the shared libraries it and TVM's runtime load (bookworm names). libmpdec3
# is missing on purpose: `decimal` falls back to its pure-Python version.
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11",
    "libc6", "libgcc-s1", "libstdc++6", "gcc-12-base", "libffi8", "libssl3", "zlib1g",
    "libexpat1", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1", "libncursesw6",
    "libtinfo6", "libreadline8", "libdb5.3", "libgdbm6", "libgdbm-compat4", "libcrypt1",
    "libnsl2", "libtirpc3", "libgssapi-krb5-2", "libk5crypto3", "libkeyutils1", "libkrb5-3",
    "libkrb5support0", "libcom-err2", "libzstd1", "libselinux1", "libpcre2-8-0", "libmd0",
    "libacl1",
)  # fmt: skip
# What `python -m tvm.exec.rpc_server` imports; numpy, ml_dtypes and typing_extensions come in
# as apache-tvm's own requirements. The TVM pins match the host's (pyproject.toml).
WHEELS = (
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post1",
    "psutil",
    "cloudpickle",
    "tornado",
)
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
PYTHON_VERSION = "3.11"
# Bump when the layout below changes, so cached sysroots of the old layout are rebuilt.
LAYOUT_VERSION = 1

PYTHON = "usr/bin/python3.11"
SITE_PACKAGES = "opt/edgeseg/site-packages"
PYTHON_WRAPPER = "opt/edgeseg/bin/python3"
# Compiler-only parts of the TVM wheel: the RPC server runs with TVM_USE_RUNTIME_LIB=1.
_DROPPED = (
    "tvm/lib/libtvm_compiler.so",
    "tvm/lib/libtvm_runtime_cuda.so",
    "tvm/3rdparty",
    "tvm/include",
)

# sys.executable must be something the host can exec: the shell wrapper below, which re-enters
# QEMU. TVM's RPC server starts its popen_worker (and multiprocessing children) through it.
_SITECUSTOMIZE = """\
import os
import sys

sys.executable = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bin", "python3")
"""
_WRAPPER = """\
#!/bin/sh
# Runs the sysroot's aarch64 python under user-mode QEMU (there is no binfmt_misc here).
sysroot=$(cd "$(dirname "$0")/../../.." && pwd)
exec "${EDGESEG_QEMU:-qemu-aarch64-static}" -L "$sysroot" "$sysroot/usr/bin/python3.11" "$@"
"""


def default_cache_dir() -> Path:
    """`$EDGESEG_CACHE/emu-aarch64`, else `${XDG_CACHE_HOME:-~/.cache}/edgeseg/emu-aarch64`."""
    root = os.environ.get("EDGESEG_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        root = os.path.join(xdg, "edgeseg")
    return Path(root) / "emu-aarch64"


def recipe() -> dict:
    """What a sysroot is built from; a cached one whose stamp records another recipe is rebuilt."""
    return {
        "layout_version": LAYOUT_VERSION,
        "debian_packages": list(DEBIAN_PACKAGES),
        "wheels": list(WHEELS),
        "wheel_platform": WHEEL_PLATFORM,
        "python_version": PYTHON_VERSION,
    }


def ensure_sysroot(cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Return the cached aarch64 sysroot, building it first (under a minute) if needed."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    downloads = cache_dir / "downloads"  # beside the sysroot, so that a rebuild finds them
    return build_once(cache_dir / "sysroot", recipe(),
                      lambda build: _build(build, downloads, progress))  # fmt: skip


def _build(build: Path, downloads: Path, progress: bool) -> dict:
    check_arm64_packages_available()
    qemu = find_qemu()
    steps = (
        "download Debian arm64 packages",
        "unpack Debian packages",
        "download aarch64 wheels",
        "install wheels",
        "byte-compile",
        "smoke test",
    )
    step = iter(f"sysroot step {i}/{len(steps)}: {name}" for i, name in enumerate(steps, 1))
    logger.info(next(step))
    debs = _download_debs(downloads / "debs")
    logger.info(next(step))
    for deb in tqdm(sorted(debs.values()), desc="unpack .deb", unit="pkg", disable=not progress):
        _run(["dpkg-deb", "-x", str(deb), str(build)], "unpacking " + deb.name)
    logger.info(next(step))
    wheel_dir = downloads / "wheels"
    _pip(["download", "--dest", str(wheel_dir)], progress)
    logger.info(next(step))
    site = build / SITE_PACKAGES
    # --isolated: only the files just downloaded, never a find-links folder from pip's config.
    _pip(["install", "--isolated", "--no-index", "--find-links", str(wheel_dir),
          "--target", str(site), "--no-compile"], progress)  # fmt: skip
    _prune_and_add_launchers(build)
    logger.info(next(step))
    _byte_compile(build)
    logger.info(next(step))
    emulated = _smoke_test(build, qemu)
    shutil.rmtree(downloads)  # kept only to resume a failed build
    return {
        "emulated_python": emulated,
        "debian_versions": {name: _deb_version(path) for name, path in sorted(debs.items())},
        "wheel_versions": dict(
            sorted(info.name.removesuffix(".dist-info").split("-", 1)
                   for info in site.glob("*.dist-info"))
        ),
    }


def _download_debs(deb_dir: Path) -> dict[str, Path]:
    """apt-get download every package not downloaded yet; incomplete files never land in deb_dir."""
    deb_dir.mkdir(parents=True, exist_ok=True)
    found = {name: next(iter(sorted(deb_dir.glob(f"{name}_*_arm64.deb"))), None)
             for name in DEBIAN_PACKAGES}  # fmt: skip
    missing = [name for name, path in found.items() if path is None]
    if missing:
        incoming = deb_dir / ".incoming"
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir()
        _run(["apt-get", "-q", "download", *(f"{name}:arm64" for name in missing)],
             "downloading Debian arm64 packages", cwd=incoming,
             fix="Run 'apt-get update' as root (and check that arm64 is enabled: "
                 "dpkg --add-architecture arm64), then try again.")  # fmt: skip
        for deb in incoming.glob("*.deb"):
            deb.rename(deb_dir / deb.name)
        incoming.rmdir()
        found = {name: next(iter(sorted(deb_dir.glob(f"{name}_*_arm64.deb"))))
                 for name in DEBIAN_PACKAGES}  # fmt: skip
    return found


def _deb_version(path: Path) -> str:
    return urllib.parse.unquote(path.name.split("_")[1])


def _pip(args: list[str], progress: bool) -> None:
    """Run pip for the aarch64 CPython 3.11 of the sysroot, binary wheels only."""
    command = [
        sys.executable, "-m", "pip", *args, "--disable-pip-version-check",
        "--only-binary=:all:", "--platform", WHEEL_PLATFORM, "--python-version", PYTHON_VERSION,
        "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""),
        *([] if progress else ["--quiet"]), *WHEELS,
    ]  # fmt: skip
    _run(command, f"pip {args[0]} of the aarch64 wheels", capture=not progress,
         fix="Check that PyPI is reachable (pip's proxy settings apply), then retry.")  # fmt: skip


def _prune_and_add_launchers(build: Path) -> None:
    site = build / SITE_PACKAGES
    for rel in _DROPPED:
        target = site / rel
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    wrapper = build / PYTHON_WRAPPER
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(_WRAPPER)
    wrapper.chmod(0o755)


def _byte_compile(build: Path) -> None:
    """Write .pyc files now: compiling the stdlib under QEMU at every start costs seconds.

    Bytecode depends on the Python version only, so the host compiles it when it runs 3.11;
    otherwise the emulated interpreter writes it on its first start.
    """
    if f"{sys.version_info.major}.{sys.version_info.minor}" != PYTHON_VERSION:
        logger.info("host Python is not %s; leaving byte-compilation to the first start",
                    PYTHON_VERSION)  # fmt: skip
        return
    for rel in (f"usr/lib/python{PYTHON_VERSION}", SITE_PACKAGES):
        compileall.compile_dir(build / rel, quiet=2, workers=1)


def _smoke_test(build: Path, qemu: str) -> dict[str, str]:
    """Import what the RPC server imports, under QEMU, and return the versions it reports."""
    code = (
        "import json, platform, sys, numpy, tvm, tvm_ffi, psutil, cloudpickle, tornado\n"
        "import tvm.rpc.server\n"
        "print(json.dumps({'machine': platform.machine(), 'python': sys.version.split()[0],"
        " 'tvm': tvm.__version__, 'tvm_ffi': tvm_ffi.__version__}))"
    )
    env = emulated_env(build, qemu)
    out = _run([qemu, "-L", str(build), str(build / PYTHON), "-c", code],
               "the smoke test of the aarch64 sysroot", capture=True, env=env)  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def emulated_env(sysroot: Path, qemu: str) -> dict[str, str]:
    """The environment for the sysroot's python: the host's, minus what points at host files."""
    host_only = ("VIRTUAL_ENV", "TVM_LIBRARY_PATH", "LD_LIBRARY_PATH", "LD_PRELOAD")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PYTHON") and key not in host_only}  # fmt: skip
    env.update(
        PYTHONPATH=str(sysroot / SITE_PACKAGES),
        PYTHONNOUSERSITE="1",
        TVM_USE_RUNTIME_LIB="1",
        EDGESEG_QEMU=qemu,  # read by the wrapper that sys.executable points at
    )
    return env


def _run(
    command: list[str],
    what: str,
    *,
    cwd: Path | None = None,
    capture: bool = True,
    env: dict[str, str] | None = None,
    fix: str = "Fix the cause the quoted output names, then try again; the build resumes.",
) -> str:
    """Run a build step; its failure becomes an EdgesegError that quotes the tail of its output."""
    logger.debug("running %s", " ".join(command))
    result = subprocess.run(command, cwd=cwd, env=env, text=True, check=False,
                            stdout=subprocess.PIPE if capture else 2,  # 2: progress to stderr
                            stderr=subprocess.STDOUT if capture else None)  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join((result.stdout or "").strip().splitlines()[-15:])
        raise EdgesegError(f"{what} failed (exit {result.returncode}).\n{tail}".strip(), fix)
    return result.stdout or ""
