"""ONNX Runtime backend: export a trained model once, cache it, run it fast on CPU.

``ensure_onnx_model(model_dir)`` exports the model with ``torch.onnx.export`` (the TorchScript
exporter, ``dynamo=False``: dynamic batch and sequence axes, one output ``logits``), fuses
attention / LayerNorm / GELU with onnxruntime's transformer optimizer when that keeps the outputs
identical, and with ``quantize=True`` applies int8 dynamic quantization
(``onnxruntime.quantization.quantize_dynamic``, per-channel weights).

The files are cached next to the model in ``DIR/onnx/`` and reused while the model is unchanged:
the cache key is a SHA-256 of ``config.json``, every ``*.safetensors`` file and the export recipe
(``EXPORT_RECIPE`` and the onnxruntime version). When the model folder is read-only or lives in
the Hugging Face cache, the files go to ``$PRODCAT_CACHE`` (default
``~/.cache/prodcat``)``/onnx/<key>/`` instead.

Example:
    >>> path = ensure_onnx_model("outputs/model", quantize=True)   # outputs/model/onnx/model.int8.onnx
    >>> runner = OnnxRunner(path)
    >>> runner({"input_ids": ids, "attention_mask": mask}).shape
    (2, 534)
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import itertools
import json
import logging
import math
import os
import random
from collections.abc import Iterator, Sequence

import numpy as np

from prodcat.core.artifacts import read_summary
from prodcat.core.errors import ProdcatError, first_line
from prodcat.core.hierarchy import ancestors, normalize_path, split_path
from prodcat.core.io import atomic_path, write_json
from prodcat.inference.batching import MODEL_INPUTS, run_batches
from prodcat.modeling.loading import detect_label_separator, load_tokenizer, load_torch_classifier

logger = logging.getLogger(__name__)

#: Bump when the export / optimisation / quantization recipe changes, to invalidate caches.
EXPORT_RECIPE = "prodcat-onnx-2:opset17:eager-attention:bert-fusion:dynamic-int8-per-channel:flip-margin:pairs"
OPSET = 17
CACHE_SUBDIR = "onnx"
MANIFEST = "manifest.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: Architectures whose graphs onnxruntime's BERT fusion understands (others are run unfused).
FUSABLE_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet"}
#: int8: rows whose top-1/top-2 logit margin is below the re-check margin are recomputed in fp32
#: (RecheckedRunner). The margin is measured at quantization time (measure_recheck_margin); this
#: default applies only when that measurement is missing.
DEFAULT_RECHECK_MARGIN = 1.0
#: The re-check margin is the smallest that leaves at most this share of the probe texts with an int8
#: top-1 different from fp32 (margin_for_miss_rate). Probes (probe_texts) flip about 3x more often
#: than real titles, so on titles the share is lower still.
RECHECK_MISS_RATE = 0.001
#: Largest absolute logit difference accepted between the fused and the plain fp32 graph.
FUSION_TOLERANCE = 1e-3


def user_cache_dir() -> str:
    """``$PRODCAT_CACHE``, else ``$XDG_CACHE_HOME/prodcat``, else ``~/.cache/prodcat``."""
    if os.environ.get("PRODCAT_CACHE"):
        return os.environ["PRODCAT_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "prodcat")


def _weight_files(model_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))


@functools.lru_cache(maxsize=16)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model_dir: str) -> str:
    """SHA-256 over config.json, the safetensors weights and the export recipe (hex)."""
    import onnxruntime

    digest = hashlib.sha256(f"{EXPORT_RECIPE}|onnxruntime={onnxruntime.__version__}".encode())
    files = [os.path.join(model_dir, "config.json"), *_weight_files(model_dir)]
    for path in files:
        if not os.path.isfile(path):
            raise ProdcatError(f"{model_dir}: missing {os.path.basename(path)}; cannot export to ONNX")
        stat = os.stat(path)  # follows symlinks (Hub cache snapshots link to blobs)
        digest.update(os.path.basename(path).encode())
        digest.update(_hash_file(os.path.realpath(path), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()


def _in_hf_cache(model_dir: str) -> bool:
    from huggingface_hub.constants import HF_HUB_CACHE

    cache = os.path.realpath(HF_HUB_CACHE)
    return os.path.realpath(model_dir).startswith(cache + os.sep)


def _writable(folder: str) -> bool:
    target = os.path.join(folder, CACHE_SUBDIR)
    if os.path.isdir(target):
        return os.access(target, os.W_OK | os.X_OK)
    return os.access(folder, os.W_OK | os.X_OK)


def onnx_cache_dir(model_dir: str, fingerprint: str, cache_dir: str | None = None) -> str:
    """Where the ONNX files of ``model_dir`` live: ``DIR/onnx`` or a user cache folder (see module doc)."""
    if cache_dir:
        return os.path.join(cache_dir, fingerprint[:24])
    if not _in_hf_cache(model_dir) and _writable(model_dir):
        return os.path.join(model_dir, CACHE_SUBDIR)
    return os.path.join(user_cache_dir(), "onnx", fingerprint[:24])


@contextlib.contextmanager
def _locked(folder: str, fingerprint: str) -> Iterator[None]:
    """Serialise exports of the same model across processes (e.g. ranks of ``torchrun``).

    The lock file lives in the user cache, so the model folder only ever holds the ONNX files.
    """
    from filelock import FileLock

    os.makedirs(folder, exist_ok=True)
    locks = os.path.join(user_cache_dir(), "locks")
    os.makedirs(locks, exist_ok=True)
    with FileLock(os.path.join(locks, f"onnx-{fingerprint[:24]}.lock")):
        yield


@contextlib.contextmanager
def _quiet_onnxruntime_tools() -> Iterator[None]:
    """Silence the INFO chatter of onnxruntime's optimizer and quantizer (they log on the root logger)."""
    names = ["", "fusion_base", "onnx_model", "onnx_model_bert", "onnxruntime", "fusion_utils"]
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _read_manifest(folder: str) -> dict:
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def ensure_onnx_model(
    model_dir: str,
    quantize: bool = False,
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
) -> str:
    """Path of the (cached) ONNX model of ``model_dir``: fp32, or int8 with ``quantize``.

    Exports (and quantizes) only when no cached file matches the current weights and config.
    """
    fingerprint = model_fingerprint(model_dir)
    name = INT8_FILE if quantize else FP32_FILE
    shipped = os.path.join(model_dir, CACHE_SUBDIR)
    if _read_manifest(shipped).get("fingerprint") == fingerprint and os.path.isfile(os.path.join(shipped, name)):
        return os.path.join(shipped, name)  # up to date, even if read-only or downloaded from the Hub
    folder = onnx_cache_dir(model_dir, fingerprint, cache_dir)
    wanted = os.path.join(folder, name)
    with _locked(folder, fingerprint):
        manifest = _read_manifest(folder)
        if manifest.get("fingerprint") != fingerprint:
            for stale in (FP32_FILE, INT8_FILE, MANIFEST):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, stale))
            manifest = {"fingerprint": fingerprint, "recipe": EXPORT_RECIPE, "source": os.path.abspath(model_dir)}
        fp32 = os.path.join(folder, FP32_FILE)
        if not os.path.isfile(fp32):
            logger.info("Exporting %s to ONNX (once; cached in %s)", model_dir, folder)
            manifest["fused"] = export_onnx(model_dir, fp32, trust_remote_code)
            write_json(os.path.join(folder, MANIFEST), manifest)
        if quantize and not os.path.isfile(wanted):
            logger.info("Quantizing the ONNX model to int8 (once; cached in %s)", folder)
            quantize_onnx(fp32, wanted)
            manifest["recheck_margin"] = measure_recheck_margin(model_dir, fp32, wanted, trust_remote_code)
            write_json(os.path.join(folder, MANIFEST), manifest)
    return wanted


