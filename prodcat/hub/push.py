"""Share a trained model on the Hugging Face Hub: ``prodcat push DIR --hub_model_id org/name``.

One commit (``HfApi.create_repo(exist_ok=True)`` + ``HfApi.create_commit`` with explicit
``CommitOperationAdd`` s) uploads exactly what someone needs to use the model: weights
(safetensors), config, tokenizer, the generated model card, the result files and ``onnx/`` when it
exists, and ``ngram/`` (the n-gram model prodcat pools with the transformer by default; its
vocabulary lists words of the training texts, so ``include_ngram=False`` / ``--ngram_ensemble false``
leaves it out, and the card then does not mention it). Checkpoint folders, optimizer/scheduler/RNG
states and pickles (``training_args.bin``) stay local unless ``include_checkpoints``. The directory
on disk is never changed unless the push succeeds (only then is ``README.md`` rewritten with the
Hub id), so a failed push loses nothing.

The token is taken from ``--token``, else ``HF_TOKEN``, else the saved ``hf auth login``; it is
passed to ``huggingface_hub`` only, never logged, printed or written, and every file is checked
for it before upload.

Example:
    >>> url = push_output_dir("outputs/model", "acme/prodcat-grocery", private=True)
    >>> url
    'https://huggingface.co/acme/prodcat-grocery/commit/...'

Training integration (``train.py --push_to_hub --hub_model_id org/name``): call
:func:`take_push_request` before the ``Trainer`` is built (it turns Trainer's own push off and
removes the token from the arguments that Trainer pickles into ``training_args.bin``), then
:func:`finish_training_push` at the end on the main process.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import get_token, validate_repo_id

from prodcat.core.artifacts import CONFIG_FILE, ONNX_DIR, REPORT_DIR, SUMMARY_FILE
from prodcat.core.errors import ProdcatError, first_line
from prodcat.core.io import atomic_path
from prodcat.hub import card as model_card
from prodcat.inference.ngram import SUBDIR as NGRAM_SUBDIR
from prodcat.inference.ngram import VOCABULARY_FILE, has_ensemble

logger = logging.getLogger(__name__)

#: Top-level files of an output directory that a push sends (glob patterns).
MODEL_FILE_PATTERNS = (
    CONFIG_FILE,
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",  # sentencepiece vocabularies (spiece.model, sentencepiece.bpe.model)
    "*_results.json",
    SUMMARY_FILE,
    "LICENSE",
    "LICENSE.*",
)
#: Sub-folders sent with a push, and which files in them.
FOLDER_PATTERNS = {
    ONNX_DIR: ("*",),
    # The n-gram model prodcat pools by default; its vocabulary lists words and word pairs of the training texts.
    NGRAM_SUBDIR: ("config.json", "vocabulary.json", "weights.safetensors"),
    # The evaluation report's summaries and plots; not per-row files, which hold product texts.
    REPORT_DIR: ("*.json", "*.md", "*.png", "*.svg"),
}
#: Never sent, even inside the folders above: pickles and training state.
EXCLUDED_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.partial", ".*")
#: Checkpoint folders written by ``Trainer`` (sent only with ``include_checkpoints``).
CHECKPOINT_PATTERN = "checkpoint-*"
_TOKEN_CHUNK = 1 << 22


@dataclass
class PushRequest:
    """What ``--push_to_hub`` asked for, taken out of ``TrainingArguments`` before training."""

    hub_model_id: str
    private: bool | None = None
    token: str | None = field(default=None, repr=False)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def check_repo_id(hub_model_id: str | None) -> str:
    """``hub_model_id`` if ``huggingface_hub`` accepts it as a model repo id, else a one-line error."""
    if not hub_model_id:
        raise ProdcatError("no --hub_model_id; pass the Hub repository to push to, e.g. --hub_model_id acme/prodcat-grocery")
    try:
        validate_repo_id(hub_model_id)
    except HFValidationError as err:
        reason = first_line(err).replace(" Use `repo_type` argument if needed.", "")
        raise ProdcatError(
            f"--hub_model_id {hub_model_id!r} is not a valid Hub repo id ({reason}); use org/name with letters, digits, '-', '_' or '.'"
        ) from None
    return hub_model_id


def resolve_token(token: str | None = None) -> str:
    """The token to push with: the argument, else ``HF_TOKEN``, else the saved login; an error if none."""
    token = token or get_token()
    if not token:
        raise ProdcatError(
            "no Hugging Face token: pass --token (or --hub_token when training), set HF_TOKEN, or run `hf auth login`; "
            "the token needs write access"
        )
    return token


def check_model_dir(output_dir: str) -> None:
    """Raise a one-line error unless ``output_dir`` holds a saved model (config + safetensors weights)."""
    model_card.read_config(output_dir)
    names = os.listdir(output_dir)
    if not any(fnmatch.fnmatch(n, "model.safetensors") or fnmatch.fnmatch(n, "model-*-of-*.safetensors") for n in names):
        raise ProdcatError(
            f"{output_dir}: no model.safetensors, so no trained model here; pass the --output_dir of a finished training run"
        )


# --------------------------------------------------------------------------------------------
# What a push sends
# --------------------------------------------------------------------------------------------


def _excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDED_PATTERNS)


def _walk_files(root: str, folder: str) -> Iterator[str]:
    """Relative paths (with ``/``) of the regular files under ``root/folder``, hidden ones skipped."""
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if not name.startswith(".") and os.path.isfile(full) and not os.path.islink(full):
                yield os.path.relpath(full, root).replace(os.sep, "/")


def files_to_push(output_dir: str, include_checkpoints: bool = False, include_ngram: bool = True) -> list[str]:
    """Relative paths of the files a push uploads (``README.md`` is added from the rendered card).

    ``ngram/`` goes only with ``include_ngram`` and only when it holds a model (``ngram/config.json``),
    the same test that decides whether the card describes it.

    Example:
        >>> files_to_push("outputs/model")[:3]
        ['config.json', 'eval_results.json', 'model.safetensors']
    """
    selected = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):
            if any(fnmatch.fnmatch(name, p) for p in MODEL_FILE_PATTERNS) and not _excluded(name):
                selected.append(name)
        elif name == NGRAM_SUBDIR and not (include_ngram and has_ensemble(output_dir)):
            continue
        elif os.path.isdir(path) and name in FOLDER_PATTERNS:
            for rel in _walk_files(output_dir, name):
                base = rel.rsplit("/", 1)[-1]
                if any(fnmatch.fnmatch(base, p) for p in FOLDER_PATTERNS[name]) and not _excluded(base):
                    selected.append(rel)
        elif os.path.isdir(path) and include_checkpoints and fnmatch.fnmatch(name, CHECKPOINT_PATTERN):
            # Everything Trainer needs to resume: optimizer, scheduler, RNG states (pickles) included.
            selected.extend(_walk_files(output_dir, name))
    return selected


def ngram_vocabulary_size(output_dir: str) -> int | None:
    """How many words and word pairs ``ngram/vocabulary.json`` lists, or ``None`` if it cannot be read."""
    try:
        with open(os.path.join(output_dir, NGRAM_SUBDIR, VOCABULARY_FILE), encoding="utf-8") as handle:
            words = json.load(handle).get("word")
    except (OSError, ValueError, AttributeError):
        return None
    return len(words) if isinstance(words, list) else None


def _log_ngram_push(output_dir: str, files: list[str]) -> None:
    """Say that the n-gram model goes with the push: its vocabulary makes words of the training texts public."""
    if not any(rel.startswith(f"{NGRAM_SUBDIR}/") for rel in files):
        return
    size = ngram_vocabulary_size(output_dir)
    listed = f"lists {size:,} words and word pairs" if size is not None else "lists words and word pairs"
    logger.info(
        "pushing %s/ (the n-gram model): its %s %s from the training texts; pass --ngram_ensemble false to leave it out",
        NGRAM_SUBDIR, VOCABULARY_FILE, listed,
    )


def _file_contains(path: str, needle: bytes) -> bool:
    """Whether ``needle`` occurs in the file (read in chunks that overlap by ``len(needle)``)."""
    overlap = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(_TOKEN_CHUNK):
            if needle in overlap + chunk:
                return True
            overlap = chunk[-len(needle):]
    return False


def refuse_files_with_token(output_dir: str, files: list[str], token: str | None) -> None:
    """Raise if any file to be pushed contains the token (e.g. a ``training_args.bin`` inside a
    checkpoint saved while ``--hub_token`` was in the training arguments)."""
    if not token:
        return
    needle = token.encode("utf-8")
    for rel in files:
        path = os.path.join(output_dir, *rel.split("/"))
        if _file_contains(path, needle):
            raise ProdcatError(
                f"{path} contains your Hugging Face token; refusing to upload it "
                "(delete or regenerate that file, and revoke the token if it was ever shared)"
            )


def push_operations(output_dir: str, card_text: str, files: list[str] | None = None) -> list[CommitOperationAdd]:
    """The ``CommitOperationAdd`` s of a push: ``README.md`` from the rendered card, the rest from disk.

    Example:
        >>> [op.path_in_repo for op in push_operations("outputs/model", card_text)][:2]
        ['README.md', 'config.json']
    """
    files = files_to_push(output_dir) if files is None else files
    operations = [CommitOperationAdd(path_in_repo=model_card.CARD_NAME, path_or_fileobj=card_text.encode("utf-8"))]
    for rel in files:
        if rel != model_card.CARD_NAME:
            operations.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=os.path.join(output_dir, *rel.split("/"))))
    return operations


# --------------------------------------------------------------------------------------------
# Errors from the wire
# --------------------------------------------------------------------------------------------


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception classes of the HTTP clients ``huggingface_hub`` may use."""
    classes: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)), ("requests", ("ConnectionError", "Timeout"))):
        with contextlib.suppress(ImportError):
            imported = importlib.import_module(module)
            classes.extend(getattr(imported, name) for name in names if hasattr(imported, name))
    return tuple(classes)


