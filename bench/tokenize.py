"""Benchmark: our tokenizers (Numba) against HF tokenizers, tiktoken and sentencepiece (CPU).

Run as a script (never collected by pytest: no test_* names):

    python bench/tokenize.py                 # the ~10 MB English corpus of scripts/build-corpus
    python bench/tokenize.py --quick         # 1 MB of the standard library's sources, ~1 minute
    python bench/tokenize.py --ours spec --quick   # the spec instead of backends.cpu (slow: tiny sizes)
    python bench/tokenize.py --only bpe      # one part: bpe, encode, unigram

Side by side in one run, as ratios ours / theirs (below 1: ours is faster):

(a) **BPE training** on the training text, vocab 4096 and 32768: ``backends.cpu.tokenize.bpe.train``
    against HF ``tokenizers``' ``BpeTrainer`` (``ByteLevel`` pre-tokenizer with
    ``add_prefix_space=False``, no normaliser, the 256-byte initial alphabet,
    ``show_progress=False``) at 1 and 2 threads (``NUMBA_NUM_THREADS`` for ours,
    ``RAYON_NUM_THREADS`` for HF, set in the environment of each measurement's own
    subprocess, since Rayon reads it once at first use). Both get the same texts: the
    training file split into lines (line endings kept). The merges of both are compared
    (the contract says they are equal).
(b) **Encoding throughput** (MB/s of UTF-8 input) of the held-out text with the vocab-32768
    merges of (a), one thread: ours (``backends.cpu.tokenize.bpe.encode`` on the whole text) against
    tiktoken (``tiktoken.Encoding`` built from the same merges as mergeable ranks with the
    GPT-2 pattern, ``encode_ordinary`` on the whole text) and HF (``Tokenizer.encode`` on
    the whole text; and ``encode_batch`` over the lines at 1 and 2 threads, against ours,
    ``backends.cpu.tokenize.bpe.encode_batch``, over the same lines). The ids of all of them are
    checked equal before timing.
(c) **Unigram / SWE training** at vocab 8000: ours (``backends.cpu.tokenize.swe.train``,
    ``method="grow"`` (SWE) and ``"prune"`` (unigram), each with the end-of-word marker
    ("word▁", the paper's reading, the default) and with sentencepiece's word-start
    marker ("▁word", ``boundary="start"``)) against sentencepiece's unigram
    trainer (``num_threads`` 1 and 2; identity normalisation, ``character_coverage=1.0``,
    ``split_by_whitespace``), with the held-out log-likelihood per byte of each model:
    every model's pieces and log-probabilities are loaded into one scorer,
    ``spec.tokenize.swe.UnigramModel`` (words split at whitespace, sentencepiece's
    "▁word" form for sentencepiece's pieces), and the sum of the best segmentations'
    log-probabilities over the held-out words is divided by the held-out bytes.
(d) **Peak memory**: every measurement runs in its own subprocess, which reports its
    peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) at the end and just
    before the measured call (imports and data loaded): "peak MB" and "+MB during".

Times are the best of ``--repeats`` calls in the subprocess (training: one call after a
warm-up on a small text, which compiles or loads Numba's code and starts thread pools).
"""

from __future__ import annotations

import _path  # first: takes bench/ off sys.path, where this file shadows the standard library's tokenize

_path.use_repository()

import os
import sys

import argparse
import json
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ in the subprocess


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _lines(path: str, limit: int | None = None) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read() if limit is None else f.read(limit)
    return text.splitlines(keepends=True)


def _ours(kind: str, family: str):
    import importlib

    return importlib.import_module(f"spec.tokenize.{family}" if kind == "spec" else f"backends.cpu.tokenize.{family}")


def job_bpe_train(a: dict) -> dict:
    texts = _lines(a["train"])
    if a["impl"] == "hf":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        def run(txts):
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=a["vocab"], show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
            tok.train_from_iterator(txts, trainer=trainer, length=len(txts))
            return tok
        run(texts[:2000])  # warm-up: thread pool
        before = _rss_mb()
        t = time.perf_counter()
        tok = run(texts)
        seconds = time.perf_counter() - t
        tok.save(a["out"])
    else:
        bpe = _ours(a["impl"], "bpe")
        bpe.train(texts[:2000], 300)  # warm-up: Numba's cache, thread pool
        before = _rss_mb()
        t = time.perf_counter()
        tok = bpe.train(texts, a["vocab"])
        seconds = time.perf_counter() - t
        tok.save(a["out"])
    return {"seconds": seconds, "before_mb": before}


