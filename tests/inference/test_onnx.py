"""ONNX Runtime backend: agreement with torch (fp32 and int8), export cache and its location."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from prodcat.cli.predict import main
from prodcat.inference import onnx_backend
from prodcat.inference.categorizer import Categorizer
from tests.conftest import clone_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "data", "sample_products.csv")

#: fp32 ONNX must reproduce torch: same top-1 for every text, logits within this absolute tolerance.
FP32_LOGIT_ATOL = 1e-3
#: Pure int8 dynamic quantization perturbs logits; top-1 must still agree with torch on at least this
#: share of the texts (the fixture model is trained for a few steps only, so a few near-ties may flip).
#: The default int8 path re-checks near-ties in fp32 and must agree at least as often.
INT8_MIN_AGREEMENT = 0.97




@pytest.fixture(autouse=True)
def private_user_cache(tmp_path, monkeypatch) -> None:
    """Export locks (and any user-cache export) go to a temporary folder, never to ~/.cache."""
    monkeypatch.setenv("PRODCAT_CACHE", str(tmp_path / "prodcat-cache"))


@pytest.fixture(scope="module")
def model_copy(trained_model_dir, tmp_path_factory) -> str:
    return clone_model(trained_model_dir, str(tmp_path_factory.mktemp("onnx") / "model"))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return pd.read_csv(SAMPLE)["description"].head(200).tolist()


def test_onnx_fp32_and_int8_agree_with_torch_on_top1(model_copy, texts):
    torch_logits = Categorizer.from_pretrained(model_copy, device="cpu").logits(texts)
    fp32 = Categorizer.from_pretrained(model_copy, backend="onnx")
    int8 = Categorizer.from_pretrained(model_copy, backend="onnx", quantize=True, recheck_margin=0)
    assert fp32.backend == "onnx" and int8.backend == "onnx-int8"
    fp32_logits = fp32.logits(texts, batch_size=16)
    np.testing.assert_allclose(fp32_logits, torch_logits, atol=FP32_LOGIT_ATOL, rtol=0)
    assert (fp32_logits.argmax(axis=1) == torch_logits.argmax(axis=1)).all()
    int8_logits = int8.logits(texts, batch_size=16)
    agreement = float((int8_logits.argmax(axis=1) == torch_logits.argmax(axis=1)).mean())
    assert agreement >= INT8_MIN_AGREEMENT, f"int8 top-1 agreement {agreement:.3f} < {INT8_MIN_AGREEMENT}"
    assert os.path.getsize(int8.forward.path) < os.path.getsize(fp32.forward.path) / 2

    # Default int8: near-ties (int8 top-2 margin < recheck margin) are recomputed with fp32; the
    # margin is the one measured on the category names at quantization time.
    default = Categorizer.from_pretrained(model_copy, backend="onnx", quantize=True)
    stored = json.load(open(os.path.join(model_copy, "onnx", "manifest.json")))["recheck_margin"]
    if stored > 0:
        assert isinstance(default.forward, onnx_backend.RecheckedRunner) and default.forward.margin == stored
    else:  # int8 flipped no more probe texts than allowed: plain int8
        assert not isinstance(default.forward, onnx_backend.RecheckedRunner)
    # A margin wide enough to re-check some of the sample's rows, to see which rows get replaced.
    rechecked = Categorizer.from_pretrained(model_copy, backend="onnx", quantize=True, recheck_margin=2.0)
    logits = rechecked.logits(texts, batch_size=16)
    top2 = np.sort(int8_logits, axis=1)[:, -2:]
    margin = rechecked.forward.margin
    near_tie = top2[:, 1] - top2[:, 0] < margin
    np.testing.assert_allclose(logits[near_tie], fp32_logits[near_tie], atol=FP32_LOGIT_ATOL)
    np.testing.assert_allclose(logits[~near_tie], int8_logits[~near_tie], atol=1e-6)
    assert rechecked.forward.rechecked == int(near_tie.sum())
    assert (logits.argmax(axis=1) == torch_logits.argmax(axis=1)).mean() >= agreement


def test_recheck_replaces_only_near_ties():
    int8_logits = np.array([[5.0, 4.5, 0.0], [9.0, 1.0, 0.0], [0.0, 2.0, 2.9]], dtype=np.float32)
    fp32_logits = np.array([[1.0, 2.0, 0.0], [7.0, 1.0, 0.0], [0.0, 3.0, 1.0]], dtype=np.float32)

    class Fake:
        path = "fake.onnx"
        input_names = ["input_ids"]

        def __init__(self, logits):
            self.logits = logits
            self.seen: list[list[int]] = []

        def __call__(self, features):
            rows = features["input_ids"][:, 0].tolist()
            self.seen.append(rows)
            return self.logits[rows].copy()

    int8, fp32 = Fake(int8_logits), Fake(fp32_logits)
    runner = onnx_backend.RecheckedRunner(int8, fp32, margin=1.0)
    out = runner({"input_ids": np.array([[0, 7], [1, 7], [2, 7]])})
    assert fp32.seen == [[0, 2]]  # margins 0.5 and 0.9 are below 1.0; 8.0 is not
    np.testing.assert_array_equal(out, np.stack([fp32_logits[0], int8_logits[1], fp32_logits[2]]))
    assert (runner.rows, runner.rechecked) == (3, 2)


def test_int8_and_fp32_sessions_that_take_turns_stop_spinning_when_a_run_returns(model_copy):
    def setting(runner, key: str) -> str:
        try:
            return runner.session.get_session_options().get_session_config_entry(key)
        except RuntimeError:  # onnxruntime raises for a key that was never set
            return "default"

    def spinning(runner) -> tuple[str, str]:
        return setting(runner, "session.intra_op.allow_spinning"), setting(runner, "session.force_spinning_stop")

    rechecked = Categorizer.from_pretrained(model_copy, backend="onnx", quantize=True, recheck_margin=2.0).forward
    assert isinstance(rechecked, onnx_backend.RecheckedRunner)
    # Both spin inside a run (onnxruntime's default) and stop when it returns, so neither slows the other.
    assert spinning(rechecked.int8) == spinning(rechecked.fp32) == ("default", "1")
    # A session that runs alone keeps onnxruntime's defaults (spinning threads answer the next call faster).
    assert spinning(Categorizer.from_pretrained(model_copy, backend="onnx").forward) == ("default", "default")
    plain_int8 = Categorizer.from_pretrained(model_copy, backend="onnx", quantize=True, recheck_margin=0).forward
    assert spinning(plain_int8) == ("default", "default")


def test_probe_texts_fill_up_with_pairs_of_leaf_names():
    labels = ["Audio > Headphones", "Audio > Speakers", "Computers > Laptops"]
    probes = onnx_backend.probe_texts(labels, extra=["usb cable"])
    names = ["usb cable", "Headphones", "Audio", "Audio Headphones", "Speakers", "Audio Speakers", "Laptops", "Computers",
             "Computers Laptops"]
    assert probes[: len(names)] == names  # the names and paths first, in order
    leaves = ["Headphones", "Speakers", "Laptops"]
    assert sorted(probes[len(names):]) == sorted(f"{a} {b}" for a in leaves for b in leaves if a != b)  # every ordered pair
    assert probes == onnx_backend.probe_texts(labels, extra=["usb cable"])  # seeded: the same probes every time
    # Many categories: pairs fill up to the limit, without repeats.
    many = onnx_backend.probe_texts([f"Category {i}" for i in range(60)], limit=300)
    assert len(many) == 300 == len(set(many)) and many[:60] == [f"Category {i}" for i in range(60)]
    huge = onnx_backend.probe_texts([f"Category {i}" for i in range(2000)], limit=1024)  # no pairs needed
    assert huge == [f"Category {i}" for i in range(1024)]


def test_recheck_margin_leaves_at_most_the_allowed_share_of_flips():
    rng = np.random.default_rng(0)
    fp32 = rng.normal(size=(2000, 30)).astype(np.float32)
    int8 = fp32 + rng.normal(scale=0.3, size=fp32.shape).astype(np.float32)
    flipped = int8.argmax(axis=1) != fp32.argmax(axis=1)
    assert flipped.sum() > 20  # the noise flips some rows, or the test says nothing
    top2 = np.sort(int8, axis=1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    for miss_rate in (0.0, 0.001, 0.005):
        margin = onnx_backend.margin_for_miss_rate(int8, fp32, miss_rate)
        unchecked_flips = int((flipped & (margins >= margin)).sum())
        assert unchecked_flips <= int(miss_rate * len(fp32))
        # ...and it is the smallest such margin: one flip fewer re-checked would exceed the allowance.
        assert (
            int((flipped & (margins >= np.nextafter(margins[flipped & (margins < margin)].max(), -np.inf))).sum())
            > int(miss_rate * len(fp32))
        )
    assert onnx_backend.margin_for_miss_rate(fp32, fp32) == 0.0  # nothing flipped: pure int8


def test_export_is_cached_next_to_the_model_and_reused(model_copy, texts, monkeypatch):
    fp32_path = onnx_backend.ensure_onnx_model(model_copy)
    int8_path = onnx_backend.ensure_onnx_model(model_copy, quantize=True)
    assert os.path.dirname(fp32_path) == os.path.join(model_copy, "onnx") == os.path.dirname(int8_path)
    manifest = json.load(open(os.path.join(model_copy, "onnx", "manifest.json")))
    assert manifest["fingerprint"] == onnx_backend.model_fingerprint(model_copy)
    stamps = (os.stat(fp32_path).st_mtime_ns, os.stat(int8_path).st_mtime_ns)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached ONNX files should have been reused")

    monkeypatch.setattr(onnx_backend, "export_onnx", must_not_run)
    monkeypatch.setattr(onnx_backend, "quantize_onnx", must_not_run)
    reloaded = Categorizer.from_pretrained(model_copy, backend="onnx", quantize=True)
    assert reloaded.forward.path == int8_path
    assert reloaded.predict(texts[:2])[0].category
    assert (os.stat(fp32_path).st_mtime_ns, os.stat(int8_path).st_mtime_ns) == stamps


def test_up_to_date_onnx_folder_is_used_even_when_read_only(model_copy, monkeypatch):
    shipped = onnx_backend.ensure_onnx_model(model_copy, quantize=True)  # e.g. pushed to / pulled from the Hub

    def must_not_run(*args, **kwargs):
        raise AssertionError("an up-to-date onnx/ folder should be used as it is")

    monkeypatch.setattr(onnx_backend, "_writable", lambda folder: False)
    monkeypatch.setattr(onnx_backend, "export_onnx", must_not_run)
    monkeypatch.setattr(onnx_backend, "quantize_onnx", must_not_run)
    assert onnx_backend.ensure_onnx_model(model_copy, quantize=True) == shipped
    assert os.path.dirname(shipped) == os.path.join(model_copy, "onnx")


@pytest.fixture
def stub_export(monkeypatch) -> list[str]:
    """Replace the (slow) export with a stub that records calls and writes a placeholder file."""
    calls: list[str] = []

    def fake_export(model_dir, path, trust_remote_code=False):
        calls.append(model_dir)
        with open(path, "wb") as handle:
            handle.write(b"placeholder")
        return False

    monkeypatch.setattr(onnx_backend, "export_onnx", fake_export)
    return calls


def test_changed_config_or_weights_invalidate_the_cache(trained_model_dir, tmp_path, stub_export):
    folder = clone_model(trained_model_dir, str(tmp_path / "model"))
    onnx_backend.ensure_onnx_model(folder)
    onnx_backend.ensure_onnx_model(folder)
    assert len(stub_export) == 1
    config = json.load(open(os.path.join(folder, "config.json")))
    config["prodcat_temperature"] = 1.7
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    onnx_backend.ensure_onnx_model(folder)
    assert len(stub_export) == 2
    weights = os.path.join(folder, "model.safetensors")
    data = open(weights, "rb").read()
    os.remove(weights)  # the clone's weights are a symlink; replace them by a changed real file
    with open(weights, "wb") as handle:
        handle.write(data[:-1] + bytes([data[-1] ^ 1]))
    onnx_backend.ensure_onnx_model(folder)
    assert len(stub_export) == 3


def test_read_only_model_folder_is_cached_in_the_user_cache(trained_model_dir, tmp_path, stub_export, monkeypatch):
    monkeypatch.setenv("PRODCAT_CACHE", str(tmp_path / "user-cache"))
    read_only = clone_model(trained_model_dir, str(tmp_path / "read-only"))
    monkeypatch.setattr(onnx_backend, "_writable", lambda folder: False)  # tests run as root: chmod is no test
    path = onnx_backend.ensure_onnx_model(read_only)
    assert path.startswith(str(tmp_path / "user-cache" / "onnx")) and os.path.isfile(path)
    assert not os.path.exists(os.path.join(read_only, "onnx"))
    assert onnx_backend.ensure_onnx_model(read_only) == path and len(stub_export) == 1


def test_hub_cache_snapshot_is_cached_in_the_user_cache(trained_model_dir, tmp_path, stub_export, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("PRODCAT_CACHE", str(tmp_path / "user-cache"))
    snapshot = clone_model(trained_model_dir, str(tmp_path / "hub" / "models--org--name" / "snapshots" / "abc"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    path = onnx_backend.ensure_onnx_model(snapshot)
    assert path.startswith(str(tmp_path / "user-cache" / "onnx"))
    assert not os.path.exists(os.path.join(snapshot, "onnx"))


def test_cli_onnx_backend_with_quantize_and_threads(model_copy, texts, capsys):
    expected = Categorizer.from_pretrained(model_copy, backend="onnx", quantize=True).predict(texts[:3])
    argv = ["--model", model_copy, *texts[:3], "--backend", "onnx", "--quantize", "--num_threads", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" -> ")[1].rsplit(" (", 1)[0] for line in lines] == [p.category for p in expected]
    runner = onnx_backend.OnnxRunner(onnx_backend.ensure_onnx_model(model_copy), num_threads=1)
    assert runner.session.get_session_options().intra_op_num_threads == 1
