"""CPU inference benchmark: transformers.pipeline vs prodcat torch / ONNX fp32 / ONNX int8.

Usage::

    python benchmarks/inference.py outputs/model [--n 5000] [--threads 2] [--output inference.md] [--write]
    python benchmarks/inference.py outputs/model --data_dir DIR   # titles from DIR/bigbasket-27k/

Loads one trained model folder and ``--n`` real product titles (the bigbasket-27k test split in ``--data_dir``,
default ``$PRODCAT_DATA_DIR``, else ``shared/data`` beside the repository; topped up from its train split when
the test split is shorter; skips with a message when the data is absent), then measures in the same run, on the
same threads:

- throughput (items/s) over all titles, and single-item latency p50 / p95 (ms) over
  ``--latency_n`` titles predicted one at a time, for
  (a) ``transformers.pipeline("text-classification", batch_size=32)`` (the baseline),
  (b) prodcat torch, (c) prodcat ONNX fp32, (d) prodcat ONNX int8 (near-ties re-checked in fp32,
  the default) and (d0) pure int8, all with ``ensemble=False``; when the folder holds an n-gram model,
  also (e) torch and (f) ONNX int8 pooled with it (``ensemble=True``), whose agreement with (a)
  measures how often the ensemble changes the answer, not an error;
- top-1 agreement of (b)-(d) with (a);
- the fp32 paths' achieved GFLOP/s (useful FLOPs of the unpadded titles / time) as a fraction of
  a large ``torch.mm``'s GFLOP/s on the same threads.

Useful FLOPs of a BERT-style encoder on a title of ``s`` tokens (hidden ``h``, FFN ``f``, ``l``
layers, ``c`` classes): ``l * (8*s*h^2 + 4*s*h*f + 4*s^2*h) + 2*h^2 + 2*h*c`` (multiply-adds
counted as 2 FLOPs; embeddings, softmax and LayerNorm ignored).

Targets (2 CPU cores, default model): (d) >= 2.5x the throughput of (a) with >= 99.5% top-1
agreement, and single-item p50 <= 3 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from common import ROOT, add_data_dir_argument, write_benchmarks_block

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATASET = "bigbasket-27k"
TARGET_SPEEDUP = 2.5
TARGET_AGREEMENT = 0.995
TARGET_P50_MS = 3.0


def load_titles(n: int, folder: str) -> tuple[list[str], list[str]] | None:
    """``n`` titles from ``folder`` (a catalogue's folder) and the categories of the test-split ones (the train
    top-up has none: scoring a model on its own training rows would flatter it)."""
    import pandas as pd

    test = os.path.join(folder, "test.csv")
    if not os.path.isfile(test):
        return None
    frame = pd.read_csv(test, dtype=str, keep_default_na=False)
    frame = frame[frame["text"].str.strip() != ""]
    titles, labels = frame["text"].tolist()[:n], frame["category"].tolist()[:n]
    train = os.path.join(folder, "train.csv")
    if len(titles) < n and os.path.isfile(train):
        extra = pd.read_csv(train, dtype=str, keep_default_na=False)["text"]
        titles += [t for t in extra.tolist() if t.strip()][: n - len(titles)]
    return titles, labels


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_engine(predict_many, predict_one, titles: list[str], latency_titles: list[str]) -> dict:
    """Throughput over ``titles`` and single-item latencies over ``latency_titles`` (after a warm-up)."""
    predict_many(titles[:64])
    for title in latency_titles[:10]:
        predict_one(title)
    start = time.perf_counter()
    top1 = predict_many(titles)
    seconds = time.perf_counter() - start
    latencies = []
    for title in latency_titles:
        t0 = time.perf_counter()
        predict_one(title)
        latencies.append((time.perf_counter() - t0) * 1000)
    return {
        "top1": top1,
        "seconds": seconds,
        "items_per_s": len(titles) / seconds,
        "p50_ms": statistics.median(latencies),
        "p95_ms": percentile(latencies, 0.95),
    }


def encoder_flops(config, token_counts: list[int]) -> float:
    """Useful FLOPs for titles of the given token counts (see module docstring)."""
    h = config.hidden_size
    f = getattr(config, "intermediate_size", 4 * h)
    layers = config.num_hidden_layers
    classes = config.num_labels
    total = 0.0
    for s in token_counts:
        total += layers * (8 * s * h * h + 4 * s * h * f + 4 * s * s * h) + 2 * h * h + 2 * h * classes
    return total


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="A trained prodcat model folder.")
    parser.add_argument("--n", type=int, default=5000, help="Titles for the throughput run (default 5000).")
    parser.add_argument("--latency_n", type=int, default=300, help="Titles predicted one at a time for latency (default 300).")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for every engine (default: all cores).")
    parser.add_argument("--batch_size", type=int, default=64, help="prodcat batch size (the pipeline uses 32).")
    parser.add_argument("--output", help="Also write the table as markdown to this file.")
    add_data_dir_argument(parser)
    parser.add_argument("--write", action="store_true", help="Rewrite the inference table in docs/benchmarks.md.")
    args = parser.parse_args(argv)

    folder = os.path.join(args.data_dir, DATASET)
    loaded = load_titles(args.n, folder)
    if loaded is None:
        print(f"skipped: real product titles not found at {folder} (pass --data_dir DIR or set PRODCAT_DATA_DIR: "
              f"a folder holding {DATASET}/test.csv)")
        return 0
    titles, test_labels = loaded
    import torch
    from transformers import AutoConfig, pipeline
    from transformers.utils import logging as hf_logging

    from prodcat.core.hierarchy import normalize_path
    from prodcat.inference.categorizer import Categorizer
    from prodcat.modeling.loading import detect_label_separator

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    latency_titles = titles[: args.latency_n]
    config = AutoConfig.from_pretrained(args.model)
    separator = detect_label_separator(list(config.id2label.values()))
    results: dict[str, dict] = {}

    # (a) the plain transformers pipeline
    classifier = pipeline("text-classification", model=args.model, device=-1)

    def pipeline_many(texts):
        return [normalize_path(out["label"], separator) for out in classifier(texts, batch_size=32)]

    results["(a) transformers.pipeline, batch 32"] = time_engine(
        pipeline_many, lambda text: classifier(text), titles, latency_titles
    )

    engines = {
        "(b) prodcat torch": dict(backend="torch", device="cpu", ensemble=False),
        "(c) prodcat ONNX fp32": dict(backend="onnx", ensemble=False),
        "(d) prodcat ONNX int8": dict(backend="onnx", quantize=True, ensemble=False),
        "(d0) (d) without the fp32 re-check of near-ties": dict(backend="onnx", quantize=True, recheck_margin=0, ensemble=False),
    }
    from prodcat.inference import ngram

    if ngram.has_ensemble(args.model):
        engines["(e) prodcat torch + n-gram ensemble"] = dict(backend="torch", device="cpu", ensemble=True)
        engines["(f) prodcat ONNX int8 + n-gram ensemble"] = dict(backend="onnx", quantize=True, ensemble=True)
    setup_seconds = {}
    for name, options in engines.items():
        start = time.perf_counter()
        categorizer = Categorizer.from_pretrained(args.model, num_threads=args.threads, **options)
        setup_seconds[name] = time.perf_counter() - start

        def many(texts, categorizer=categorizer):
            return [p.category for p in categorizer.predict(texts, batch_size=args.batch_size)]

        def one(text, categorizer=categorizer):
            return categorizer.predict([text])

        results[name] = time_engine(many, one, titles, latency_titles)
        forward = categorizer.forward
        if hasattr(forward, "rechecked"):
            results[name]["rechecked"] = forward.rechecked / max(forward.rows, 1)
        del categorizer

    tokenizer = Categorizer.from_pretrained(args.model, device="cpu", ensemble=False).tokenizer
    token_counts = [len(ids) for ids in tokenizer(titles, truncation=True, max_length=512)["input_ids"]]
    useful_gflop = encoder_flops(config, token_counts) / 1e9
    peak = matmul_gflops(args.threads)

    baseline = results["(a) transformers.pipeline, batch 32"]
    lines = [
        f"Inference benchmark: {len(titles)} bigbasket titles, model `{os.path.basename(os.path.abspath(args.model))}` "
        f"({config.num_labels} categories), {args.threads} thread(s), {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPU(s)",
        "",
        "| engine | items/s | speed-up vs (a) | single-item p50 ms | p95 ms | top-1 agreement with (a) | "
        f"test accuracy ({len(test_labels)} titles) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    expected = [normalize_path(label, " > ") for label in test_labels]
    for name, r in results.items():
        agreement = sum(x == y for x, y in zip(r["top1"], baseline["top1"])) / len(titles)
        r["agreement"] = agreement
        accuracy = sum(x == y for x, y in zip(r["top1"], expected)) / max(len(expected), 1)
        lines.append(
            f"| {name} | {r['items_per_s']:.0f} | {r['items_per_s'] / baseline['items_per_s']:.2f}x | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {agreement:.2%} | {accuracy:.3f} |"
        )
    lines.append("")
    lines.append(
        f"Large torch.mm (2048x2048 fp32): {peak:.1f} GFLOP/s. Useful work: {useful_gflop / len(titles) * 1e3:.1f} MFLOP per title."
    )
    for name in ("(b) prodcat torch", "(c) prodcat ONNX fp32"):
        achieved = useful_gflop / results[name]["seconds"]
        lines.append(f"{name}: {achieved:.1f} GFLOP/s achieved = {achieved / peak:.0%} of torch.mm.")
    if "rechecked" in results["(d) prodcat ONNX int8"]:
        lines.append(
            f"(d) recomputed {results['(d) prodcat ONNX int8']['rechecked']:.1%} of the rows in fp32 "
            "(int8 top-1/top-2 logit margin below the re-check margin)."
        )
    lines.append(
        "One-time setup (load; export/quantize when not cached): "
        + ", ".join(f"{name.split(' ', 1)[0]} {seconds:.1f} s" for name, seconds in setup_seconds.items())
    )
    int8 = results["(d) prodcat ONNX int8"]
    speedup = int8["items_per_s"] / baseline["items_per_s"]
    checks = [
        (f"(d) throughput >= {TARGET_SPEEDUP}x (a)", speedup >= TARGET_SPEEDUP, f"{speedup:.2f}x"),
        (f"(d) top-1 agreement >= {TARGET_AGREEMENT:.1%}", int8["agreement"] >= TARGET_AGREEMENT, f"{int8['agreement']:.2%}"),
        (f"(d) single-item p50 <= {TARGET_P50_MS} ms", int8["p50_ms"] <= TARGET_P50_MS, f"{int8['p50_ms']:.2f} ms"),
    ]
    lines.append("")
    lines += [f"- target {label}: {'met' if ok else 'NOT met'} ({value})" for label, ok, value in checks]
    table = "\n".join(lines)
    print(table)
    if args.output:
        from prodcat.core.io import atomic_path

        with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.write(table + "\n")
    if args.write:
        page = write_benchmarks_block("inference", table)
        print(f"wrote {os.path.relpath(page, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
