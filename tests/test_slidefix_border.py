"""A gland cut by a chunk side is one numbered gland (src_model.export.GlandExtractor): the split of touching
glands is computed per chunk (with context), and a chunk's window can give a piece along its side to a gland whose
body lies beyond that side; that sliver joins the neighbour's gland instead of being numbered on its own."""
from __future__ import annotations

import numpy as np
import pytest
import zarr
from _slides import glas_mosaic, write_pyramidal_tiff
from scipy import ndimage as ndi

from src_model.export import _TOP, GlandExtractor, instance_levels, write_instances, write_labels_ome_zarr
from src_model.progress import drain
from src_model.slide_predict import predict_slide
from src_model.slide_store import open_store

CHUNK = 1024
SIDE = 1024  # the chunk side between chunks (0, 2) and (1, 2)


@pytest.fixture(scope="module")
def two_chunks(tmp_path_factory, glas_dir):
    """Chunks (0, 2) and (1, 2) of the bundled model's prediction of a 3072 x 3072 GlaS mosaic (chunks of 1024):
    a gland crosses their common side, and the lower chunk's split gives a 27-row sliver of it to the gland above."""
    folder = tmp_path_factory.mktemp("border")
    slide = write_pyramidal_tiff(folder / "mosaic.tif", glas_mosaic(glas_dir, 3072, 3072), levels=2)
    drain(predict_slide(slide, folder / "pred.zarr", chunk=CHUNK, chunks=[(0, 2), (1, 2)]))
    return folder / "pred.zarr"


def _split_on_sides(lab: np.ndarray, chunk: int) -> list:
    """Pairs of different labels touching across a chunk side where one of them starts or stops on that side."""
    objs = ndi.find_objects(lab)
    out = []
    for axis, n in ((0, lab.shape[0]), (1, lab.shape[1])):
        for y in range(chunk, n, chunk):
            a, b = (lab[y - 1], lab[y]) if axis == 0 else (lab[:, y - 1], lab[:, y])
            m = (a > 0) & (b > 0) & (a != b)
            for p, q in set(zip(a[m].tolist(), b[m].tolist(), strict=True)):
                if any(objs[r - 1][axis].start == y or objs[r - 1][axis].stop == y for r in (p, q)):
                    out.append((p, q, axis, y))
    return out


def test_sliver_across_a_chunk_side_joins_its_gland(two_chunks, tmp_path):
    import shutil

    shutil.copytree(two_chunks, tmp_path / "pred.zarr")
    store = open_store(tmp_path / "pred.zarr", mode="r+")
    # the case: a piece of the lower chunk along its top side whose window gland lies mostly above that side
    pieces, n, owned = GlandExtractor(store)._chunk_pieces(1, 2)
    slivers = [i for i in range(1, n + 1) if owned[i] & _TOP]
    assert slivers, "the lower chunk's split gives a piece along its top side to the gland above"
    y0, x0, _, _ = store.chunk_box(1, 2)
    out = drain(write_instances(store))
    lab = instance_levels(store)[0][:]
    for i in slivers:
        ys, xs = np.nonzero(pieces == i)
        numbers = set(lab[ys + y0, xs + x0].tolist())
        assert len(numbers) == 1 and 0 not in numbers
        on_side = xs[ys == 0] + x0
        above = set(lab[SIDE - 1, on_side].tolist()) - {0}
        assert numbers <= above, (numbers, above)  # one label with the gland across the side
    assert _split_on_sides(lab, CHUNK) == []
    # the export's labels are the in-store numbers
    ex = GlandExtractor(open_store(store.path))
    assert len(list(ex.features())) == out["n_glands"]
    write_labels_ome_zarr(ex, tmp_path / "export.ome.zarr")
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "export.ome.zarr"), mode="r")["0"][:], lab)


def test_mutual_best_rule_alone_leaves_the_sliver(two_chunks):
    """Without the rule (pieces joined only with their mutual best partner) the sliver is a gland of its own,
    split from the gland above exactly on the chunk side: what the walk found."""

    class MutualOnly(GlandExtractor):
        def _chunk_pieces(self, cy, cx):
            pieces, n, owned = super()._chunk_pieces(cy, cx)
            return pieces, n, np.zeros_like(owned)

    store = open_store(two_chunks)
    ex = MutualOnly(store)
    list(ex.features())
    lab = np.zeros(store.glands[0].shape, np.uint32)
    for cy, cx, part in ex.label_chunks():
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        lab[y0:y1, x0:x1] = part
    assert [(axis, y) for _, _, axis, y in _split_on_sides(lab, CHUNK)] == [(0, SIDE)]


def _synthetic(tmp_path, glands):
    from src_model.slide_store import StoreInfo, create_store

    info = StoreInfo(slide="synthetic", slide_level=0, downsample=1.0, height=256, width=256, chunk=128, n_levels=1,
                     mpp=None, settings={"min_tissue": 0.0})
    store = create_store(tmp_path / "s.zarr", info)
    for cy, cx in store.all_chunks():
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        g = glands[y0:y1, x0:x1]
        store.write_chunk(cy, cx, np.full(g.shape + (3,), 200, np.uint8), g, g * 50, 1.0)
    return store


def test_a_split_centred_on_the_side_tells_one_gland_from_two(tmp_path):
    """The arbiter of pieces the chunks split differently: one disc across the side is one gland; two discs joined
    by a neck whose narrowest point lies on the side are two."""
    yy, xx = np.mgrid[:256, :256]
    one = (np.hypot(yy - 128, xx - 100) < 50).astype(np.uint8)
    ex = GlandExtractor(_synthetic(tmp_path / "one", one))
    col = one[:, 127] > 0
    assert ex._one_gland_across(col, one[:, 128] > 0, (1, 128, 0))
    two = ((np.hypot(yy - 100, xx - 80) < 45) | (np.hypot(yy - 100, xx - 176) < 45)
           | ((np.abs(yy - 100) < 12) & (xx > 100) & (xx < 156))).astype(np.uint8)
    assert ndi.label(two)[1] == 1
    ex = GlandExtractor(_synthetic(tmp_path / "two", two))
    # the neck's pixels on either side of column 128, taken as two pieces
    assert not ex._one_gland_across(two[:, 127] > 0, two[:, 128] > 0, (1, 128, 0))