def _one_line(text: str, token: str | None) -> str:
    line = " ".join(str(text).split())[:300]
    return line.replace(token, "***") if token else line


@contextlib.contextmanager
def _hub_errors(output_dir: str, hub_model_id: str, token: str | None) -> Iterator[None]:
    """Turn Hub/network failures into one line that says the model is safe and how to retry."""
    safe = f"the model stays on disk at {output_dir}"
    retry = f"retry with: prodcat push {output_dir} --hub_model_id {hub_model_id}"
    try:
        yield
    except OfflineModeIsEnabled:
        raise ProdcatError(
            f"cannot reach the Hugging Face Hub: offline mode is on (HF_HUB_OFFLINE=1); {safe}; unset HF_HUB_OFFLINE and {retry}"
        ) from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            reason = "the Hub rejected the token (401 Unauthorized); check it at https://huggingface.co/settings/tokens"
        elif status == 403:
            namespace = hub_model_id.split("/")[0] if "/" in hub_model_id else "your account"
            reason = f"the token cannot write to {hub_model_id} (403 Forbidden); it needs write access to {namespace}"
        else:
            detail = getattr(err, "server_message", None) or str(err)
            reason = f"the Hub refused the upload ({status or 'HTTP error'}: {_one_line(detail, token)})"
        raise ProdcatError(f"{reason}; {safe}; {retry}") from None
    except _network_errors() as err:
        detail = _one_line(str(err), token) or type(err).__name__
        raise ProdcatError(f"cannot reach the Hugging Face Hub ({type(err).__name__}: {detail}); {safe}; {retry}") from None


