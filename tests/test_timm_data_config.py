"""timm's data-config helpers read our models: the transform they build is the one eval and predict use."""

import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit.data.transforms import eval_transform

timm_data = pytest.importorskip("timm.data")


@pytest.mark.parametrize("name, options", [("crossvit_9_240", {}), ("crossvit_15_dagger_408", {}),
                                           ("crossvit_micro_28", {}), ("crossvit_9_240", {"img_size": 288})])
def test_timms_transform_equals_ours(name, options):
    with torch.device("meta"):
        model = crossvit.create_model(name, **options)
    config = timm_data.resolve_model_data_config(model)
    assert config["input_size"] == model.meta.input_size and config["crop_pct"] == model.meta.crop_pct
    assert tuple(config["mean"]) == model.meta.mean and config["interpolation"] == model.meta.interpolation
    theirs = timm_data.create_transform(**config, is_training=False)
    ours = eval_transform(model.meta)
    rng = np.random.default_rng(0)
    mode = "L" if model.meta.input_size[0] == 1 else "RGB"
    shape = (333, 301) if mode == "L" else (333, 301, 3)
    image = Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode)
    torch.testing.assert_close(theirs(image), ours(image), rtol=0, atol=0)
    assert model.default_cfg == model.pretrained_cfg