def calibrated_recheck_margin(int8_path: str) -> float:
    """The re-check margin measured when ``int8_path`` was quantized (``DEFAULT_RECHECK_MARGIN`` if unknown)."""
    value = _read_manifest(os.path.dirname(int8_path)).get("recheck_margin")
    return float(value) if isinstance(value, (int, float)) and value >= 0 else DEFAULT_RECHECK_MARGIN


def probe_texts(labels: Sequence[str], extra: Sequence[str] = (), limit: int = 1024) -> list[str]:
    """Texts to measure quantization error without user data: category names, their paths, then pairs.

    Below ``limit`` names, the rest is filled with pairs of leaf names ("Headphones Speakers", in a
    seeded random order): texts between two categories, where int8 flips top-1s most. A small catalogue
    has too few names alone: with 10 categories none of the probes may flip, which would give a margin
    of 0 (plain int8) however close the real titles' top two are.

    Example:
        >>> probe_texts(["Audio > Headphones", "Audio > Speakers"])
        ['Headphones', 'Audio', 'Audio Headphones', 'Speakers', 'Audio Speakers', 'Headphones Speakers', 'Speakers Headphones']
    """
    texts: dict[str, None] = {}
    for text in extra:
        texts.setdefault(str(text), None)
    leaf_names: dict[str, None] = {}
    for label in labels:
        path = normalize_path(label)
        leaf = split_path(path)[-1]
        leaf_names.setdefault(leaf, None)
        texts.setdefault(leaf, None)
        for node in ancestors(path):
            texts.setdefault(" ".join(split_path(node)), None)
    leaves = list(leaf_names)
    rng = random.Random(0)
    if len(leaves) * (len(leaves) - 1) <= 4 * limit:  # few enough to list: all of them, in a seeded order
        pairs = list(itertools.permutations(range(len(leaves)), 2))
        rng.shuffle(pairs)
    else:  # drawn (a flat catalogue of 1,000 categories has a million pairs), a bounded number of times
        pairs = (rng.sample(range(len(leaves)), 2) for _ in range(4 * limit))
    for first, second in pairs:
        if len(texts) >= limit:
            break
        texts.setdefault(f"{leaves[first]} {leaves[second]}", None)
    return [t for t in texts if t.strip()][:limit]


