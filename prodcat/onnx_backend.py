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
import json
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np

from .errors import ProdcatError
from .io import atomic_path

logger = logging.getLogger(__name__)

#: Bump when the export / optimisation / quantization recipe changes, to invalidate caches.
EXPORT_RECIPE = "prodcat-onnx-1:opset17:eager-attention:bert-fusion:dynamic-int8-per-channel"
OPSET = 17
CACHE_SUBDIR = "onnx"
MANIFEST = "manifest.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: Architectures whose graphs onnxruntime's BERT fusion understands (others are run unfused).
FUSABLE_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet"}
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
def _locked(folder: str) -> Iterator[None]:
    """Serialise exports of the same model across processes (e.g. ranks of ``torchrun``)."""
    from filelock import FileLock

    os.makedirs(folder, exist_ok=True)
    with FileLock(os.path.join(folder, ".lock")):
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
    from .io import write_json

    fingerprint = model_fingerprint(model_dir)
    folder = onnx_cache_dir(model_dir, fingerprint, cache_dir)
    wanted = os.path.join(folder, INT8_FILE if quantize else FP32_FILE)
    with _locked(folder):
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
    return wanted


def _export_inputs(model, tokenizer) -> list[str]:
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    from .inference import MODEL_INPUTS

    return [name for name in MODEL_INPUTS if name in tokenizer.model_input_names and name in accepted]


def export_onnx(model_dir: str, path: str, trust_remote_code: bool = False) -> bool:
    """Export ``model_dir`` to ``path`` (fp32 logits, dynamic batch/sequence); returns True when fused.

    Exported with eager attention (a plain MatMul/Softmax graph, which onnxruntime's optimizer
    fuses into its Attention kernel), then fused when the fused graph reproduces the plain one
    within ``FUSION_TOLERANCE`` on sample inputs.
    """
    import torch

    from .model import load_tokenizer
    from .predictor import load_torch_classifier

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

    ``num_threads=None`` lets onnxruntime use one thread per physical core.
    """

    def __init__(self, path: str, num_threads: int | None = None, device: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
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
            raise ProdcatError(f"{path}: onnxruntime cannot load this file ({str(err).strip().splitlines()[0]}); delete it to re-export") from None
        self.path = path
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: features[name] for name in self.input_names}
        return self.session.run(None, feed)[0]
