"""SIS known answers on the demo world, pinned by the texture-only and shape-only oracles (tests/oracles.py).

What the oracles imply for SIS depends on what "masked" means to them. Both segment the foreground by
its colour distance (> 0.2) from a background plane fitted to the border pixels, and read pixels only
through that segmentation: the shape oracle sees nothing but the binary silhouette, the texture oracle
only the fill inside the silhouette eroded by one pixel. Hence:

* Batched Gradient has no signal on the shape oracle: its logits are a piecewise-constant function of
  the pixels (a thresholded mask), so ∂f/∂M ≡ 0 — every step selects by index, and the metric flags it.
* With the *background* as baseline (each masked pixel set to the fitted background plane — the oracles'
  own notion of "missing"), masking a background pixel is a no-op for both oracles. Exact BackSelect
  masks the candidate that keeps f highest, so every no-op is taken before any step that lowers f; the
  SIS (the state just before the step that drops f below τ) therefore holds no background pixel: both
  SIS lie on the shape (pixels with non-zero coverage: interior or anti-aliased edge).
* At equal τ the two differ in *form*, not in a fixed size order: the texture oracle reads only pixels
  whose 3×3 neighbourhood is foreground (the erosion), so its SIS must contain a full 3×3 block of
  texture — a compact patch; the shape oracle compares the centroid- and area-normalised silhouette
  with rotated templates, so its SIS must keep the silhouette's geometry and spreads over the shape's
  extent (a subset confined to one part would be a different, blob-like silhouette): at equal τ the
  texture SIS has the smaller bounding box. Neither oracle implies an order of the pixel *counts*, and
  none holds: on 14–16-px images the shape oracle's SIS had 11–57 pixels and the texture oracle's
  12–25, either one the larger depending on the image — so no count order is asserted.
* With the metric's default baseline (the dataset mean, a mid gray) neither holds: gray pixels read as
  foreground against most backgrounds, so the oracles' SIS can lie off the shape. An SIS explains a
  model relative to its baseline.

Exact BackSelect costs P(P+1)/2 oracle passes, so the exact test uses one 14-px image of the world
(196 pixels; both oracles still classify it right) and a shape oracle with 24 template rotations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biasbench.core import world  # noqa: E402
from biasbench.core.labels import DEMO_WORLD  # noqa: E402
from biasbench.metrics.base import EvalContext, ModelWrapper  # noqa: E402
from biasbench.metrics.sis import SIS  # noqa: E402
from biasbench.metrics.sis_backselect import exact_backselect  # noqa: E402
from biasbench.metrics.sis_traces import sis_mask  # noqa: E402
from tests import oracles  # noqa: E402

MEAN = (0.5, 0.49, 0.5)  # about the world's pixel mean


pytestmark = pytest.mark.usefixtures("one_thread")


def wrap(net: torch.nn.Module) -> ModelWrapper:
    return ModelWrapper(
        net, mean=MEAN, std=(1.0, 1.0, 1.0), num_classes=world.NUM_CLASSES, label_space=DEMO_WORLD
    )


@pytest.fixture(scope="module")
def shape_oracle() -> ModelWrapper:
    return wrap(oracles.ShapeOnlyOracle(n_angles=24)).eval()


def test_shape_only_oracle_gives_batched_gradient_no_signal_and_is_flagged(shape_oracle):
    ds = world.generate("test", world.WorldConfig(n_test=20))
    res = SIS(k=64, n_images=3, tau=0.5).evaluate(shape_oracle, {"images": ds}, EvalContext())
    assert res.scalars["zero_gradient_step_frac"] == 1.0
    assert any("exactly 0" in f for f in res.flags)
    p = ds.images.shape[2] * ds.images.shape[3]
    for order in res.items["order"]:
        # no signal: every step took the k lowest-index unmasked pixels (raster order)
        np.testing.assert_array_equal(order, np.arange(p) // 64)


def test_oracle_sis_lie_on_the_shape_and_differ_in_form_at_equal_tau(shape_oracle):
    size, tau = 14, 0.85
    g = torch.Generator().manual_seed(world.seed_of("sis-oracle-test", 1))
    cls = torch.arange(world.NUM_CLASSES)
    r = world.render(cls, cls, g, size, "textured")
    b = 2  # a triangle with its own texture: both oracles are right on it (clean f = 0.857, 0.997)
    x = (world.to_uint8(r.images[b : b + 1]).float() / 255.0).contiguous()
    _, background, _ = oracles.segment(x)  # the baseline: every masked pixel takes the background
    on_shape = (r.mask[b] > 0).numpy()  # interior and anti-aliased edge
    texture_oracle = wrap(oracles.TextureOnlyOracle(size=size, n_fit=60)).eval()

    sis = {}
    for name, model in (("shape", shape_oracle), ("texture", texture_oracle)):
        tr = exact_backselect(model, x, background, chunk_size=2048, max_pixels=None)
        assert int(tr.c0[0]) == b
        order, conf = tr.order[0].numpy(), tr.conf[0].numpy()
        assert conf[0] >= tau > conf[-1]  # covered; the all-background image is uninformative
        m = sis_mask(order, conf, tau).reshape(size, size)
        assert m.any()
        # no background pixel survives: the SIS lies on the shape (edge/interior)
        assert not (m & ~on_shape).any(), f"{name} oracle SIS has pixels off the shape"
        # and the SIS alone keeps the decision (direct check with the model)
        keep = torch.from_numpy(m)[None, None]
        with torch.no_grad():
            f = model(torch.where(keep, x, background)).softmax(1)[0, b]
        assert float(f) >= tau
        sis[name] = m

    # the texture oracle reads only eroded foreground: its SIS holds a full 3×3 block (a compact patch)
    t = torch.from_numpy(sis["texture"]).float()[None, None]
    assert bool((-F.max_pool2d(-t, 3, 1, 1) > 0).any())

    # the shape oracle needs the silhouette's geometry: its SIS spans ≥ half the shape's extent per axis
    def extent(m: np.ndarray) -> tuple[int, int]:
        rows, cols = np.nonzero(m)
        return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)

    (sh, sw), (h, w), (th, tw) = extent(sis["shape"]), extent(on_shape), extent(sis["texture"])
    assert sh >= h / 2 and sw >= w / 2
    # so at equal τ the texture SIS is the more compact one (smaller bounding box), whatever the counts
    assert th * tw < sh * sw
