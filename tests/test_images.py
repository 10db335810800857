import numpy as np
import pytest
from PIL import Image

from tvolib import images
from tvolib.data import load_dataset, statistics
from tvolib.vfo.encoders import make_transform


def rgb(w=64, h=48, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    rgb().save(d / "ok.jpg", quality=90)
    full = (d / "ok.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (d / "text.jpeg").write_bytes(b"this is not an image at all")
    rgb().convert("CMYK").save(d / "cmyk.jpg")
    rgb().convert("L").save(d / "gray.png")
    rgb().convert("RGBA").save(d / "alpha.png")
    frames = [rgb(seed=i) for i in range(3)]
    frames[0].save(d / "anim.png", save_all=True, append_images=frames[1:])  # APNG
    Image.new("1", (9000, 9000)).save(d / "huge.png")                       # 81 Mpx, tiny file
    rgb(5000, 20).save(d / "wide.png")
    return d


@pytest.mark.parametrize("name,status", [
    ("ok.jpg", "ok"),
    ("missing.jpg", "missing"),
    ("truncated.jpg", "unreadable: truncated"),
    ("corrupt.png", "unreadable: corrupt"),
    ("text.jpeg", "unreadable: corrupt"),
    ("cmyk.jpg", "ok: converted from CMYK"),
    ("gray.png", "ok: converted from L"),
    ("alpha.png", "ok: converted from RGBA"),
    ("anim.png", "ok: first of 3 frames"),
    ("huge.png", "unreadable: too large"),
    ("wide.png", "ok: downscaled from 5000x20"),
])
def test_bad_images_never_crash(bad_images, name, status):
    img, st = images.load_image(bad_images / name)
    assert st.startswith(status), st
    assert (img is not None) == images.usable(st)
    if img is not None:
        assert img.mode == "RGB" and max(img.size) <= images.MAX_SIDE


def test_flagged_tweets_are_kept_and_counted(tmp_path, bad_images):
    data = tmp_path / "data"
    data.mkdir()
    names = ["ok", "truncated", "corrupt", "cmyk", "gray", "anim", "huge", "gone"]
    block = "\n\n".join(f"IMGID:{n}\nhello\tO\nParis\tB-LOC" for n in names) + "\n"
    for s in ("train", "valid", "test"):
        (data / f"{s}.txt").write_text(block)
    ds = load_dataset(data, image_dir=bad_images, check_images=True)
    assert len(ds["train"]) == len(names)
    by_id = {t.id: t.image_status for t in ds["train"]}
    assert by_id["gone"] == "missing" and by_id["ok"] == "ok"
    assert by_id["huge"] == "unreadable: too large"
    assert statistics(ds)["train"]["Images missing"] == 4     # truncated, corrupt, huge, gone
    report = images.image_report(ds)
    assert report["unreadable: truncated"] == 3 and report["missing"] == 3


@pytest.mark.parametrize("encoder,mean", [("efficientnet_lite0", 0.485), ("vit_base_patch32_224", 0.5)])
def test_transform_follows_encoder_config(encoder, mean):
    tf = make_transform(encoder)
    x = tf(Image.new("RGB", (256, 180), (255, 255, 255)))
    assert x.shape == (3, 224, 224)
    # white normalised with the encoder's own mean/std
    std = {"efficientnet_lite0": 0.229, "vit_base_patch32_224": 0.5}[encoder]
    assert x[0].mean().item() == pytest.approx((1 - mean) / std, abs=1e-3)
