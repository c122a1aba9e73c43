"""Pushing to the Hugging Face Hub and loading back by Hub id, tested up to the wire.

No Hub server that accepts uploads can run here (no network), so:

* the push is simulated by patching ``HfApi.create_repo`` and ``HfApi.create_commit`` with
  ``unittest.mock``: everything before them runs for real (file selection, card rendering,
  ``CommitOperationAdd`` construction and its upload info), and the tests inspect exactly which
  operations, token and flags would have gone out;
* one test lets the real ``create_repo`` run with offline mode on, so huggingface_hub's own
  request hook refuses to connect (the closest thing to an unplugged cable);
* network failures are simulated by the mocks raising the HTTP clients' connection errors;
* loading by Hub id is tested from a Hub cache directory laid out as ``hf_hub_download`` leaves it
  (``models--org--name/snapshots/<commit>/`` + ``refs/main``), filled with exactly the files a push
  would send, read with ``HF_HUB_OFFLINE=1`` in a subprocess (huggingface_hub reads the environment
  at import).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from unittest import mock

import huggingface_hub
import pytest
import requests
import torch
from huggingface_hub import CommitOperationAdd, HfApi, metadata_load
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import CommitInfo, RepoUrl

from prodcat.cli import main as cli
from prodcat.cli import push as push_cli
from prodcat.core.errors import ProdcatError
from prodcat.hub import push as hub
from tests.conftest import linked_copy

try:  # the HTTP client huggingface_hub raises from: httpx2 in 2.x, httpx in 1.x
    import httpx2 as http_client
except ImportError:
    import httpx as http_client

TOKEN = "hf_prodcatTestToken0123456789abcdefXYZ"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))




@pytest.fixture()
def model_dir(trained_model_dir, tmp_path) -> str:
    """The trained model plus what a real run can leave beside it: a checkpoint, a pickle, ONNX, a report."""
    out = linked_copy(trained_model_dir, str(tmp_path / "model"))
    os.makedirs(os.path.join(out, "checkpoint-8"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "model.safetensors"):
        with open(os.path.join(out, "checkpoint-8", name), "wb") as handle:
            handle.write(b"state")
    os.makedirs(os.path.join(out, "onnx"))
    for name in ("model.onnx", "config.json"):
        with open(os.path.join(out, "onnx", name), "wb") as handle:
            handle.write(b"onnx")
    # Training fits the n-gram model by default (kept as is: predict.py loads it); a run that fitted none gets stand-ins.
    ngram_dir = os.path.join(out, "ngram")
    if not os.path.isdir(ngram_dir):
        os.makedirs(ngram_dir)
        stand_ins = {"config.json": {}, "vocabulary.json": {"word": ["green", "green tea", "tea"], "char": ["te"]}}
        for name in ("config.json", "vocabulary.json", "weights.safetensors"):
            with open(os.path.join(ngram_dir, name), "w") as handle:
                json.dump(stand_ins.get(name, {}), handle)
    with open(os.path.join(ngram_dir, "scratch.pkl"), "wb") as handle:
        handle.write(b"pickle")
    shutil.rmtree(os.path.join(out, "report"), ignore_errors=True)  # hard links: never write through to the fixture
    os.makedirs(os.path.join(out, "report"))
    for name in ("metrics.json", "confusion.png", "errors.csv"):
        with open(os.path.join(out, "report", name), "wb") as handle:
            handle.write(b"{}" if name.endswith(".json") else b"data")
    with open(os.path.join(out, ".README.md.tmp.partial"), "w") as handle:
        handle.write("half-written")
    return out


@pytest.fixture()
def no_saved_login(monkeypatch, tmp_path):
    """No HF_TOKEN and no saved `hf auth login` token."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