# --------------------------------------------------------------------------------------------
# Push
# --------------------------------------------------------------------------------------------


def push_output_dir(
    output_dir: str,
    hub_model_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    include_checkpoints: bool = False,
    license: str | None = None,
    dataset_id: str | None = None,
    dataset_name: str | None = None,
    include_ngram: bool = True,
) -> str:
    """Upload a trained output directory to ``hub_model_id`` in one commit; returns the commit URL.

    ``private=None`` keeps the Hub default (public unless the organisation says otherwise) for a new
    repo; an existing repo keeps its visibility. ``license=None`` keeps the license of the existing
    card. ``include_ngram=False`` leaves ``ngram/`` out of the upload and out of the card. Every
    check that needs no network (model present, repo id, token, card renders) runs before anything
    is sent; ``README.md`` on disk is rewritten only after the commit succeeded.

    Example:
        >>> push_output_dir("outputs/model", "acme/prodcat-grocery", license="apache-2.0")
        'https://huggingface.co/acme/prodcat-grocery/commit/0a1b2c...'
    """
    check_model_dir(output_dir)
    hub_model_id = check_repo_id(hub_model_id)
    token = resolve_token(token)
    license = model_card.check_license(license or model_card.existing_license(output_dir) or model_card.DEFAULT_LICENSE)

    def render(repo_id: str) -> str:
        return str(
            model_card.render_model_card(
                output_dir, license=license, hub_model_id=repo_id, dataset_id=dataset_id, dataset_name=dataset_name,
                include_ngram=include_ngram,
            )
        )

    card_text = render(hub_model_id)
    files = files_to_push(output_dir, include_checkpoints, include_ngram)
    refuse_files_with_token(output_dir, files, token)
    _log_ngram_push(output_dir, files)
    api = HfApi()
    with _hub_errors(output_dir, hub_model_id, token):
        repo_url = api.create_repo(hub_model_id, token=token, private=private, repo_type="model", exist_ok=True)
        repo_id = getattr(repo_url, "repo_id", None) or hub_model_id
        if repo_id != hub_model_id:  # "name" became "user/name": the card's snippets need the full id
            card_text = render(repo_id)
        operations = push_operations(output_dir, card_text, files)
        logger.info("Pushing %d files from %s to %s", len(operations), output_dir, repo_id)
        commit = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} (prodcat)",
            token=token,
            repo_type="model",
        )
    card_path = os.path.join(output_dir, model_card.CARD_NAME)
    with atomic_path(card_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(card_text)
    url = getattr(commit, "commit_url", None) or str(repo_url)
    logger.info("Pushed to %s", url)
    return url


# --------------------------------------------------------------------------------------------
# Training integration
# --------------------------------------------------------------------------------------------


def take_push_request(training_args) -> PushRequest | None:
    """Take ``--push_to_hub`` out of ``TrainingArguments`` before the ``Trainer`` is built.

    Trainer's own push would upload checkpoints during training, and Trainer pickles the whole
    arguments object, ``hub_token`` included, into ``training_args.bin``. This turns its push off,
    clears the token from the arguments, and checks the repo id and the token now, so that a typo
    fails in a second rather than after training. Returns ``None`` when no push was asked for.

    Example:
        >>> request = take_push_request(training_args)      # before ProdcatTrainer(...)
        >>> training_args.push_to_hub, training_args.hub_token
        (False, None)
    """
    token = getattr(training_args, "hub_token", None)
    training_args.hub_token = None
    if not getattr(training_args, "push_to_hub", False):
        return None
    training_args.push_to_hub = False
    hub_model_id = check_repo_id(getattr(training_args, "hub_model_id", None))
    resolve_token(token)  # fail before training when there is no token at all
    return PushRequest(hub_model_id=hub_model_id, private=getattr(training_args, "hub_private_repo", None), token=token)


def finish_training_push(
    output_dir: str,
    request: PushRequest | None,
    license: str | None = None,
    dataset_id: str | None = None,
    dataset_name: str | None = None,
    include_ngram: bool = True,
) -> str | None:
    """End of training (main process only): write the card, then push when asked; returns the URL or ``None``.

    ``include_ngram``: the run's ``--ngram_ensemble``; ``False`` keeps any ``ngram/`` in the folder (e.g. one
    left by an earlier run) out of the card and the push.
    """
    model_card.write_model_card(
        output_dir,
        license=license,
        hub_model_id=request.hub_model_id if request else None,
        dataset_id=dataset_id,
        dataset_name=dataset_name,
        include_ngram=include_ngram,
    )
    if request is None:
        return None
    return push_output_dir(
        output_dir,
        request.hub_model_id,
        token=request.token,
        private=request.private,
        license=license,
        dataset_id=dataset_id,
        dataset_name=dataset_name,
        include_ngram=include_ngram,
    )


__all__ = [
    "PushRequest",
    "check_model_dir",
    "check_repo_id",
    "files_to_push",
    "finish_training_push",
    "ngram_vocabulary_size",
    "push_operations",
    "push_output_dir",
    "refuse_files_with_token",
    "resolve_token",
    "take_push_request",
]