def margin_for_miss_rate(int8_logits: np.ndarray, fp32_logits: np.ndarray, miss_rate: float = RECHECK_MISS_RATE) -> float:
    """Smallest re-check margin after which at most ``miss_rate`` of the rows still disagree with fp32 on top-1.

    A row keeps its int8 logits when its int8 top-1/top-2 margin ``m`` is at least the re-check margin
    ``M`` (RecheckedRunner), so it can end with a top-1 different from fp32 only if int8 flipped its
    top-1 and ``m >= M``. With the flipped rows' margins sorted in decreasing order
    ``m_1 >= m_2 >= ...`` and ``k = floor(miss_rate * rows)``, ``M`` just above ``m_(k+1)`` leaves
    exactly the ``k`` widest flips unchecked; ``M = 0`` (pure int8) when ``k`` or fewer rows flipped.

    Example:
        >>> fp32 = np.array([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0], [1.0, 1.5]])
        >>> int8 = np.array([[1.0, 1.8], [0.0, 1.1], [3.1, 0.0], [1.3, 1.0]])   # rows 0 and 3 flipped
        >>> round(margin_for_miss_rate(int8, fp32, miss_rate=0.0), 3)            # widest flip: 0.8
        0.8
        >>> round(margin_for_miss_rate(int8, fp32, miss_rate=0.25), 3)           # one miss allowed: 0.3
        0.3
    """
    if int8_logits.shape[0] == 0 or int8_logits.shape[1] < 2:
        return 0.0
    top2 = np.partition(int8_logits, -2, axis=1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    flipped = np.sort(margins[int8_logits.argmax(axis=1) != fp32_logits.argmax(axis=1)])[::-1]
    allowed = int(miss_rate * len(margins))
    if len(flipped) <= allowed:
        return 0.0
    return float(np.nextafter(np.float32(flipped[allowed]), np.float32(np.inf)))


def measure_recheck_margin(model_dir: str, fp32_path: str, int8_path: str, trust_remote_code: bool = False) -> float:
    """The re-check margin of an int8 model: ``margin_for_miss_rate`` over probe texts.

    The probes (``probe_texts``) are the model's category names and their paths (and, for a prodcat model,
    the widget examples of training_summary.json), then pairs of leaf names up to 1,024 texts, so no
    user data is needed. On the bigbasket-27k model the probes flip 7.5% of their top-1s under int8
    against 2.1% of real titles, and a margin set on them left no disagreement on 1,878 validation
    titles while re-checking 15% of them.
    """
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        labels = [str(v) for v in (json.load(handle).get("id2label") or {}).values()]
    summary = read_summary(model_dir)
    extra = [str(t) for t in summary.widget_examples] if summary else []
    separator = detect_label_separator(labels)  # as the predictor reads the labels
    probes = probe_texts([normalize_path(label, separator) for label in labels], extra)
    if not probes:
        return DEFAULT_RECHECK_MARGIN
    tokenizer = load_tokenizer(model_dir, trust_remote_code)
    fp32, int8 = OnnxRunner(fp32_path), OnnxRunner(int8_path)
    names = [name for name in fp32.input_names if name in int8.input_names]
    expected = run_batches(fp32, tokenizer, probes, len(labels), 64, 64, input_names=names)
    got = run_batches(int8, tokenizer, probes, len(labels), 64, 64, input_names=names)
    # Rounded up to 4 decimals for the manifest, so the stored margin stays above m_(k+1).
    return math.ceil(margin_for_miss_rate(got, expected) * 1e4) / 1e4


def _export_inputs(model, tokenizer) -> list[str]:
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)

    return [name for name in MODEL_INPUTS if name in tokenizer.model_input_names and name in accepted]