def job_encode(a: dict) -> dict:
    from spec.tokenize.bpe import BPETokenizer

    tok = BPETokenizer.load(a["model"])
    with open(a["heldout"], encoding="utf-8", newline="") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    impl = a["impl"]
    if impl == "ours":
        if a["ours"] == "spec":
            fn = (lambda: tok.encode(text)) if not a["batch"] else (lambda: [tok.encode(x) for x in lines])
        else:
            from backends.cpu.tokenize import bpe

            fn = (lambda: bpe.encode(tok, text)) if not a["batch"] else (lambda: bpe.encode_batch(tok, lines))
    elif impl == "tiktoken":
        import tiktoken

        from spec.tokenize.pretokenize import GPT2_PATTERN

        ranks = tok.to_tiktoken_ranks()
        e = tiktoken.Encoding("ours", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
        fn = lambda: e.encode_ordinary(text)
    else:
        from tokenizers import Tokenizer

        with tempfile.TemporaryDirectory() as d:
            tok.to_hf_json(Path(d) / "tok.json")
            hf = Tokenizer.from_file(str(Path(d) / "tok.json"))
        if a["batch"]:
            fn = lambda: [x.ids for x in hf.encode_batch(lines, add_special_tokens=False)]
        else:
            fn = lambda: hf.encode(text, add_special_tokens=False).ids
    ids = fn()  # warm-up, and the ids that are compared
    before = _rss_mb()
    best = float("inf")
    for _ in range(a["repeats"]):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    ids = [[int(i) for i in x] for x in ids] if a["batch"] else [int(i) for i in ids]
    Path(a["ids_out"]).write_text(json.dumps(ids))
    return {"seconds": best, "before_mb": before, "bytes": len(text.encode("utf-8"))}


def job_unigram_train(a: dict) -> dict:
    texts = _lines(a["train"])
    if a["impl"] == "sentencepiece":
        import sentencepiece as spm

        def run(txts, vocab, prefix):
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(txts), model_prefix=prefix, vocab_size=vocab,
                model_type="unigram", num_threads=a["threads"], character_coverage=1.0,
                normalization_rule_name="identity", minloglevel=2,
                max_sentence_length=1 << 16, hard_vocab_limit=False)
        with tempfile.TemporaryDirectory() as d:
            run(texts[:3000], 300, f"{d}/w")
        before = _rss_mb()
        t = time.perf_counter()
        run(texts, a["vocab"], a["out"])
        seconds = time.perf_counter() - t
        from spec.tokenize.swe import UnigramModel

        # scored like ours: words split at any whitespace (sep=None)
        model = UnigramModel.from_sentencepiece(
            spm.SentencePieceProcessor(model_file=a["out"] + ".model"), sep=None)
    else:
        swe = _ours(a["impl"], "swe")
        swe.train(texts[:300], 300, method=a["method"], boundary=a["boundary"])  # warm-up
        before = _rss_mb()
        t = time.perf_counter()
        model = swe.train(texts, a["vocab"], method=a["method"], boundary=a["boundary"])
        seconds = time.perf_counter() - t
    model.save(a["out"] + ".json")
    return {"seconds": seconds, "before_mb": before, "pieces": len(model.pieces)}


def job_log_likelihood(a: dict) -> dict:
    """Held-out log-likelihood of a saved model, scored by the spec's UnigramModel (an
    uncovered character: min log p - 10, the default)."""
    from spec.tokenize.swe import UnigramModel

    model = UnigramModel.load(a["model"])
    with open(a["heldout"], encoding="utf-8") as f:
        text = f.read()
    ll = model.log_likelihood(text)
    return {"ll": ll, "bytes": len(text.encode("utf-8")), "seconds": 0.0, "before_mb": _rss_mb()}


JOBS = {"bpe_train": job_bpe_train, "encode": job_encode, "unigram_train": job_unigram_train,
        "log_likelihood": job_log_likelihood}


def worker(spec: str) -> int:
    a = json.loads(spec)
    out = JOBS[a["job"]](a)
    out["peak_mb"] = _rss_mb()
    print("RESULT " + json.dumps(out))
    return 0


# ------------------------------------------------------------------ in the parent


def measure(job: dict, threads: int = 1, timeout: float = 1800) -> dict:
    """Run one job in a fresh subprocess with ``threads`` threads for every pool."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for var in ("RAYON_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        env[var] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env, check=False,
                       capture_output=True, text=True, timeout=timeout, cwd=REPO)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"job {job['job']} ({job.get('impl')}) failed:\n{r.stderr[-3000:]}")


def _mem(r: dict) -> str:
    """Two table cells: the subprocess's peak RSS, and how much of it the measured call added."""
    return f"{r['peak_mb']:.0f} | {max(r['peak_mb'] - r['before_mb'], 0):.0f}"


