"""Training speed: the original notebook's recipe against prodcat's Trainer path, one epoch each.

Usage::

    python benchmarks/training_speed.py                 # 2,000 bigbasket-27k titles, 2 rounds
    python benchmarks/training_speed.py --write         # also rewrite the table in docs/benchmarks.md
    python benchmarks/training_speed.py --variants      # also time prodcat variants (batch, length, precision, threads, processes)

Both recipes train the same model (the embedded all-MiniLM-L6-v2 unless ``--model``) for one epoch on
the same ``--n`` titles sampled with a fixed seed from ``bigbasket-27k/train.csv`` in ``--data_dir`` (default
``$PRODCAT_DATA_DIR``, else ``shared/data`` beside the repository; skipped with a message when absent), on the
same machine, alternating ``notebook, prodcat`` for
``--rounds`` rounds. Each run is its own process, so its peak memory (``ru_maxrss``) is its own.

(a) notebook: a torch ``Dataset`` that tokenises each item in ``__getitem__`` with
    ``padding="max_length"``, max length 128, batch size 4, shuffled; a hand-written loop with
    ``torch.optim.AdamW`` (lr 5e-5) and ``get_linear_schedule_with_warmup``.
(b) prodcat: ``prodcat.training.run.run_training`` with its defaults (texts tokenised once with
    ``datasets.map``, dynamic padding, length-grouped batches of 32, max length 64, frozen word
    embeddings, warm-started head) for one epoch, with no validation split, so nothing but training
    runs (no evaluation, calibration, audit or report). Its time includes tokenisation, the head's
    warm start and saving the model. The category-name examples are turned off here, so that both
    recipes train on exactly the same ``n`` rows (with them, prodcat's epoch has one more row per
    category in the sample, which is a recipe choice, not a speed difference).

Reported per recipe (median over rounds): samples/s over the epoch (``n / seconds``, model loading
excluded for both), the seconds themselves, and peak resident memory; then the ratio prodcat / notebook.
The target is a ratio of at least 5.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, add_data_dir_argument, split_paths, write_benchmarks_block

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET_RATIO = 5.0
NOTEBOOK = {"max_length": 128, "batch_size": 4, "learning_rate": 5e-5}
#: prodcat settings timed by --variants, as extra train.py flags (the defaults are the first row).
VARIANTS = {
    "defaults": [],
    "batch 64": ["--per_device_train_batch_size", "64"],
    "max length 32": ["--max_seq_length", "32"],
    "no length grouping": ["--train_sampling_strategy", "random"],
    "trained word embeddings": ["--freeze_word_embeddings", "false"],
    # bf16 autocast is the default only on CPUs with AMX; elsewhere this row repeats the defaults.
    "fp32 (--bf16 false)": ["--bf16", "false"],
    "1 thread": ["--torch_threads", "1"],
    # The same global batch of 32 from two gloo processes of one thread each (torchrun on one machine).
    "2 processes x 1 thread (torchrun)": ["--processes", "2", "--torch_threads", "1", "--per_device_train_batch_size", "16"],
}


def sample_titles(train_path: str, n: int, seed: int, output_csv: str) -> int:
    """Write ``n`` rows of ``train_path`` (seeded sample, columns text/category) to ``output_csv``."""
    import pandas as pd

    frame = pd.read_csv(train_path, dtype=str, keep_default_na=False)[["text", "category"]]
    frame = frame[frame.text.str.strip() != ""]
    frame.sample(n=min(n, len(frame)), random_state=seed).to_csv(output_csv, index=False)
    return min(n, len(frame))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_notebook(csv_path: str, model_path: str, seed: int) -> dict:
    """One epoch of the original notebook's recipe; returns seconds for the epoch (model already loaded)."""
    import pandas as pd
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    names = sorted(set(frame.category))
    label_ids = {name: i for i, name in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(names))

    class ProductDataset(torch.utils.data.Dataset):
        """As in the notebook: tokenise on every access, padded to the maximum length."""

        def __init__(self, texts: list[str], labels: list[int]):
            self.texts, self.labels = texts, labels

        def __len__(self) -> int:
            return len(self.texts)

        def __getitem__(self, index: int) -> dict:
            encoding = tokenizer(
                self.texts[index], padding="max_length", truncation=True, max_length=NOTEBOOK["max_length"], return_tensors="pt"
            )
            item = {key: value.squeeze(0) for key, value in encoding.items()}
            item["labels"] = torch.tensor(self.labels[index])
            return item

    dataset = ProductDataset(frame.text.tolist(), [label_ids[c] for c in frame.category])
    loader = torch.utils.data.DataLoader(dataset, batch_size=NOTEBOOK["batch_size"], shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=NOTEBOOK["learning_rate"])
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=len(loader))
    start = time.perf_counter()
    model.train()
    for batch in tqdm(loader, desc="notebook epoch"):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return {"seconds": time.perf_counter() - start, "final_loss": loss.item()}


def pop_flag(flags: list[str], name: str) -> str | None:
    """Remove ``name`` and its value from ``flags`` (in place); return the value, or None when absent."""
    if name not in flags:
        return None
    i = flags.index(name)
    value = flags[i + 1]
    del flags[i : i + 2]
    return value