def export_onnx(model_dir: str, path: str, trust_remote_code: bool = False) -> bool:
    """Export ``model_dir`` to ``path`` (fp32 logits, dynamic batch/sequence); returns True when fused.

    Exported with eager attention (a plain MatMul/Softmax graph, which onnxruntime's optimizer
    fuses into its Attention kernel), then fused when the fused graph reproduces the plain one
    within ``FUSION_TOLERANCE`` on sample inputs.
    """
    import torch


    tokenizer = load_tokenizer(model_dir, trust_remote_code)
    model = load_torch_classifier(model_dir, model_dir, "cpu", trust_remote_code, attn_implementation="eager")
    names = _export_inputs(model, tokenizer)

    class LogitsOnly(torch.nn.Module):
        """Positional inputs in ``names`` order -> logits tensor (what the exporter needs)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors))).logits

    sample = tokenizer(["wireless noise cancelling headphones", "rice"], padding=True, return_tensors="pt")
    args = tuple(sample[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    plain = path + ".plain.onnx"
    try:
        with atomic_path(plain) as tmp, torch.inference_mode(False), torch.no_grad():
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python control flow in transformers
                torch.onnx.export(
                    LogitsOnly(model).eval(),  # eval(): the exporter restores the wrapper's mode afterwards
                    args,
                    tmp,
                    input_names=names,
                    output_names=["logits"],
                    dynamic_axes=axes,
                    opset_version=OPSET,
                    dynamo=False,
                    do_constant_folding=True,
                )
    except Exception as err:
        raise ProdcatError(
            f"{model_dir}: ONNX export failed ({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}); "
            "use --backend torch"
        ) from None
    fused = False
    try:
        model_type = getattr(model.config, "model_type", "")
        if model_type in FUSABLE_MODEL_TYPES:
            fused = _fuse(plain, path, model.config, tokenizer, names)
        if not fused:
            os.replace(plain, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(plain)
    return fused


def _fuse(plain: str, path: str, config, tokenizer, names: Sequence[str]) -> bool:
    """Write the fused graph of ``plain`` to ``path`` if it matches the plain graph; True on success."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with _quiet_onnxruntime_tools():
            optimized = optimize_model(
                plain,
                model_type="bert",
                num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                hidden_size=int(getattr(config, "hidden_size", 0) or 0),
            )
        with atomic_path(path) as tmp:
            with _quiet_onnxruntime_tools():
                optimized.save_model_to_file(tmp)
            texts = ["wireless noise cancelling headphones over ear", "basmati rice 5 kg", "x"]
            features = tokenizer(texts, padding=True, return_tensors="np")
            feed = {name: features[name].astype(np.int64) for name in names}
            expected = OnnxRunner(plain, num_threads=1)(feed)
            got = OnnxRunner(tmp, num_threads=1)(feed)
            if not np.allclose(expected, got, atol=FUSION_TOLERANCE, rtol=0):
                raise ValueError(f"fused graph differs by {np.abs(expected - got).max():.2g}")
        return True
    except Exception as err:  # fusion is an optimisation: fall back to the plain graph
        logger.info("ONNX fusion skipped (%s); using the plain graph", err)
        return False