def part_bpe(cfg, work: Path) -> tuple[list[str], Path]:
    from spec.tokenize.bpe import BPETokenizer

    lines = [("| vocab | threads | ours s | HF s | ours / HF | merges equal | ours peak MB | ours +MB "
              "| HF peak MB | HF +MB |"), "|---|---|---|---|---|---|---|---|---|---|"]
    model_for_encode = None
    for vocab in cfg.vocabs:
        for threads in cfg.threads:
            ours_path, hf_path = work / f"ours-{vocab}-{threads}.json", work / f"hf-{vocab}-{threads}.json"
            o = measure({"job": "bpe_train", "impl": cfg.ours, "vocab": vocab, "train": str(cfg.train),
                         "out": str(ours_path)}, threads)
            h = measure({"job": "bpe_train", "impl": "hf", "vocab": vocab, "train": str(cfg.train),
                         "out": str(hf_path)}, threads)
            equal = BPETokenizer.load(ours_path).merges == BPETokenizer.from_hf_json(hf_path).merges
            lines.append(f"| {vocab} | {threads} | {o['seconds']:.2f} | {h['seconds']:.2f} | "
                         f"{o['seconds'] / h['seconds']:.2f} | {'yes' if equal else 'NO'} | {_mem(o)} | {_mem(h)} |")
            print(lines[-1], file=sys.stderr, flush=True)
            model_for_encode = ours_path
    return lines, model_for_encode


