"""Official checkpoint import reproduces the official implementation's logits (reference fixture)."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from src_model.official import OfficialCheckpointError, model_from_official


def official_state_dict_by_rule(reference_dir: Path):
    """Rebuild the official-format state dict with the weight rule of tests/data/reference/README.md."""
    gen = torch.Generator().manual_seed(0)
    sd = {}
    rows = []
    for line in (reference_dir / "official_mtnet_resnet50_keys.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype = line.split("\t")
        shape = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
        rows.append((key, shape))
    for key, shape in rows:
        if key.startswith("model."):
            continue
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0, dtype=torch.long)
        elif key.endswith("running_mean"):
            sd[key] = 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith(".bias"):
            sd[key] = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 4:
            sd[key] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
        else:
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
    for key, _shape in rows:
        if not key.startswith("model."):
            continue
        rest = key[len("model."):]
        if rest.startswith("conv1."):
            src = "stage1.0." + rest[len("conv1."):]
        elif rest.startswith("bn1."):
            src = "stage1.1." + rest[len("bn1."):]
        else:
            k = int(rest[len("layer")])
            src = f"stage{k + 1}.0." + rest[len("layerK."):]
        sd[key] = sd[src]
    return sd


@pytest.fixture(scope="module")
def official_sd(reference_dir):
    return official_state_dict_by_rule(reference_dir)


def test_official_logits_match_fixture(official_sd, reference_dir):
    fixture = np.load(reference_dir / "official_mtnet_fixture.npz")
    x = torch.rand((2, 3, 128, 128), generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(x.numpy(), fixture["x"], atol=0, rtol=0)
    model = model_from_official(official_sd)
    with torch.inference_mode():
        outs = model(x)
    for i, out in enumerate(outs, start=1):
        diff = np.abs(out.numpy() - fixture[f"branch{i}"]).max()
        assert diff < 1e-4, f"branch{i} max abs diff {diff}"


def test_model_copy_of_encoder_is_enough(official_sd):
    only_model = {k: v for k, v in official_sd.items() if not k.startswith("stage")}
    a = model_from_official(official_sd).state_dict()
    b = model_from_official(only_model).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_foreign_state_dict_is_rejected(official_sd):
    broken = dict(official_sd)
    broken.pop("decoder2.conv2.weight")
    with pytest.raises(OfficialCheckpointError, match="missing"):
        model_from_official(broken)
    with pytest.raises(OfficialCheckpointError):
        model_from_official({"fc.weight": torch.zeros(3)})