def quantize_onnx(fp32_path: str, int8_path: str) -> None:
    """int8 dynamic quantization of every MatMul / Attention / embedding (per-channel weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(int8_path) as tmp, _quiet_onnxruntime_tools():
        quantize_dynamic(
            fp32_path,
            tmp,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # Fused ops (Attention, SkipLayerNormalization) are outside ONNX shape inference; their
            # outputs are float32.
            extra_options={"DefaultTensorType": 1},
        )


class OnnxRunner:
    """``features -> logits`` with an onnxruntime session (CPU, or CUDA when available and asked).

    ``num_threads=None`` lets onnxruntime use one thread per physical core; ``spin_between_runs=False``
    stops the worker threads' spin-waiting when a run returns (for sessions that take turns with another one).
    """

    def __init__(self, path: str, num_threads: int | None = None, device: str | None = None, spin_between_runs: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if not spin_between_runs:
            # Idle worker threads spin-wait for the next op, and keep spinning after a run returns. With two
            # sessions taking turns (int8, then fp32 for near-ties) one pool's spinning would slow the other's
            # run; stopping it when each run returns keeps the fast hand-over between ops inside a run
            # (no spinning at all answers single titles later).
            options.add_session_config_entry("session.force_spinning_stop", "1")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        providers = ["CPUExecutionProvider"]
        if device and str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as err:
            raise ProdcatError(f"{path}: onnxruntime cannot load this file ({first_line(err)}); delete it to re-export") from None
        self.path = path
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: features[name] for name in self.input_names}
        return self.session.run(None, feed)[0]


class RecheckedRunner:
    """int8 logits, with near-ties recomputed by the fp32 graph.

    Dynamic int8 quantization moves logits by a small amount, which changes the top-1 category
    almost only where the top two logits are close (on the bigbasket-27k model, no flipped title
    had an int8 margin above 0.8). Rows whose int8 top-1/top-2 logit margin is below ``margin``
    (margin_for_miss_rate) are therefore recomputed with ``fp32`` (their logits are replaced); the
    rest keep the fast int8 result.

    Example:
        >>> runner = RecheckedRunner(OnnxRunner(int8_path), OnnxRunner(fp32_path), margin=1.0)
        >>> logits = runner(features)
        >>> runner.rechecked, runner.rows     # how many rows needed fp32 so far
        (12, 5000)
    """

    def __init__(self, int8: OnnxRunner, fp32: OnnxRunner, margin: float):
        self.int8 = int8
        self.fp32 = fp32
        self.margin = float(margin)
        self.path = int8.path
        self.input_names = int8.input_names
        self.rows = 0
        self.rechecked = 0

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        logits = self.int8(features)
        self.rows += len(logits)
        if logits.shape[1] < 2 or self.margin <= 0:
            return logits
        top2 = np.partition(logits, -2, axis=1)[:, -2:]
        rows = np.flatnonzero(top2[:, 1] - top2[:, 0] < self.margin)
        if len(rows):
            subset = {name: array[rows] for name, array in features.items()}
            logits[rows] = self.fp32(subset)
            self.rechecked += len(rows)
        return logits

