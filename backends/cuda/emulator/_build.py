"""Compiling a translation unit with g++, and the cache of compiled modules.

A cache miss runs g++ twice: ``g++ -E`` to find the kernels that survive the
preprocessor (see :mod:`._source`), then the compile of the translation unit with their
exports appended. A module answers with its own manifest of kernels, so a cache hit
compiles nothing (only ``g++ --version`` runs, once per process, for the key).

A compiled module is a shared object cached under ``$ATTNSPEC_CACHE_DIR/emulator``
(default ``~/.cache/attnspec/emulator``), named by the SHA-256 of everything that
determines it: the translation unit, every file of the emulator's ``include/``, the g++
flags, ``g++ --version`` and :data:`EMULATOR_VERSION`. Headers the source includes from
its own ``-I`` directories cannot be in that key (they are only known after compiling):
their paths are kept beside the object (``<key>.deps.json``) and a digest of their
current contents is part of the object's file name.

Files are written to a temporary name and renamed into place (``os.replace`` is atomic),
so concurrent processes compiling the same source never see a half-written object.
Within a process, loaded modules are memoised.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shlex
import subprocess
import tempfile
import threading
from pathlib import Path

from backends.cuda.emulator import _source
from backends.cuda.emulator._errors import EmulatorCompileError

EMULATOR_VERSION = "1"
"""Bump when the meaning of a cached object changes in a way the key does not see."""

INCLUDE_DIR = Path(__file__).parent / "include"

CXX = "g++"

BASE_FLAGS = (
    "-std=c++20", "-O2", "-fPIC", "-shared", "-pthread",
    # Only the export functions of a module are visible: calls and TLS accesses inside
    # it bind locally (no PLT, cheaper TLS), and modules loaded side by side never clash.
    "-fvisibility=hidden",
    # Kernels reinterpret shared and global memory freely (float4 loads of float arrays),
    # which CUDA allows and strict aliasing would let g++ miscompile.
    "-fno-strict-aliasing",
    "-Wno-unknown-pragmas",  # #pragma unroll
    # Large frames (local arrays) probe every page they allocate, so a fiber whose stack
    # overflows always hits its guard page (a KernelError) instead of jumping past it
    # into a neighbour's stack.
    "-fstack-clash-protection",
) + (
    # `__shared__` is thread_local; in a dlopen'ed module each function finds its TLS block
    # through a call after every barrier. TLS descriptors make that call cheaper than
    # __tls_get_addr (measured: 0.59 against 0.78 µs per 64-thread barrier of a kernel that
    # touches shared memory after each). AArch64 uses descriptors by default.
    ("-mtls-dialect=gnu2",) if platform.machine() in ("x86_64", "AMD64") else ()
)

# NVRTC options that mean nothing on the CPU: accepted and ignored, so that one option
# list serves both engines.
_IGNORED_EXACT = {"--use_fast_math", "-use_fast_math", "-lineinfo", "--generate-line-info",
                  "-G", "--device-debug"}
_IGNORED_PREFIX = ("-std=", "--std=", "-arch=", "--gpu-architecture=", "--ptxas-options=",
                   "--fmad=", "-fmad=", "--ftz=", "-ftz=", "--prec-div=",
                   "-prec-div=", "--prec-sqrt=", "-prec-sqrt=")
_LONG_FORMS = {"--define-macro=": "-D", "--undefine-macro=": "-U", "--include-path=": "-I"}


def compiler_flags(options) -> tuple[str, ...]:
    """g++ flags for the NVRTC-style ``options`` of a RawModule: ``-D``/``-U``/``-I``
    (and their long forms) pass through, the options listed above are ignored, anything
    else is a ValueError."""
    if isinstance(options, str):
        raise TypeError(f"options: expected a tuple of strings, got the string {options!r}")
    flags = []
    for option in options:
        if not isinstance(option, str):
            raise TypeError(f"options: expected strings, got {option!r}")
        for long_form, short in _LONG_FORMS.items():
            if option.startswith(long_form):
                option = short + option[len(long_form):]
        if option in _IGNORED_EXACT or option.startswith(_IGNORED_PREFIX):
            continue
        if option[:2] in ("-D", "-U", "-I") and len(option) > 2:
            flags.append(option)
            continue
        raise ValueError(
            f"options: {option!r} is not supported by the CUDA emulator; it passes -D, -U and "
            "-I (and --define-macro=, --undefine-macro=, --include-path=) to g++ and ignores "
            "options of GPU code generation (-std=, -arch=, --use_fast_math, -lineinfo, -G, "
            "--fmad=, --ptxas-options=, ...)"
        )
    return tuple(flags)


@functools.cache
def compiler_version() -> str:
    try:
        out = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmulatorCompileError(
            f"the CUDA emulator needs {CXX} (C++20) to compile kernels: {exc}"
        ) from exc
    return out.stdout


def cache_dir() -> Path:
    root = os.environ.get("ATTNSPEC_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "attnspec"
    return base / "emulator"


def _header_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(INCLUDE_DIR.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(INCLUDE_DIR).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def module_key(tu: str, flags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for part in (EMULATOR_VERSION, compiler_version(), _header_digest(),
                 "\0".join(BASE_FLAGS + flags), tu):
        h.update(part.encode() + b"\0\0")
    return h.hexdigest()


def _file_digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _user_headers(depfile: Path, tu_path: Path) -> list[list[str]]:
    """[path, sha256] of the headers the compile read outside include/ and the system
    directories (g++ -MMD lists no system headers)."""
    text = depfile.read_text().replace("\\\n", " ")
    paths = shlex.split(text.split(":", 1)[1]) if ":" in text else []
    out = []
    for p in paths:
        path = Path(p).resolve()
        if path == tu_path.resolve() or path.is_relative_to(INCLUDE_DIR.resolve()):
            continue
        out.append([str(path), _file_digest(str(path))])
    return out


def _object_name(key: str, headers: list[list[str]]) -> str:
    """File name of the object: the key, plus a digest of the user headers' contents so
    that a changed header gives a new file (a process never reloads a path it loaded)."""
    if not headers:
        return f"{key}.so"
    return f"{key}-{hashlib.sha256(json.dumps(headers).encode()).hexdigest()[:16]}.so"


def _current_headers(deps_path: Path) -> list[list[str]]:
    """The user headers recorded for a key, with the digests their files have now."""
    try:
        recorded = json.loads(deps_path.read_text())
    except (OSError, ValueError):
        return []
    return [[path, _file_digest(path)] for path, _ in recorded]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _run_gxx(cmd: list[str], source_name: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EmulatorCompileError(
            f"g++ could not compile {source_name} for the CUDA emulator:\n{proc.stderr}",
            stderr=proc.stderr,
        )


def _compile(tu: str, flags: tuple[str, ...], directory: Path, key: str,
             source_name: str) -> Path:
    """Find the kernels of ``tu``, compile it with their exports into the cache, and
    return the object's path."""
    with tempfile.TemporaryDirectory(prefix="attnspec-emu-") as tmp:
        tu_path = Path(tmp) / "tu.cpp"
        tu_path.write_text(tu)
        includes = [f"-I{INCLUDE_DIR}", *flags]
        pre = Path(tmp) / "tu.ii"
        _run_gxx([CXX, "-std=c++20", "-E", "-DATTNSPEC_EMU_FIND_KERNELS", *includes, "-x", "c++",
                  str(tu_path), "-o", str(pre)], source_name)
        kernels = _source.find_kernels(_source.user_text(pre.read_text(), str(INCLUDE_DIR)))
        tu_path.write_text(tu + _source.exports(kernels))
        out = Path(tmp) / "module.so"
        _run_gxx([CXX, *BASE_FLAGS, *includes, "-MMD", "-MF", str(Path(tmp) / "tu.d"),
                  "-x", "c++", str(tu_path), "-o", str(out)], source_name)
        headers = _user_headers(Path(tmp) / "tu.d", tu_path)
        deps_path = directory / f"{key}.deps.json"
        if headers:
            _atomic_write(deps_path, json.dumps(headers).encode())
        else:
            deps_path.unlink(missing_ok=True)
        so_path = directory / _object_name(key, headers)
        _atomic_write(so_path, out.read_bytes())
        return so_path


class Module:
    """A loaded module: the ctypes library and the kernels it exports."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        manifest = self.lib.attnspec_emu_manifest
        manifest.restype = ctypes.c_char_p
        manifest.argtypes = ()
        self.kernels = {k.name: k for k in _source.parse_manifest(manifest().decode())}


_loaded: dict[str, Module] = {}
_lock = threading.Lock()


def load_module(tu: str, flags: tuple[str, ...], source_name: str) -> Module:
    """The compiled module of the translation unit ``tu`` (without exports): from this
    process's memo, from the disk cache, or compiled now."""
    key = module_key(tu, flags)
    directory = cache_dir()
    with _lock:
        so_path = directory / _object_name(key, _current_headers(directory / f"{key}.deps.json"))
        module = _loaded.get(str(so_path))
        if module is not None:
            return module
        if not so_path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            so_path = _compile(tu, flags, directory, key, source_name)
        module = Module(so_path)
        _loaded[str(so_path)] = module
        return module


def forget_loaded() -> None:
    """Empty the in-process memo (the disk cache stays): the next load reads the disk."""
    with _lock:
        _loaded.clear()