@contextlib.contextmanager
def simulated_hub(repo_id: str = "acme/prodcat-sample", create_repo_error=None, commit_error=None):
    """Patch the two calls that would touch the network; yield the mocks for inspection."""
    with (
        mock.patch.object(HfApi, "create_repo", autospec=True) as create_repo,
        mock.patch.object(HfApi, "create_commit", autospec=True) as create_commit,
    ):
        create_repo.return_value = RepoUrl(f"https://huggingface.co/{repo_id}")
        create_repo.side_effect = create_repo_error
        create_commit.return_value = CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/0123abc", commit_message="m", commit_description="", oid="0123abc"
        )
        create_commit.side_effect = commit_error
        yield create_repo, create_commit


def snapshot(folder: str) -> dict[str, str]:
    """Every file under ``folder`` -> sha256 of its bytes."""
    result = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                result[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return result


def sent_operations(create_commit) -> list[CommitOperationAdd]:
    create_commit.assert_called_once()
    return list(create_commit.call_args.kwargs["operations"])


def operation_bytes(op: CommitOperationAdd) -> bytes:
    with op.as_file() as handle:
        return handle.read()


MODEL_FILES = {
    "README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "training_summary.json",
    "eval_results.json", "train_results.json", "all_results.json",
}


def test_push_sends_the_model_card_and_results_but_no_checkpoints_or_pickles(model_dir):
    # prodcat removes Trainer's pickled arguments from the output, but a folder trained or edited by other
    # tools may still hold one: it must never be sent.
    with open(os.path.join(model_dir, "training_args.bin"), "wb") as handle:
        handle.write(b"pickled arguments")
    with simulated_hub() as (create_repo, create_commit):
        url = hub.push_output_dir(model_dir, "acme/prodcat-sample", token=TOKEN, private=True, license="apache-2.0")
    assert url == "https://huggingface.co/acme/prodcat-sample/commit/0123abc"
    assert create_repo.call_args.args[1:] == ("acme/prodcat-sample",)
    assert create_repo.call_args.kwargs == {"token": TOKEN, "private": True, "repo_type": "model", "exist_ok": True}
    assert create_commit.call_args.kwargs["token"] == TOKEN and create_commit.call_args.kwargs["repo_type"] == "model"

    operations = sent_operations(create_commit)
    assert all(isinstance(op, CommitOperationAdd) for op in operations)
    paths = {op.path_in_repo for op in operations}
    local_model_files = {n for n in os.listdir(model_dir) if n in MODEL_FILES}
    assert local_model_files | {"README.md"} <= paths
    assert {"onnx/model.onnx", "onnx/config.json", "report/metrics.json", "report/confusion.png"} <= paths
    assert {"ngram/config.json", "ngram/vocabulary.json", "ngram/weights.safetensors"} <= paths  # the --ensemble model
    assert not {p for p in paths if p.startswith("checkpoint-") or p.endswith((".bin", ".pt", ".pth", ".partial", ".csv", ".pkl"))}
    assert "training_args.bin" in os.listdir(model_dir)  # it exists locally, it is just never sent

    # Each file operation points at the file on disk, with its real size; the card comes from memory.
    for op in operations:
        if op.path_in_repo != "README.md":
            assert op.upload_info.size == os.path.getsize(os.path.join(model_dir, *op.path_in_repo.split("/")))
    (card_op,) = [op for op in operations if op.path_in_repo == "README.md"]
    card = operation_bytes(card_op).decode("utf-8")
    assert 'model="acme/prodcat-sample"' in card and "license: apache-2.0" in card
    # After the commit the local card matches what was pushed.
    assert open(os.path.join(model_dir, "README.md"), encoding="utf-8").read() == card


NGRAM_FILES = {"ngram/config.json", "ngram/vocabulary.json", "ngram/weights.safetensors"}


def ngram_word_count(model_dir: str) -> int:
    with open(os.path.join(model_dir, "ngram", "vocabulary.json"), encoding="utf-8") as handle:
        return len(json.load(handle)["word"])


def test_files_to_push_carry_ngram_unless_left_out(model_dir, tmp_path):
    assert NGRAM_FILES <= set(hub.files_to_push(model_dir))
    without = hub.files_to_push(model_dir, include_ngram=False)
    assert not [rel for rel in without if rel.startswith("ngram/")]
    assert set(hub.files_to_push(model_dir)) - set(without) == NGRAM_FILES
    # A folder without the n-gram model's config is not a model: nothing of it is sent.
    os.remove(os.path.join(model_dir, "ngram", "config.json"))
    assert not [rel for rel in hub.files_to_push(model_dir) if rel.startswith("ngram/")]


def test_push_says_that_ngram_goes_with_it_and_how_to_leave_it_out(model_dir, caplog):
    caplog.set_level(logging.INFO, logger="prodcat.hub.push")
    with simulated_hub() as (_, create_commit):
        hub.push_output_dir(model_dir, "acme/prodcat-sample", token=TOKEN)
    (line,) = [r.getMessage() for r in caplog.records if "ngram/" in r.getMessage()]
    assert f"vocabulary.json lists {ngram_word_count(model_dir):,} words and word pairs from the training texts" in line
    assert "--ngram_ensemble false" in line
    assert NGRAM_FILES <= {op.path_in_repo for op in sent_operations(create_commit)}
    (card_op,) = [op for op in sent_operations(create_commit) if op.path_in_repo == "README.md"]
    card = operation_bytes(card_op).decode("utf-8")
    assert "## Prediction paths" in card and '`pipeline("text-classification", model="acme/prodcat-sample")`' in card


@pytest.mark.parametrize("entry", ["hub", "cli"])
def test_ngram_ensemble_false_leaves_ngram_out_of_the_push_and_the_card(model_dir, caplog, capsys, entry):
    caplog.set_level(logging.INFO, logger="prodcat.hub.push")
    argv = [model_dir, "--hub_model_id", "acme/prodcat-sample", "--token", TOKEN, "--ngram_ensemble", "false"]
    with simulated_hub() as (_, create_commit):
        assert (push_cli.main(argv) if entry == "hub" else cli.main(["push", *argv])) == 0
    operations = sent_operations(create_commit)
    assert not [op.path_in_repo for op in operations if op.path_in_repo.startswith("ngram/")]
    (card_op,) = [op for op in operations if op.path_in_repo == "README.md"]
    card = operation_bytes(card_op).decode("utf-8")
    assert "ngram" not in card and "n-gram" not in card and "--ensemble" not in card
    assert not [r for r in caplog.records if "ngram/" in r.getMessage()]
    assert os.path.isfile(os.path.join(model_dir, "ngram", "vocabulary.json"))  # left out of the push, not deleted


def test_ngram_ensemble_flag_parses_like_a_boolean(capsys):
    parser = push_cli.build_parser()
    base = ["outputs/model", "--hub_model_id", "acme/x"]
    assert parser.parse_args(base).ngram_ensemble is True
    assert parser.parse_args([*base, "--ngram_ensemble"]).ngram_ensemble is True
    assert parser.parse_args([*base, "--ngram_ensemble", "False"]).ngram_ensemble is False
    assert parser.parse_args([*base, "--ngram_ensemble", "true"]).ngram_ensemble is True
    assert cli.main(["push", *base, "--ngram_ensemble", TOKEN]) == 2
    err = capsys.readouterr().err.strip()
    assert "--ngram_ensemble" in err and "true or false" in err and TOKEN not in err


def test_include_checkpoints_adds_the_training_state(model_dir):
    with simulated_hub() as (_, create_commit):
        hub.push_output_dir(model_dir, "acme/prodcat-sample", token=TOKEN, include_checkpoints=True)
    paths = {op.path_in_repo for op in sent_operations(create_commit)}
    assert {"checkpoint-8/optimizer.pt", "checkpoint-8/scheduler.pt", "checkpoint-8/rng_state.pth"} <= paths
    assert "training_args.bin" not in paths  # top-level pickle: still never sent


def test_bare_repo_name_gets_the_full_id_in_the_card(model_dir):
    with simulated_hub(repo_id="alice/prodcat-sample") as (_, create_commit):
        hub.push_output_dir(model_dir, "prodcat-sample", token=TOKEN)
    (card_op,) = [op for op in sent_operations(create_commit) if op.path_in_repo == "README.md"]
    assert 'model="alice/prodcat-sample"' in operation_bytes(card_op).decode("utf-8")


def test_token_never_reaches_a_file_a_log_or_the_console(model_dir, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with simulated_hub():
        assert push_cli.main([model_dir, "--hub_model_id", "acme/prodcat-sample", "--token", TOKEN]) == 0
    out, err = capsys.readouterr()
    assert "https://huggingface.co/acme/prodcat-sample" in out
    assert TOKEN not in out + err + caplog.text
    needle = TOKEN.encode()
    for rel in snapshot(model_dir):
        with open(os.path.join(model_dir, rel), "rb") as handle:
            assert needle not in handle.read(), rel


def test_a_file_containing_the_token_is_refused(model_dir):
    with open(os.path.join(model_dir, "checkpoint-8", "optimizer.pt"), "wb") as handle:
        handle.write(b"\x80\x04" + TOKEN.encode() + b"\x00")
    with simulated_hub() as (create_repo, create_commit), pytest.raises(ProdcatError, match="contains your Hugging Face token") as info:
        hub.push_output_dir(model_dir, "acme/prodcat-sample", token=TOKEN, include_checkpoints=True)
    assert TOKEN not in str(info.value)
    create_repo.assert_not_called()
    create_commit.assert_not_called()


def test_training_integration_keeps_the_token_out_of_training_args(monkeypatch):
    """Trainer pickles TrainingArguments into training_args.bin: the token must be gone before that."""
    from prodcat.training.config import parse_train_args

    _, _, training_args = parse_train_args(
        ["--push_to_hub", "--hub_model_id", "acme/prodcat-sample", "--hub_token", TOKEN, "--hub_private_repo", "true"]
    )
    request = hub.take_push_request(training_args)
    assert request == hub.PushRequest("acme/prodcat-sample", private=True, token=TOKEN)
    assert TOKEN not in repr(request)
    assert training_args.push_to_hub is False and training_args.hub_token is None
    buffer = io.BytesIO()
    torch.save(training_args, buffer)  # what Trainer writes to training_args.bin
    assert TOKEN.encode() not in buffer.getvalue()

    _, _, plain = parse_train_args([])
    assert hub.take_push_request(plain) is None
    _, _, no_id = parse_train_args(["--push_to_hub"])
    with pytest.raises(ProdcatError, match="no --hub_model_id"):
        hub.take_push_request(no_id)


def test_training_end_writes_the_card_and_pushes(model_dir):
    request = hub.PushRequest("acme/prodcat-sample", private=None, token=TOKEN)
    with simulated_hub() as (_, create_commit):
        url = hub.finish_training_push(model_dir, request, license="mit", dataset_name="sample products")
    assert url.endswith("/commit/0123abc")
    meta = metadata_load(os.path.join(model_dir, "README.md"))
    assert meta["license"] == "mit" and meta["model-index"][0]["name"] == "prodcat-sample"
    assert {op.path_in_repo for op in sent_operations(create_commit)} >= {"README.md", "model.safetensors"}
    with simulated_hub() as (create_repo, _):
        assert hub.finish_training_push(model_dir, None) is None  # no push asked: card only
    create_repo.assert_not_called()


def test_training_end_with_ngram_left_out_pushes_no_ngram(model_dir):
    """A run trained with --ngram_ensemble false: an ngram/ left in the folder is neither described nor sent."""
    request = hub.PushRequest("acme/prodcat-sample", private=None, token=TOKEN)
    with simulated_hub() as (_, create_commit):
        hub.finish_training_push(model_dir, request, include_ngram=False)
    assert not [op.path_in_repo for op in sent_operations(create_commit) if op.path_in_repo.startswith("ngram/")]
    assert "ngram" not in open(os.path.join(model_dir, "README.md"), encoding="utf-8").read()


def test_no_token_is_a_one_line_error_before_any_request(model_dir, no_saved_login):
    before = snapshot(model_dir)
    with simulated_hub() as (create_repo, _), pytest.raises(ProdcatError) as info:
        hub.push_output_dir(model_dir, "acme/prodcat-sample")
    message = str(info.value)
    assert "no Hugging Face token" in message and "HF_TOKEN" in message and "--token" in message and "\n" not in message
    create_repo.assert_not_called()
    assert snapshot(model_dir) == before


@pytest.mark.parametrize("repo_id", ["acme/prodcat/sample", "acme/prodcat sample", "acme--x/model", "acme/.model", ""])
def test_malformed_repo_id_is_rejected_with_huggingface_hubs_validator(model_dir, repo_id):
    with simulated_hub() as (create_repo, _), pytest.raises(ProdcatError, match="hub_model_id") as info:
        hub.push_output_dir(model_dir, repo_id, token=TOKEN)
    assert "\n" not in str(info.value)
    create_repo.assert_not_called()


@pytest.mark.parametrize(
    "where, error",
    [
        ("create_repo", http_client.ConnectError("[Errno -3] Temporary failure in name resolution")),
        ("create_repo", requests.exceptions.ConnectionError("Max retries exceeded with url: /api/repos/create")),
        ("create_commit", http_client.ReadTimeout("The read operation timed out")),
        ("create_commit", ConnectionResetError(104, "Connection reset by peer")),
    ],
)
def test_network_failure_says_the_model_stays_on_disk(model_dir, where, error):
    before = snapshot(model_dir)
    kwargs = {"create_repo_error": error} if where == "create_repo" else {"commit_error": error}
    with simulated_hub(**kwargs), pytest.raises(ProdcatError) as info:
        hub.push_output_dir(model_dir, "acme/prodcat-sample", token=TOKEN)
    message = str(info.value)
    assert "cannot reach the Hugging Face Hub" in message and f"stays on disk at {model_dir}" in message
    assert "\n" not in message and TOKEN not in message
    assert snapshot(model_dir) == before  # README.md included: nothing changes on failure


def test_offline_mode_is_refused_by_huggingface_hub_itself(model_dir, monkeypatch):
    """No mock: the real create_repo runs and huggingface_hub's request hook blocks it."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    before = snapshot(model_dir)
    with pytest.raises(ProdcatError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\).*stays on disk"):
        hub.push_output_dir(model_dir, "acme/prodcat-sample", token=TOKEN)
    assert snapshot(model_dir) == before


@pytest.mark.parametrize(
    "status, expected", [(401, "rejected the token"), (403, "cannot write to acme/prodcat-sample"), (500, r"refused the upload \(500")]
)
def test_hub_http_errors_are_one_line(model_dir, status, expected):
    response = http_client.Response(status, request=http_client.Request("POST", "https://huggingface.co/api/repos/create"))
    error = HfHubHTTPError(f"{status} Client Error", response=response)
    with simulated_hub(create_repo_error=error), pytest.raises(ProdcatError, match=expected) as info:
        hub.push_output_dir(model_dir, "acme/prodcat-sample", token=TOKEN)
    assert "stays on disk" in str(info.value) and "\n" not in str(info.value)


def test_output_dir_without_a_model(tmp_path):
    with pytest.raises(ProdcatError, match="no readable config.json"):
        hub.push_output_dir(str(tmp_path), "acme/prodcat-sample", token=TOKEN)
    with open(tmp_path / "config.json", "w") as handle:
        json.dump({"id2label": {"0": "A", "1": "B"}}, handle)
    with pytest.raises(ProdcatError, match="no model.safetensors"):
        hub.push_output_dir(str(tmp_path), "acme/prodcat-sample", token=TOKEN)


def test_cli_errors_are_one_line_and_never_echo_a_token(model_dir, capsys):
    assert cli.main(["push", model_dir, "--hub_model_id", "not a repo", "--token", TOKEN]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prodcat: error:") and "\n" not in err and TOKEN not in err
    assert cli.main(["push", model_dir, "--hub_model_id", "acme/x", "--tokn", TOKEN]) == 2  # typo in the flag
    err = capsys.readouterr().err.strip()
    assert "unrecognized arguments" in err and TOKEN not in err


def fill_hub_cache(cache: str, repo_id: str, operations: list[CommitOperationAdd], commit: str = "0123abc" * 5 + "01234") -> str:
    """Lay out ``operations`` as hf_hub_download would have cached them after a download of main."""
    repo_dir = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    snapshot_dir = os.path.join(repo_dir, "snapshots", commit)
    for op in operations:
        target = os.path.join(snapshot_dir, *op.path_in_repo.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(operation_bytes(op))
    os.makedirs(os.path.join(repo_dir, "refs"))
    with open(os.path.join(repo_dir, "refs", "main"), "w") as handle:
        handle.write(commit)
    return snapshot_dir


@pytest.fixture()
def hub_cache_env(model_dir, tmp_path) -> dict[str, str]:
    """Environment of a process that sees ``acme/prodcat-sample`` in its Hub cache, offline."""
    with simulated_hub() as (_, create_commit):
        hub.push_output_dir(model_dir, "acme/prodcat-sample", token=TOKEN)
    cache = str(tmp_path / "hub-cache")
    fill_hub_cache(cache, "acme/prodcat-sample", sent_operations(create_commit))
    return {
        **os.environ, "HF_HUB_CACHE": cache, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"
    }


def test_model_loads_by_hub_id_from_the_cache_offline(model_dir, hub_cache_env, tmp_path):
    """What a push sends is enough to load the model by Hub id: pipeline() from the cache, offline."""
    with open(os.path.join(model_dir, "config.json")) as handle:
        labels = set(json.load(handle)["id2label"].values())

    script = (
        "import json, sys\n"
        "from transformers import pipeline\n"
        "classifier = pipeline('text-classification', model='acme/prodcat-sample', device='cpu')\n"
        "print(json.dumps(classifier(sys.argv[1:], top_k=2)))\n"
    )
    env = dict(hub_cache_env)
    texts = ["Wireless noise-cancelling headphones", "Organic green tea, 100 bags"]
    result = subprocess.run([sys.executable, "-c", script, *texts], env=env, capture_output=True, text=True, timeout=240, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(predictions) == len(texts)
    for top in predictions:
        assert len(top) == 2 and {p["label"] for p in top} <= labels
        assert all(" > " in p["label"] for p in top)

    # Without the cache entry the same id must fail offline (the load really came from the cache).
    env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")
    missing = subprocess.run([sys.executable, "-c", script, "x"], env=env, capture_output=True, text=True, timeout=240, cwd=str(tmp_path))
    assert missing.returncode != 0


def test_predict_py_loads_by_hub_id_from_the_cache_offline(model_dir, hub_cache_env, tmp_path):
    """``predict.py --model org/name`` goes through the same cache (skipped until the predictor exists)."""
    pytest.importorskip("prodcat.cli.predict", reason="prodcat.cli.predict (the predictor) is not there yet")
    with open(os.path.join(model_dir, "config.json")) as handle:
        labels = set(json.load(handle)["id2label"].values())
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "predict.py"), "--model", "acme/prodcat-sample", "Wireless noise-cancelling headphones"],
        env=hub_cache_env, capture_output=True, text=True, timeout=240, cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(label in result.stdout for label in labels), result.stdout[-2000:]
