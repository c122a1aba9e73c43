"""Draw docs/images/architecture.png: prodcat's layers (left) and its data flow (right).

The same picture as the mermaid diagram in docs/architecture.md; rerun after changing either:

    .venv/bin/python docs/images/architecture.py
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

#: One colour per layer, top (imports most) to bottom (imports nothing of prodcat's).
LAYERS = {
    "cli": "#f4cccc",
    "training": "#fce5cd",
    "hub": "#fff2cc",
    "inference": "#d9ead3",
    "evaluation": "#d0e0e3",
    "modeling": "#cfe2f3",
    "data": "#d9d2e9",
    "core": "#e6e6e6",
}
FILES = "#ffffff"  # the output folder: files, not code
EXTERNAL = "#f3f3f3"  # transformers' own pipeline()


LINE = 0.022  # height of one small line of text, in figure fractions
GAP = 0.036  # vertical space between two boxes of the data flow (room for the arrow and its label)


def box_height(lines) -> float:
    return 0.044 + LINE * len(lines)


def box(ax, x, top, w, title, lines=(), colour=FILES, dashed=False) -> float:
    """A rounded box hanging from ``top``, centred on ``x``: a bold title, smaller lines below; returns its bottom."""
    h = box_height(lines)
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, top - h),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.012",
            facecolor=colour,
            edgecolor="#444444",
            linewidth=1.0,
            linestyle="--" if dashed else "-",
        )
    )
    title_y = top - 0.022 if lines else top - h / 2
    ax.text(x, title_y, title, ha="center", va="center", fontsize=10.5, fontweight="bold")
    for i, line in enumerate(lines):
        ax.text(x, top - 0.044 - LINE * i, line, ha="center", va="center", fontsize=8.5, color="#222222")
    return top - h


def arrow(ax, start, end, label=""):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=13, linewidth=1.1, color="#333333", shrinkA=1, shrinkB=1))
    if label:
        ax.text(start[0] + 0.012, (start[1] + end[1]) / 2, label, ha="left", va="center", fontsize=8, color="#333333", style="italic")


#: The data flow, top to bottom: (label of the arrow into the box, title, lines, colour).
FLOW = [
    (None, "CSV / TSV / JSON Lines / Parquet", [], LAYERS["data"]),
    (
        "load_table: join the text columns, normalise the category paths",
        "ProductTable",
        ["texts, labels, source rows  (data.tables)"],
        LAYERS["data"],
    ),
    (
        "build_splits, tokenize",
        "datasets.Dataset",
        ["train / validation / test, ClassLabel over the sorted paths", "tokenised with map(batched=True)  (data.splits)"],
        LAYERS["data"],
    ),
    (
        None,
        "Trainer  (training.run, training.trainer)",
        ["+ TaxonomyLoss: leaf + parent levels  (modeling.loss)", "+ head warm start  (modeling.head)"],
        LAYERS["training"],
    ),
    (
        "trained model",
        "Post-fit steps  (training.postfit)",
        [
            "prior correction (into the weights), temperature, n-gram model: fitted on validation",
            "logits, or carried over from holdout/ (--refit_on_all_rows); then save, test report",
        ],
        LAYERS["training"],
    ),
    (
        None,
        "Output folder",
        [
            "config.json  (id2label, prodcat_temperature)",
            "model.safetensors, tokenizer files",
            "ngram/  (config.json, vocabulary.json, weights.safetensors)",
            "training_summary.json, *_results.json, calibration.json",
            "report/  (metrics.json, per_class.csv, plots)",
            "README.md  (the model card, hub.card)",
        ],
        FILES,
    ),
]


def draw(path: str) -> None:
    fig = plt.figure(figsize=(11.5, 12))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")

    # Left: the layers, each importing only those below it.
    lx = 0.11
    ax.text(lx, 0.975, "Layers", ha="center", va="top", fontsize=12, fontweight="bold")
    ax.text(lx, 0.952, "a layer imports only the layers below it", ha="center", va="top", fontsize=8, style="italic")
    top = 0.92
    for i, (name, colour) in enumerate(LAYERS.items()):
        if i:
            arrow(ax, (lx, top), (lx, top - GAP))
            top -= GAP
        top = box(ax, lx, top, 0.16, f"prodcat.{name}", colour=colour)
    ax.text(lx, top - 0.02, "and no import cycle at any depth\n(checked by lint-imports)", ha="center", va="top", fontsize=8)
    ax.plot([0.225, 0.225], [0.03, 0.97], color="#bbbbbb", linewidth=0.8)

    # Right: the data flow from a product file to a prediction.
    x, w = 0.61, 0.56
    ax.text(x, 0.975, "Data flow", ha="center", va="top", fontsize=12, fontweight="bold")
    top = 0.95
    for i, (label, title, lines, colour) in enumerate(FLOW):
        if i:
            arrow(ax, (x, top), (x, top - GAP), label or "")
            top -= GAP
        top = box(ax, x, top, w, title, lines, colour)
    left, right = x - w / 4 - 0.01, x + w / 4 + 0.01
    for cx in (left, right):
        arrow(ax, (cx, top), (cx, top - GAP))
    top -= GAP
    bottom = box(
        ax,
        left,
        top,
        0.29,
        "Categorizer",
        ["torch / ONNX / ONNX int8,", "pooled with ngram/ by default", "(inference.categorizer)"],
        LAYERS["inference"],
    )
    box(
        ax,
        right,
        top,
        0.29,
        "transformers pipeline()",
        ["the transformer alone,", "no n-gram pooling", "(not prodcat code)"],
        EXTERNAL,
        dashed=True,
    )
    ax.text(left, bottom - 0.012, "predict.py, prodcat evaluate, the Python API", ha="center", va="top", fontsize=8, style="italic")
    ax.text(right, bottom - 0.012, "any transformers user, from disk or the Hub", ha="center", va="top", fontsize=8, style="italic")

    fig.savefig(path, dpi=100, pil_kwargs={"optimize": True})
    plt.close(fig)


if __name__ == "__main__":
    draw(os.path.join(os.path.dirname(os.path.abspath(__file__)), "architecture.png"))