def run_prodcat(csv_path: str, model_path: str | None, seed: int, extra_flags: list[str], output_dir: str) -> dict:
    """One epoch of prodcat's Trainer path; seconds from the loaded model to the saved one."""
    import torch

    import prodcat.training.run as training
    from prodcat.training.config import parse_train_args

    flags = list(extra_flags)
    pop_flag(flags, "--processes")  # run_child launched this process with torchrun
    threads = pop_flag(flags, "--torch_threads")  # not a train.py flag: the variant sets the process's thread count
    if threads:
        torch.set_num_threads(int(threads))
    loaded_at: list[float] = []
    load = training.load_for_training

    def timed_load(*args, **kwargs):
        # Start the clock once the model is loaded, as for the notebook: tokenisation, the head's
        # warm start, the epoch and saving the model are all inside it.
        loaded = load(*args, **kwargs)
        loaded_at.append(time.perf_counter())
        return loaded

    training.load_for_training = timed_load
    argv = ["--train_file", csv_path, "--text_columns", "text", "--output_dir", output_dir, "--num_train_epochs", "1",
            "--validation_split", "0", "--audit", "false", "--category_name_examples", "false", "--seed", str(seed),
            *flags]
    if model_path:
        argv += ["--model_name_or_path", model_path]
    results = training.run_training(*parse_train_args(argv))
    seconds = time.perf_counter() - loaded_at[0]
    train = results["train"]
    return {"seconds": seconds, "trainer_seconds": train.get("train_runtime"), "final_loss": train.get("train_loss")}


def child(args: argparse.Namespace) -> int:
    """Run one recipe in this process and write its figures to ``--result_json``."""
    from prodcat.modeling.loading import default_model_path

    model_path = args.model or default_model_path()
    if args.recipe == "notebook":
        result = run_notebook(args.csv, model_path, args.seed)
    else:
        result = run_prodcat(args.csv, args.model, args.seed, VARIANTS[args.variant], args.output_dir)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, the main process reports (its own peak memory)
        result["peak_rss_mib"] = peak_rss_mib()
        with open(args.result_json, "w") as handle:
            json.dump(result, handle)
    return 0


def child_command(recipe: str, variant: str, csv_path: str, args: argparse.Namespace, result_json: str, output_dir: str) -> list[str]:
    """The command that times one recipe in its own process (under torchrun when the variant asks for processes)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", "--recipe", recipe, "--variant", variant, "--csv", csv_path,
               "--seed", str(args.seed), "--result_json", result_json, "--output_dir", output_dir]
    if args.model:
        command += ["--model", args.model]
    processes = pop_flag(list(VARIANTS.get(variant, [])), "--processes")
    if processes:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", processes]
    return command


def run_child(recipe: str, csv_path: str, args: argparse.Namespace, variant: str = "defaults") -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result_json = os.path.join(folder, "result.json")
        print(f"-- {recipe} ({variant})", flush=True)
        subprocess.run(child_command(recipe, variant, csv_path, args, result_json, os.path.join(folder, "model")), check=True)
        with open(result_json) as handle:
            return json.load(handle)


def summarize(runs: list[dict], n: int) -> dict:
    seconds = statistics.median(r["seconds"] for r in runs)
    return {"samples_per_s": n / seconds, "seconds": seconds, "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "all_seconds": [round(r["seconds"], 1) for r in runs]}


def format_table(rows: list[tuple[str, dict]], baseline: dict) -> str:
    lines = ["| recipe | samples/s | epoch s (each round) | peak memory MiB | vs notebook |", "|---|---|---|---|---|"]
    for name, row in rows:
        each = ", ".join(f"{s:.1f}" for s in row["all_seconds"])
        lines.append(f"| {name} | {row['samples_per_s']:.1f} | {row['seconds']:.1f} ({each}) | {row['peak_rss_mib']:.0f} | "
                     f"{row['samples_per_s'] / baseline['samples_per_s']:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Titles to train on.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating notebook/prodcat rounds.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model", help="Model id or path (default: the embedded all-MiniLM-L6-v2).")
    parser.add_argument("--variants", action="store_true", help="Also time prodcat variants once each (see VARIANTS).")
    add_data_dir_argument(parser)
    parser.add_argument("--write", action="store_true", help="Rewrite the training-speed table in docs/benchmarks.md.")
    for hidden in ("--recipe", "--variant", "--csv", "--result_json", "--output_dir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    paths = split_paths("bigbasket-27k", args.data_dir)
    if paths is None:
        return 0
    import torch

    with tempfile.TemporaryDirectory() as folder:
        csv_path = os.path.join(folder, "titles.csv")
        n = sample_titles(paths[0], args.n, args.seed, csv_path)
        runs: dict[str, list[dict]] = {"notebook": [], "prodcat": []}
        for _ in range(args.rounds):
            for recipe in ("notebook", "prodcat"):
                runs[recipe].append(run_child(recipe, csv_path, args))
        rows = [("(a) notebook: per-item tokenisation, max_length padding to 128, batch 4, hand-written AdamW loop",
                 summarize(runs["notebook"], n)),
                ("(b) prodcat defaults: Trainer, map-tokenised, dynamic padding, length-grouped batches of 32",
                 summarize(runs["prodcat"], n))]
        baseline = rows[0][1]
        if args.variants:
            for name in list(VARIANTS)[1:]:
                rows.append((f"prodcat, {name}", summarize([run_child("prodcat", csv_path, args, name)], n)))
    table = format_table(rows, baseline)
    ratio = rows[1][1]["samples_per_s"] / baseline["samples_per_s"]
    verdict = f"prodcat / notebook = {ratio:.2f}x (target >= {TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})"
    header = (f"One epoch on {n:,} bigbasket-27k titles, {torch.get_num_threads()} torch threads, "
              f"{args.rounds} alternating rounds (median; each round's seconds in brackets).")
    print(f"\n{header}\n\n{table}\n\n{verdict}")
    if args.write:
        path = write_benchmarks_block("training-speed", f"{header}\n\n{table}\n\n{verdict}")
        print(f"wrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