def part_encode(cfg, work: Path, model: Path) -> list[str]:
    base = {"job": "encode", "model": str(model), "heldout": str(cfg.heldout), "repeats": cfg.repeats,
            "ours": cfg.ours}
    runs = {  # name -> (job options, threads)
        "ours, whole text": ({"impl": "ours", "batch": False}, 1),
        "tiktoken encode_ordinary, whole text": ({"impl": "tiktoken", "batch": False}, 1),
        "HF encode, whole text": ({"impl": "hf", "batch": False}, 1),
        "ours encode_batch, lines": ({"impl": "ours", "batch": True}, 1),
        "HF encode_batch, lines, 1 thread": ({"impl": "hf", "batch": True}, 1),
        "HF encode_batch, lines, 2 threads": ({"impl": "hf", "batch": True}, 2),
    }
    res, ids = {}, {}
    for name, (opts, threads) in runs.items():
        out = work / f"ids-{len(res)}.json"
        res[name] = measure({**base, **opts, "ids_out": str(out)}, threads)
        ids[name] = json.loads(out.read_text())
    whole = [n for n in runs if "whole" in n]
    batch = [n for n in runs if "whole" not in n]
    agree = all(ids[n] == ids[whole[0]] for n in whole) and all(ids[n] == ids[batch[0]] for n in batch)
    if not agree:
        bad = [n for n in runs if ids[n] != ids[whole[0] if n in whole else batch[0]]]
        raise RuntimeError(f"ids differ from ours: {bad}")
    lines = [(f"ids agree: ours = tiktoken = HF on the whole held-out text ({len(ids[whole[0]]):,} ids), "
              "and ours = HF line by line"), "",
             "| encoder | threads | MB/s | ours time / this time | peak MB | +MB during |",
             "|---|---|---|---|---|---|"]
    for name, (_, threads) in runs.items():
        r = res[name]
        anchor = res["ours, whole text" if name in whole else "ours encode_batch, lines"]
        lines.append(f"| {name} | {threads} | {r['bytes'] / r['seconds'] / 1e6:.1f} | "
                     f"{anchor['seconds'] / r['seconds']:.2f} | {_mem(r)} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def part_unigram(cfg, work: Path) -> list[str]:
    lines = [("| trainer | threads | pieces | train s | time / sentencepiece (same threads) "
              "| held-out log-lik / byte | peak MB | +MB during |"), "|---|---|---|---|---|---|---|---|"]
    rows = []
    for threads in cfg.threads:
        sp = measure({"job": "unigram_train", "impl": "sentencepiece", "threads": threads,
                      "vocab": cfg.unigram_vocab, "train": str(cfg.train), "out": str(work / f"sp{threads}")},
                     threads)
        rows.append(("sentencepiece unigram", threads, sp, work / f"sp{threads}.json", sp))
        for method, boundary, label in (("grow", "end", "ours SWE (grow, word▁)"),
                                        ("grow", "start", "ours SWE (grow, ▁word)"),
                                        ("prune", "end", "ours unigram (prune, word▁)"),
                                        ("prune", "start", "ours unigram (prune, ▁word)")):
            prefix = work / f"{method}-{boundary}{threads}"
            try:
                o = measure({"job": "unigram_train", "impl": cfg.ours, "method": method, "boundary": boundary,
                             "threads": threads, "vocab": cfg.unigram_vocab, "train": str(cfg.train),
                             "out": str(prefix)}, threads)
            except RuntimeError as e:
                print(f"{label}: failed: {str(e)[-400:]}", file=sys.stderr)
                continue
            rows.append((label, threads, o, Path(str(prefix) + ".json"), sp))
    for label, threads, r, model, sp in rows:
        ll = measure({"job": "log_likelihood", "model": str(model), "heldout": str(cfg.heldout)})
        lines.append(f"| {label} | {threads} | {r['pieces']} | {r['seconds']:.2f} | "
                     f"{r['seconds'] / sp['seconds']:.2f} | {ll['ll'] / ll['bytes']:.4f} | {_mem(r)} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


class Config:
    def __init__(self, args):
        self.ours = args.ours
        self.repeats = args.repeats
        self.threads = (1, 2)
        work = Path(tempfile.mkdtemp(prefix="attnspec-bench-tok-"))
        if args.quick or args.ours == "spec":
            from backends.corpus import stdlib_text

            size = args.quick_bytes or (1_000_000 if args.ours == "cpu" else 100_000)
            self.train, self.heldout = work / "train.txt", work / "heldout.txt"
            self.train.write_text(stdlib_text(size), encoding="utf-8")
            self.heldout.write_text(stdlib_text(size // 5, offset=size), encoding="utf-8")
            self.vocabs = (1024, 4096) if args.ours == "cpu" else (300, 512)
            self.unigram_vocab = 2000 if args.ours == "cpu" else 500
            self.what = f"{size:,} bytes of the standard library's sources (backends.corpus.stdlib_text)"
        else:
            from backends.corpus import english_paths

            self.train, self.heldout = english_paths()
            self.vocabs = (4096, 32768)
            self.unigram_vocab = 8000
            self.what = f"the English corpus of scripts/build-corpus in {self.train.parent}"
        self.work = work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 MB of the stdlib's sources (~1 minute)")
    parser.add_argument("--quick-bytes", type=int, default=None, help="size of the --quick corpus")
    parser.add_argument("--ours", choices=("cpu", "spec"), default="cpu",
                        help="our implementation: backends.cpu (default) or the spec (tiny sizes)")
    parser.add_argument("--only", choices=("bpe", "encode", "unigram"), action="append",
                        help="run only this part (repeatable); encode needs bpe's model")
    parser.add_argument("--repeats", type=int, default=3, help="encoding: best of this many calls")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    try:
        cfg = Config(args)
    except FileNotFoundError as e:
        print(f"bench/tokenize.py: {e}\n(or run with --quick for a small run on the standard "
              "library's sources)", file=sys.stderr)
        return 2
    import numba
    import numpy as np
    import sentencepiece
    import tiktoken
    import tokenizers

    parts = args.only or ["bpe", "encode", "unigram"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"tokenizers {tokenizers.__version__}, tiktoken {tiktoken.__version__}, "
          f"sentencepiece {sentencepiece.__version__}")
    print(f"corpus: {cfg.what}: train {cfg.train.stat().st_size:,} B, held-out {cfg.heldout.stat().st_size:,} B")
    print(f"ours: {'backends.cpu' if cfg.ours == 'cpu' else 'the spec'}; each measurement in its own subprocess\n")
    t0 = time.perf_counter()
    model = None
    if "bpe" in parts or "encode" in parts:
        print(f"## (a) BPE training, vocab {' and '.join(map(str, cfg.vocabs))}\n")
        lines, model = part_bpe(cfg, cfg.work) if "bpe" in parts else (None, None)
        if lines:
            print("\n" + "\n".join(lines) + "\n")
    if "encode" in parts:
        if model is None:
            lines, model = part_bpe(cfg, cfg.work)
        print(f"## (b) encoding the held-out text, vocab {cfg.vocabs[-1]}\n")
        print("\n" + "\n".join(part_encode(cfg, cfg.work, model)) + "\n")
    if "unigram" in parts:
        print(f"## (c) unigram / SWE training, vocab {cfg.unigram_vocab}\n")
        print("\n" + "\n".join(part_unigram(cfg, cfg.work)) + "\n")
    print(f"({time.perf_counter() - t0:.0f} s; work files in {cfg.work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
