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
