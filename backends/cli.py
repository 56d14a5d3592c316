"""The ``attnspec`` command: the tour, the conformance suite and the benchmarks.

    attnspec tour [--out DIR] [--small]     every op on every backend here, one table, figures
    attnspec conformance [--backend NAME]   the conformance tests of one backend (pytest)
    attnspec bench [OP] [--quick]           the benchmarks in bench/ (all, or OP's)
    attnspec tokenize train|encode|decode   train a tokenizer on files; encode, decode files

``conformance`` and ``bench`` run files of the source checkout (tests/, bench/), so
they need the repository, not only the installed packages.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from backends import registry
from spec.tolerance import compare

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- tour


class TourRow(NamedTuple):
    op: str
    backend: str
    max_err: float
    within: bool | None
    """None: not run here (the note says why)."""
    seconds: float
    speedup: float
    note: str = ""


class _Case(NamedTuple):
    """Default inputs of one op, and how to call an implementation on them."""

    call: Callable[[Callable, np.dtype], tuple]
    """call(fn, dtype) -> outputs of fn on the default inputs cast to dtype."""
    oracle: tuple
    """The outputs of the oracle (float64)."""


def _attention_inputs(small: bool) -> dict:
    B, H, G, T, D = (1, 4, 2, 256, 64) if small else (1, 8, 8, 1024, 64)
    rng = np.random.default_rng(0)
    return {
        "q": rng.standard_normal((B, H, T, D)),
        "k": rng.standard_normal((B, G, T, D)),
        "v": rng.standard_normal((B, G, T, D)),
        "do": rng.standard_normal((B, H, T, D)),
    }


def _attention_cases(small: bool) -> dict[str, _Case]:
    from spec.attention.naive import attention
    from spec.attention.tiled import flash_backward

    x = _attention_inputs(small)
    opts = {"causal": True}
    oracle_fwd = attention(x["q"], x["k"], x["v"], **opts)
    oracle_bwd = flash_backward(x["q"], x["k"], x["v"], *oracle_fwd, x["do"], **opts)

    def cast(dtype):
        return {n: a.astype(dtype) for n, a in x.items()}

    def forward(fn, dtype):
        a = cast(dtype)
        return fn(a["q"], a["k"], a["v"], **opts)

    def backward(fn, dtype):
        a = cast(dtype)
        # the backward is fed the oracle's forward outputs, rounded, so it is judged alone
        o, lse = (y.astype(dtype) for y in oracle_fwd)
        return fn(a["q"], a["k"], a["v"], o, lse, a["do"], **opts)

    return {
        "attention.flash_forward": _Case(forward, tuple(oracle_fwd)),
        "attention.flash_backward": _Case(backward, tuple(oracle_bwd)),
    }


def _position_cases(small: bool) -> dict[str, _Case]:
    """Packed sequences with RoPE and the harmonic distance penalty; rope_qk apart."""
    from spec.attention.varlen import flash_varlen_forward
    from spec.position import rope_alibi
    from spec.position.rope import rope_qk

    H, G, D = 8, 2, 64
    lengths = (37, 100, 5, 114) if small else (300, 1024, 77, 647)
    rng = np.random.default_rng(2)
    T = sum(lengths)
    q, k, v = (rng.standard_normal((T, n, D)) for n in (H, G, G))
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    opts = {"causal": True, **rope_alibi.options(H)}

    def varlen(fn, dtype):
        return fn(q.astype(dtype), k.astype(dtype), v.astype(dtype), cu, cu, **opts)

    q4, k4 = q[None].transpose(0, 2, 1, 3), k[None].transpose(0, 2, 1, 3)

    def rotate(fn, dtype):
        return fn(q4.astype(dtype), k4.astype(dtype), rope=opts["rope"])

    return {
        "attention.flash_varlen_forward": _Case(varlen, tuple(flash_varlen_forward(q, k, v, cu, cu, **opts))),
        "position.rope_qk": _Case(rotate, tuple(rope_qk(q4, k4, rope=opts["rope"]))),
    }


def _sparse_cases(small: bool) -> dict[str, _Case]:
    """One sampled harmonic block pattern (a quarter of the causal blocks), on the
    attention inputs: the CSR layout with its importance correction, and the mask form."""
    from spec.attention import prflash
    from spec.attention.block_sparse import block_layout, dense_equivalent
    from spec.attention.naive import attention
    from spec.attention.tiled import flash_backward

    x = _attention_inputs(small)
    T = x["q"].shape[2]
    C = 32 if small else 64
    n = T // C
    p_NN = prflash.harmonic_probs(n, prflash.budget_for_fraction(n, 0.25))
    keep_NN = prflash.sample_keep(p_NN, np.random.default_rng(3))
    layout = block_layout(keep_NN, C)
    bias_K = prflash.importance_bias(p_NN, keep_NN, np.float64)
    mask, bias = dense_equivalent(layout, T, T, bias_K)
    dense = {"causal": True, "mask": mask, "bias": bias}
    oracle_fwd = attention(x["q"], x["k"], x["v"], **dense)
    oracle_bwd = flash_backward(x["q"], x["k"], x["v"], *oracle_fwd, x["do"], **dense)

    def arrays(dtype, backward):
        a = [x[n].astype(dtype) for n in ("q", "k", "v")]
        if backward:  # fed the oracle's forward outputs, rounded, so it is judged alone
            a += [y.astype(dtype) for y in oracle_fwd] + [x["do"].astype(dtype)]
        return a

    def sparse(backward):
        def call(fn, dtype):
            return fn(*arrays(dtype, backward), layout, block_bias=bias_K.astype(dtype))
        return call

    def pr(backward):
        def call(fn, dtype):
            return fn(*arrays(dtype, backward), keep_NN, block_size=C, importance=p_NN)
        return call

    return {
        "attention.block_sparse_forward": _Case(sparse(False), tuple(oracle_fwd)),
        "attention.block_sparse_backward": _Case(sparse(True), tuple(oracle_bwd)),
        "attention.prflash_forward": _Case(pr(False), tuple(oracle_fwd)),
        "attention.prflash_backward": _Case(pr(True), tuple(oracle_bwd)),
    }

def _readout_cases(small: bool) -> dict[str, _Case]:
    """The in-context regression read-out at the paper's training step (256 prompts of 40
    examples, d = 5, 8 heads; 32 prompts small), on regression prompts."""
    from spec.attention.readout import readout_forward, readout_mse

    rng = np.random.default_rng(4)
    B, S, D, H = (32 if small else 256), 40, 6, 8
    x = rng.standard_normal((B, S + 1, D - 1))
    y = np.einsum("BSD,BD->BS", x, rng.standard_normal((B, D - 1)) / np.sqrt(D - 1))
    z, zq = np.concatenate([x[:, :S], y[:, :S, None]], -1), np.concatenate([x[:, S], np.zeros((B, 1))], -1)
    kq, ov = 0.5 * rng.standard_normal((H, D, D)), rng.standard_normal((H, D))

    def forward(fn, dtype):
        return tuple(fn(*(a.astype(dtype) for a in (z, zq, kq, ov))))

    def mse(fn, dtype):
        loss, *grads = fn(*(a.astype(dtype) for a in (z, zq, y[:, S], kq, ov)))
        return (np.asarray(loss, dtype), *grads)

    return {
        "attention.readout_forward": _Case(forward, forward(readout_forward, np.float64)),
        "attention.readout_mse": _Case(mse, mse(readout_mse, np.float64)),
    }


def _softmax_case(small: bool) -> _Case:
    from spec.attention.softmax import softmax

    T, S = (64, 256) if small else (512, 2048)
    x = np.random.default_rng(1).standard_normal((T, S)) * 4
    x[:, 1::5] = -np.inf  # masked scores, as attention's causal or padding masks make
    return _Case(lambda fn, dtype: fn(x.astype(dtype)), tuple(softmax(x)))


def _timed(fn: Callable[[], tuple], repeats: int) -> tuple[tuple, float]:
    out = fn()  # warm-up: compiles Numba code, fills caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def tour_rows(*, small: bool, dtype=np.float32, repeats: int = 3) -> list[TourRow]:
    """Run every registered op on the spec and on each backend; measure error and time.

    CUDA kernels on the emulator run at the small size whatever ``small`` says: the
    emulator checks them, its speed means nothing, and the larger size takes it
    minutes. Entries that need a GPU, or take other dtypes, get a row saying so.
    """
    cases, spec_runs = {}, {}

    def at(size_small: bool, op: str):
        """(case, spec outputs, spec seconds) of ``op`` at one size, computed once."""
        if size_small not in cases:
            cases[size_small] = {**_attention_cases(size_small), **_position_cases(size_small),
                                 **_sparse_cases(size_small), **_readout_cases(size_small),
                                 "attention.softmax": _softmax_case(size_small)}
        if (size_small, op) not in spec_runs:
            case = cases[size_small][op]
            spec = functools.partial(case.call, registry.get(op, "spec"), dtype)
            spec_runs[size_small, op] = (case, *_timed(spec, repeats))
        return spec_runs[size_small, op]

    rows = []
    for op in registry.ops():
        if op.startswith("tokenize."):
            continue  # discrete results: tokenize_rows
        for e in registry.entries(op):
            backend = e.name.split("/", 1)[1]
            skip = _why_not_run(e, dtype)
            if skip:
                rows.append(TourRow(op, backend, float("nan"), None, float("nan"), float("nan"), skip))
                continue
            emulated = e.backend == "cuda" and _cuda_engine() == "emulator"
            case, spec_out, spec_s = at(small or emulated, op)
            if e.backend == "spec":
                out, seconds = spec_out, spec_s
            else:
                out, seconds = _timed(functools.partial(case.call, e.load(), dtype), repeats)
            reports = [compare(o, w, b) for o, w, b in zip(out, case.oracle, spec_out)]
            rows.append(TourRow(
                op, backend, max(r.err for r in reports), all(r.ok for r in reports), seconds,
                spec_s / seconds, "emulator, small size" if emulated and not small else "",
            ))
    return rows


# ------------------------------------------------------------ tour: tokenization


def _discrete_row(op, backend, out, want, seconds, spec_s, note="") -> TourRow:
    """A tour row of a discrete result: max err = the number of differing items (merges,
    ids or pieces, a length difference counting as items); within = identical."""
    differ = sum(a != b for a, b in zip(out, want)) + abs(len(out) - len(want))
    return TourRow(op, backend, float(differ), differ == 0, seconds, spec_s / seconds, note)


def _segmentations(seg, offsets_W1) -> list[tuple[list[int], bytes]]:
    """Per word (piece ids, score's float64 bytes) of a Segmentation: equal lists mean
    equal ids and scores equal bit for bit."""
    return [(ids, np.float64(score).tobytes()) for ids, score in seg.per_word(offsets_W1)]


def tokenize_rows(*, small: bool) -> list[TourRow]:
    """Every registered ``tokenize.*`` entry, and BPE encoding, on the standard library's
    sources: merges, ids, pieces and scores must equal the spec's ("in tol" = identical).

    Training is timed once (it is seconds, not milliseconds; the compiled trainers are
    run once before, to compile or load Numba's cache); the other rows as the attention
    rows. CUDA runs on the emulator where there is no GPU (its time means nothing).
    """
    from backends.corpus import stdlib_text
    from backends.cpu.tokenize import bpe as cbpe
    from spec.tokenize import bpe as sbpe
    from spec.tokenize import swe as sswe

    n_bytes, vocab = (100_000, 512) if small else (1_000_000, 2048)
    text = stdlib_text(n_bytes)
    emulated = "emulator" if _cuda_engine() == "emulator" else ""
    rows = []

    def trained(op, corpus, size, key, warm_size, note):
        """Rows of one training op; returns the spec's model."""
        want = spec_s = None
        for e in registry.entries(op):
            train = e.load()
            if e.backend != "spec":
                train(corpus, warm_size)
            t0 = time.perf_counter()
            model = train(corpus, size)
            seconds = time.perf_counter() - t0
            if want is None:
                want, spec_s, spec_model = key(model), seconds, model
            rows.append(_discrete_row(op, e.backend, key(model), want, seconds, spec_s,
                                      note if e.backend == "spec" else ""))
        return spec_model

    def applied(op, args, key, note=""):
        """Rows of an op applied to the same inputs by every backend."""
        want = spec_s = None
        for e in registry.entries(op):
            out, seconds = _timed(functools.partial(e.load(), *args), 3)
            if want is None:
                want, spec_s = key(out), seconds
            rows.append(_discrete_row(op, e.backend, key(out), want, seconds, spec_s,
                                      note if e.backend == "spec" else emulated if e.backend == "cuda" else ""))

    tok = trained("tokenize.bpe_train", text, vocab, lambda t: t.merges, 300,
                  f"{n_bytes // 1000} kB of the stdlib, vocab {vocab}")
    sample = text[: n_bytes // 2]
    spec_ids, spec_s = _timed(lambda: tok.encode(sample), 1)
    rows.append(_discrete_row("tokenize.bpe_encode", "spec", spec_ids, spec_ids, spec_s, spec_s))
    ids, s = _timed(functools.partial(cbpe.encode, tok, sample), 3)
    rows.append(_discrete_row("tokenize.bpe_encode", "cpu", ids.tolist(), spec_ids, s, spec_s))
    words = sbpe.word_counts_of(text[: n_bytes // 5])
    applied("tokenize.pair_counts", (words,), lambda d: list(d.items()), f"{len(words)} words")

    # SWE: the paper's growth on a smaller slice (the spec's trainer recounts every step)
    swe_text = text[: n_bytes // 4]
    swe_vocab = len(sswe.initial_pieces(sswe.count_words(swe_text))) + (100 if small else 300)
    model = trained("tokenize.swe_train", swe_text, swe_vocab, lambda m: list(zip(m.pieces, m.log_probs)),
                    swe_vocab - 50, f"{len(swe_text) // 1000} kB, vocab {swe_vocab}")
    cps, offsets = sswe.flatten_words(model.words(text[: n_bytes // 10]))
    applied("tokenize.segment_batch", (cps, offsets, model.trie),
            functools.partial(_segmentations, offsets_W1=offsets), f"{offsets.size - 1} words")
    return rows


def _cuda_engine() -> str:
    from backends.cuda import engine

    return engine()


def _why_not_run(entry: registry.Entry, dtype) -> str:
    """Why the tour cannot run ``entry`` here, or "" when it can."""
    if entry.gpu_only and _cuda_engine() != "cupy":
        return "needs a GPU (tensor cores); the emulator has none"
    if np.dtype(dtype) not in entry.dtypes:
        names = ", ".join(d.name for d in entry.dtypes)
        return f"takes {names}; the tour runs {np.dtype(dtype).name}"
    return ""


def format_table(rows: list[TourRow]) -> str:
    head = f"{'op':<30} {'backend':<10} {'max err vs f64':>15} {'in tol':>7} {'time':>10} {'vs spec':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.within is None:
            lines.append(f"{r.op:<30} {r.backend:<10} {'-':>15} {'-':>7} {'-':>10} {'-':>8}  {r.note}")
            continue
        lines.append(
            f"{r.op:<30} {r.backend:<10} {r.max_err:>15.2e} {'yes' if r.within else 'NO':>7} "
            f"{r.seconds * 1e3:>8.1f}ms {r.speedup:>7.1f}x" + (f"  {r.note}" if r.note else "")
        )
    return "\n".join(lines)


def tour(out_dir: Path, *, small: bool) -> int:
    from backends.figures import attention_figures

    size = "small" if small else "default"
    print(f"attnspec tour ({size} size, float32 inputs, causal; error vs the float64 oracle,"
          " tolerance per spec.tolerance)\n")
    cuda_note = _choose_cuda_engine()
    rows = tour_rows(small=small) + tokenize_rows(small=small)
    print(format_table(rows))
    print("\ntokenize rows: results are discrete; 'max err' is the number of merges, ids or "
          "pieces that differ from the spec's, 'in tol' means identical")
    print(f"cuda rows: {cuda_note}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = attention_figures(out_dir, small=small)
    print(f"\nfigures of the lessons' key plots written to {out_dir.resolve()}:")
    for p in paths:
        print(f"  {p.name}")
    return 0 if all(r.within is not False for r in rows) else 1


def _choose_cuda_engine() -> str:
    """Run the CUDA rows on the GPU, or say plainly that they run on the emulator.

    Without a GPU and without a setting, the tour asks for the emulator itself
    (ATTNSPEC_CUDA=emulator) so that the CUDA kernels still run and are checked;
    their times are then the emulator's, not a GPU's.
    """
    from backends.cuda import emulate_if_no_gpu

    if emulate_if_no_gpu() == "emulator":
        return ("no GPU here: the CUDA kernels ran on the CPU emulator (ATTNSPEC_CUDA=emulator); "
                "their times are the emulator's, not a GPU's (recorded GPU figures: bench/RESULTS.md)")
    return "CUDA kernels ran on the GPU through CuPy"


# ------------------------------------------------------------- conformance, bench


def _need(path: Path, what: str) -> None:
    if not path.exists():
        sys.exit(f"attnspec: {what} needs the source checkout ({path} not found); "
                 "clone the repository and install it with pip install -e .")


def conformance(backend: str | None, extra: list[str]) -> int:
    tests = REPO / "tests" / "backends"
    _need(tests, "conformance")
    known = sorted({b for op in registry.ops() for b in registry.backends(op)})
    if backend is not None and backend not in known:
        sys.exit(f"attnspec conformance: unknown backend {backend!r}; registered: {known}")
    args = [sys.executable, "-m", "pytest", str(tests), "-q", *extra]
    if backend is not None:
        args += ["--backend", backend]
    return subprocess.call(args, cwd=REPO)


def bench(op: str | None, extra: list[str]) -> int:
    bench_dir = REPO / "bench"
    _need(bench_dir, "bench")
    scripts = sorted(p for p in bench_dir.glob("*.py") if not p.name.startswith("_"))
    if op is not None:
        scripts = [p for p in scripts if p.stem == op.split(".")[0]]
        if not scripts:
            sys.exit(f"attnspec bench: no benchmark for {op!r} in {bench_dir}")
    status = 0
    for script in scripts:
        print(f"== {script.relative_to(REPO)}", flush=True)
        status |= subprocess.call([sys.executable, str(script), *extra], cwd=REPO)
    return status


# ---------------------------------------------------------------------- tokenize


class _TokenizeError(Exception):
    """A user error of ``attnspec tokenize``: printed without a traceback, exit status 2."""


KINDS = ("bpe", "swe", "unigram")
"""bpe: byte-level BPE; swe: likelihood-optimal sub-word encoding grown from BPE-like
initial settings (swe.train method="grow"); unigram: sentencepiece-style pruning (method="prune")."""

def _train_fn(kind: str, backend: str):
    if backend not in ("spec", "cpu"):
        raise _TokenizeError(f"unknown backend {backend!r}; choose spec or cpu")
    import importlib

    family = "bpe" if kind == "bpe" else "swe"
    module = f"spec.tokenize.{family}" if backend == "spec" else f"backends.cpu.tokenize.{family}"
    try:
        return importlib.import_module(module).train
    except (ImportError, AttributeError) as e:
        raise _TokenizeError(f"the {backend} backend has no {family} trainer here ({e})") from None


def _read_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:  # newline="": keep \r\n as it is
            return f.read()
    except FileNotFoundError:
        raise _TokenizeError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise _TokenizeError(f"{path} is a directory, not a file") from None
    except UnicodeDecodeError as e:
        raise _TokenizeError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise _TokenizeError(f"cannot read {path}: {e.strerror}") from None


def load_model(path: Path):
    """A tokenizer saved by ``attnspec tokenize train``: our BPE or unigram JSON format
    (:mod:`spec.tokenize.formats`), told apart by its "format" field; _TokenizeError on a
    missing or malformed file."""
    import json

    from spec.tokenize import formats
    from spec.tokenize.bpe import BPETokenizer
    from spec.tokenize.swe import UnigramModel

    path = Path(path)
    if not path.is_file():
        raise _TokenizeError(f"no such model file: {path}")
    try:
        kind = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _TokenizeError(f"{path} is not a tokenizer model (not JSON: {e})") from None
    kind = kind.get("format") if isinstance(kind, dict) else None
    readers = {formats.FORMAT: BPETokenizer.load, formats.UNIGRAM_FORMAT: UnigramModel.load}
    if kind not in readers:
        raise _TokenizeError(f"{path} is not a tokenizer model: its \"format\" is {kind!r}, "
                             f"expected one of {sorted(readers)}")
    try:
        return readers[kind](path)
    except (ValueError, TypeError) as e:
        raise _TokenizeError(f"{path} is not a valid tokenizer model: {e}") from None


def _write(out: Path | None, text: str) -> None:
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(out, "w", encoding="utf-8", errors="surrogatepass", newline="") as f:
            f.write(text)
    except OSError as e:
        raise _TokenizeError(f"cannot write {out}: {e.strerror}") from None


def tokenize_train(kind: str, vocab_size: int, files: list[Path], out: Path, *,
                   backend: str = "cpu", special: list[str] = ()) -> int:
    from backends.progress import ProgressBar

    texts = [_read_text(f) for f in files]
    train = _train_fn(kind, backend)
    options = {}
    if special:
        options["special_tokens"] = tuple(special)
    if kind != "bpe":
        options["method"] = "grow" if kind == "swe" else "prune"
    t0 = time.perf_counter()
    try:
        with ProgressBar(f"{kind} training ({backend})") as bar:
            model = train(texts, vocab_size, progress=bar, **options)
    except (ValueError, TypeError) as e:
        raise _TokenizeError(f"training failed: {e}") from None
    model.save(out)
    size = sum(len(t.encode("utf-8", errors="surrogatepass")) for t in texts)
    print(f"trained {kind} ({backend}) on {size:,} bytes of {len(files)} file(s) in "
          f"{time.perf_counter() - t0:.1f} s: vocabulary {vocab_size}; wrote {out}", file=sys.stderr)
    return 0


def tokenize_encode(model_path: Path, file: Path, out: Path | None, *, as_json: bool) -> int:
    import json

    model = load_model(model_path)
    text = _read_text(file)
    if as_json:
        _write(out, json.dumps([int(i) for i in model.encode(text)]) + "\n")
    else:
        # one output line per input line; the line's ending is part of what is encoded
        lines = text.splitlines(keepends=True)
        _write(out, "".join(" ".join(map(str, model.encode(line))) + "\n" for line in lines))
    return 0


def tokenize_decode(model_path: Path, file: Path, out: Path | None) -> int:
    import json

    model = load_model(model_path)
    text = _read_text(file)
    if text.lstrip().startswith("["):
        try:
            ids = json.loads(text)
        except ValueError as e:
            raise _TokenizeError(f"{file}: not a JSON list of ids ({e})") from None
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise _TokenizeError(f"{file}: expected a JSON list of integer ids")
        chunks, as_json_input = [ids], True
    else:
        as_json_input = False
        try:
            chunks = [[int(t) for t in line.split()] for line in text.splitlines()]
        except ValueError as e:
            raise _TokenizeError(f"{file}: expected lines of space-separated integer ids ({e})") from None
    from spec.tokenize.bpe import BPETokenizer

    # BPE keeps every character, line endings included; a unigram model normalises
    # whitespace (runs become one space, line endings go), so each line gets "\n" back
    end = "" if isinstance(model, BPETokenizer) or as_json_input else "\n"
    try:  # the models' decode names an id outside the vocabulary
        text = "".join(model.decode(ids) + end for ids in chunks)
    except ValueError as e:
        raise _TokenizeError(f"{file}: {e}") from None
    _write(out, text)
    return 0


def tokenize(args) -> int:
    try:
        if args.action == "train":
            return tokenize_train(args.kind, args.vocab_size, args.files, args.output,
                                  backend=args.backend, special=args.special or [])
        if args.action == "encode":
            return tokenize_encode(args.model, args.file, args.output, as_json=args.json)
        return tokenize_decode(args.model, args.file, args.output)
    except _TokenizeError as e:
        print(f"attnspec tokenize {args.action}: {e}", file=sys.stderr)
        return 2


def _tokenize_parser(sub) -> None:
    p = sub.add_parser("tokenize", help="train a tokenizer on files; encode and decode files",
                       description="Train a tokenizer on text files; encode a file to ids, decode ids "
                                   "to text. encode writes one line of space-separated ids per input "
                                   "line (each line encoded with its line ending), or with --json the "
                                   "whole file's ids as one JSON list; decode reads either form. "
                                   "BPE round-trips every file exactly; swe and unigram models "
                                   "normalise whitespace (runs of it become one space; in the "
                                   "line form each line ends with a newline).")
    acts = p.add_subparsers(dest="action", required=True)
    t = acts.add_parser("train", help="train on FILES and write the model (JSON)")
    t.add_argument("--kind", choices=KINDS, default="bpe",
                   help="bpe (byte-level BPE), swe (likelihood-optimal sub-word encoding), "
                        "unigram (sentencepiece-style pruning); default bpe")
    t.add_argument("--vocab-size", type=int, required=True, help="size of the vocabulary")
    t.add_argument("--backend", choices=("spec", "cpu"), default="cpu",
                   help="cpu (Numba, default) or spec (the readable reference; slow)")
    # one token per flag: with nargs="+" the files would be taken for tokens
    t.add_argument("--special", action="append", metavar="TOKEN",
                   help="a special token (bpe); repeat the flag for several, in id order")
    t.add_argument("files", nargs="+", type=Path, metavar="FILES", help="UTF-8 text files")
    t.add_argument("-o", "--output", type=Path, required=True, help="the model file to write")
    for name, helptext in (("encode", "encode FILE to ids"), ("decode", "decode ids in FILE to text")):
        a = acts.add_parser(name, help=helptext)
        a.add_argument("-m", "--model", type=Path, required=True, help="a model written by train")
        a.add_argument("file", type=Path, metavar="FILE")
        a.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
        if name == "encode":
            a.add_argument("--json", action="store_true",
                           help="encode the whole file as one text and write a JSON list of ids")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnspec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_tour = sub.add_parser("tour", help="run every op on every backend here; write figures")
    p_tour.add_argument("--out", type=Path, default=Path("attnspec-tour"),
                        help="folder for the figures (default: ./attnspec-tour)")
    p_tour.add_argument("--small", action="store_true", help="small sizes (seconds, not minutes)")
    p_conf = sub.add_parser("conformance", help="run the conformance tests (pytest)")
    p_conf.add_argument("--backend", help="only this backend, e.g. cpu")
    p_bench = sub.add_parser("bench", help="run the benchmarks in bench/")
    p_bench.add_argument("op", nargs="?", help="e.g. attention (default: all)")
    _tokenize_parser(sub)
    args, extra = parser.parse_known_args(argv)
    if args.command == "tokenize":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return tokenize(args)
    if args.command == "tour":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return tour(args.out, small=args.small)
    if args.command == "conformance":
        return conformance(args.backend, extra)
    return bench(args.op, extra)


if __name__ == "__main__":
    sys.exit(main())
