"""The bundled default model ships, loads by default and segments real GlaS glands."""
import src_model
from src_model.checkpoint import bundled_model_path, read_checkpoint
from src_model.inference import predict
from src_model.io import read_image, read_mask
from src_model.metrics import pixel_dice


def test_bundled_model_is_small_and_described():
    path = bundled_model_path()
    assert path.is_file() and path.stat().st_size < 10_000_000
    data = read_checkpoint(path)
    assert "optimizer" not in data
    prov = data["provenance"]
    assert set(prov["val_ids"]).isdisjoint(prov["labelled_ids"])
    assert not any(i.startswith("test") for i in prov["labelled_ids"] + prov["unlabelled_ids"])
    assert (path.parent / "MODEL_CARD.md").is_file()


def test_load_checkpoint_without_a_path_returns_the_bundled_model():
    model = src_model.load_checkpoint()
    assert not model.training
    assert model.checkpoint_path == str(bundled_model_path())


def test_bundled_model_segments_unseen_glas_test_images(glas_dir):
    model = src_model.load_checkpoint()
    for image_id in ("testA_2", "testB_4"):
        image = read_image(glas_dir / "images" / f"{image_id}.png")
        gt = read_mask(glas_dir / "masks" / f"{image_id}.png")
        pred = predict(model, image)
        assert pixel_dice(pred.labels > 0, gt > 0) > 0.75, image_id
        assert 0 <= pred.disagreement.min() and pred.disagreement.max() <= 1
