import pytest
import torch

from tvolib.weights import (ResourceMissing, create_image_encoder, efficientnet_lite0_state_dict,
                              resolve_text_encoder)


def test_efficientnet_lite0_weights_map_onto_timm():
    sd = efficientnet_lite0_state_dict()
    assert "conv_stem.weight" in sd and sd["classifier.weight"].shape == (1000, 1280)
    m = create_image_encoder("efficientnet_lite0")
    with torch.no_grad():
        f = m(torch.zeros(1, 3, 224, 224))
    assert f.shape == (1, 1280)
    assert torch.equal(m.state_dict()["conv_stem.weight"], sd["conv_stem.weight"])


def test_absent_weights_are_a_clear_message():
    with pytest.raises(ResourceMissing, match="efficientnet_lite0"):
        create_image_encoder("vit_base_patch32_224")
    assert create_image_encoder("vit_base_patch32_224", allow_random=True) is not None
    with pytest.raises(ResourceMissing, match="local Hugging Face cache"):
        resolve_text_encoder("no-such-org/no-such-model")
    with pytest.raises(ResourceMissing, match="not found"):
        create_image_encoder("efficientnet_lite0", weights="/nonexistent/w.pth")


def test_minilm_is_offline():
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(resolve_text_encoder("minilm"))
    assert cfg.hidden_size == 384 and cfg.model_type == "bert"


def _fake_mpnet_parts(folder, payload=None):
    """A small zip laid out like the MPNet wheels' (one nested model folder), cut into five parts."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        z.writestr("all-mpnet-base-v2/vocab.txt", "[PAD]\n" * 5000)
    data = buf.getvalue() if payload is None else payload
    step = -(-len(data) // 5)
    parts = []
    for i in range(5):
        p = folder / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        p.write_bytes(data[i * step:(i + 1) * step])
        parts.append(p)
    return parts


def test_mpnet_unpacks_once_for_runs_started_side_by_side(tmp_path, monkeypatch):
    import threading
    import tvolib.weights as weights
    parts = _fake_mpnet_parts(tmp_path)
    monkeypatch.setattr(weights, "mpnet_parts", lambda: parts)
    monkeypatch.setenv("TVOMNER_HOME", str(tmp_path / "home"))
    start, found, errors = threading.Barrier(4), [], []

    def one():
        start.wait()
        try:
            found.append(weights.mpnet_path())
        except Exception as e:                       # collected: a thread's exception would be lost
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    root = tmp_path / "home" / "models" / "all-mpnet-base-v2" / "all-mpnet-base-v2"
    assert found == [root] * 4
    assert (root / "vocab.txt").read_text() == "[PAD]\n" * 5000
    assert sorted(p.name for p in (tmp_path / "home" / "models").iterdir()) == [
        "all-mpnet-base-v2", "all-mpnet-base-v2.lock"]      # no scratch folder or joined zip left


def test_mpnet_replaces_an_interrupted_unpack_and_names_corrupt_parts(tmp_path, monkeypatch):
    import tvolib.weights as weights
    monkeypatch.setenv("TVOMNER_HOME", str(tmp_path / "home"))
    target = tmp_path / "home" / "models" / "all-mpnet-base-v2"
    (target / "all-mpnet-base-v2").mkdir(parents=True)
    (target / "all-mpnet-base-v2" / "config.json").write_text("{")     # cut short, no .complete
    bad = _fake_mpnet_parts(tmp_path, payload=b"not a zip" * 100)
    monkeypatch.setattr(weights, "mpnet_parts", lambda: bad)
    with pytest.raises(ResourceMissing, match=r"do not join into a valid zip.*--force-reinstall"):
        weights.mpnet_path()
    assert not (target / ".complete").exists()
    good = _fake_mpnet_parts(tmp_path / "home")
    monkeypatch.setattr(weights, "mpnet_parts", lambda: good)
    root = weights.mpnet_path()
    assert (root / "config.json").read_text() == '{"model_type": "mpnet"}'
    assert (target / ".complete").exists()
