import math

import pytest
import torch

from defocus_lit.metrics import (
    PSNR_CAP_DB,
    DefocusMetrics,
    PlaneSensitivity,
    per_sample_metrics,
)

H = W = 16


def make_batch(b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Target in [-1,1]; left half of every image in focus; everything valid."""
    g = torch.Generator().manual_seed(seed)
    focus = torch.zeros(b, 1, H, W)
    focus[..., : W // 2] = 1
    return {
        "target": torch.rand(b, 3, H, W, generator=g) * 1.6 - 0.8,  # room for +-0.2 errors without clamping
        "focus": focus,
        "valid": torch.ones(b, 1, H, W),
    }


def unit_error(x: torch.Tensor, err: float) -> torch.Tensor:
    """Add an error of `err` on the [0,1] scale to an image given in [-1,1]."""
    return x + 2 * err


def test_constant_error_gives_hand_computed_psnr():
    batch = make_batch()
    m = DefocusMetrics()
    m.update(unit_error(batch["target"], 0.1), batch)  # MSE 0.01 -> 20 dB
    res = m.compute()
    assert res["psnr"].item() == pytest.approx(20.0, abs=1e-3)
    assert res["psnr_focus"].item() == pytest.approx(20.0, abs=1e-3)
    assert res["psnr_defocus"].item() == pytest.approx(20.0, abs=1e-3)


def test_focus_defocus_split():
    batch = make_batch()
    out = batch["target"].clone()
    focus = batch["focus"].bool().expand_as(out)
    out[focus] = unit_error(out[focus], 0.1)  # 20 dB inside the focus region
    out[~focus] = unit_error(out[~focus], 0.01)  # 40 dB outside
    m = DefocusMetrics()
    m.update(out, batch)
    res = m.compute()
    assert res["psnr_focus"].item() == pytest.approx(20.0, abs=1e-3)
    assert res["psnr_defocus"].item() == pytest.approx(40.0, abs=1e-3)
    overall = -10 * math.log10((0.01 + 0.0001) / 2)  # half the pixels each
    assert res["psnr"].item() == pytest.approx(overall, abs=1e-3)


def test_psnr_is_mean_of_per_image_psnr():
    batch = make_batch()
    out = batch["target"].clone()
    out[0] = unit_error(out[0], 0.1)  # 20 dB
    out[1] = unit_error(out[1], 0.01)  # 40 dB
    m = DefocusMetrics()
    m.update(out, batch)
    assert m.compute()["psnr"].item() == pytest.approx(30.0, abs=1e-3)
    per = per_sample_metrics(out, batch)
    assert [p["psnr"] for p in per] == pytest.approx([20.0, 40.0], abs=1e-3)


def test_invalid_pixels_are_ignored():
    batch = make_batch()
    out = unit_error(batch["target"], 0.1)
    reference = DefocusMetrics()
    reference.update(out, batch)
    batch["valid"][..., :4, :] = 0
    out_bad = out.clone()
    out_bad[..., :4, :] = -batch["target"][..., :4, :]  # huge error, but only where invalid
    m = DefocusMetrics()
    m.update(out_bad, batch)
    for name, value in m.compute().items():
        if name != "ssim":
            assert value.item() == pytest.approx(reference.compute()[name].item(), abs=1e-4), name
    # SSIM: the invalid rows are replaced by the target, so the result equals the output that was right there.
    out_good = out.clone()
    out_good[..., :4, :] = batch["target"][..., :4, :]
    m_good = DefocusMetrics()
    m_good.update(out_good, batch)
    assert m.compute()["ssim"].item() == pytest.approx(m_good.compute()["ssim"].item(), abs=1e-6)


def test_identical_images_cap_psnr_and_ssim_is_one():
    batch = make_batch()
    m = DefocusMetrics()
    m.update(batch["target"], batch)
    res = m.compute()
    assert res["psnr"].item() == pytest.approx(PSNR_CAP_DB)
    assert res["ssim"].item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_drops_for_noise():
    batch = make_batch()
    noisy = batch["target"] + 0.5 * torch.randn(batch["target"].shape, generator=torch.Generator().manual_seed(1))
    m = DefocusMetrics()
    m.update(noisy, batch)
    assert m.compute()["ssim"].item() < 0.9


def test_images_without_focus_pixels_are_skipped():
    batch = make_batch()
    batch["focus"][1] = 0  # second image has no in-focus pixel
    out = batch["target"].clone()
    out[0] = unit_error(out[0], 0.1)  # 20 dB
    out[1] = unit_error(out[1], 0.01)  # 40 dB
    m = DefocusMetrics()
    m.update(out, batch)
    res = m.compute()
    assert res["psnr_focus"].item() == pytest.approx(20.0, abs=1e-3)  # only image 0
    assert res["psnr_defocus"].item() == pytest.approx(30.0, abs=1e-3)  # both
    per = per_sample_metrics(out, batch)
    assert math.isnan(per[1]["psnr_focus"])
    assert set(per[0]) == {"psnr", "ssim", "psnr_focus", "psnr_defocus"}


def two_rank_equivalence(make_metric, updates):
    """Two 'ranks' each see half the updates; merging their states must equal one metric that saw all."""
    whole, rank0, rank1 = make_metric(), make_metric(), make_metric()
    for i, args in enumerate(updates):
        whole.update(*args)
        (rank0 if i % 2 == 0 else rank1).update(*args)
    rank0.merge_state(rank1)
    return whole.compute(), rank0.compute()


def test_defocus_metrics_ddp_merge_equals_single_process():
    updates = []
    for seed in range(4):
        batch = make_batch(seed=seed)
        out = unit_error(batch["target"], 0.02 * (seed + 1))
        batch["focus"][0] = 0 if seed == 2 else batch["focus"][0]
        updates.append((out, batch))
    whole, merged = two_rank_equivalence(DefocusMetrics, updates)
    for name in whole:
        assert merged[name].item() == pytest.approx(whole[name].item(), abs=1e-5), name


def plane_batch(b: int = 2, has_alt=True, seed: int = 3) -> dict[str, torch.Tensor]:
    """Random targets for a mask and its opposite plane's; nothing in focus in either mask; all valid."""
    g = torch.Generator().manual_seed(seed)
    return {
        "target": torch.rand(b, 3, H, W, generator=g) * 2 - 1,
        "alt_target": torch.rand(b, 3, H, W, generator=g) * 2 - 1,
        "valid": torch.ones(b, 1, H, W),
        "focus": torch.zeros(b, 1, H, W),
        "alt_mask": torch.ones(b, 1, H, W),
        "has_alt": torch.full((b,), has_alt, dtype=torch.bool),
    }


def test_plane_sensitivity_is_one_when_outputs_equal_targets():
    batch = plane_batch()
    m = PlaneSensitivity()
    m.update(batch["target"], batch["alt_target"], batch)
    assert m.compute().item() == pytest.approx(1.0)


def test_plane_sensitivity_is_zero_when_output_ignores_mask():
    batch = plane_batch()
    out = torch.zeros_like(batch["target"])
    m = PlaneSensitivity()
    m.update(out, out, batch)
    assert m.compute().item() == 0.0


def test_plane_sensitivity_hand_computed_and_masks():
    batch = plane_batch()
    batch["target"], batch["alt_target"] = torch.zeros(2, 3, H, W), torch.full((2, 3, H, W), 0.4)
    out = torch.zeros(2, 3, H, W)
    alt_out = torch.full((2, 3, H, W), 0.1)  # |output diff| 0.1 vs |target diff| 0.4 -> ratio 0.25
    batch["valid"][..., :4, :] = 0
    alt_out[..., :4, :] = 5.0  # invalid pixels: no effect
    batch["focus"][..., 4:6, :] = 1
    batch["alt_mask"][..., 6:8, :] = 0
    alt_out[..., 4:8, :] = 7.0  # in focus in one of the two masks: no effect
    alt_out[1] = 9.0  # sample without an alternative plane: no effect
    batch["has_alt"] = torch.tensor([True, False])
    m = PlaneSensitivity()
    m.update(out, alt_out, batch)
    assert m.compute().item() == pytest.approx(0.25)


def test_plane_sensitivity_without_pairs_is_nan():
    batch = plane_batch(has_alt=False)
    m = PlaneSensitivity()
    m.update(batch["target"], batch["alt_target"], batch)
    assert math.isnan(m.compute().item())


def test_plane_sensitivity_ddp_merge_equals_single_process():
    updates = []
    for seed in range(4):
        batch = plane_batch(has_alt=seed % 2 == 0, seed=seed)
        g = torch.Generator().manual_seed(seed)
        updates.append((torch.rand(2, 3, H, W, generator=g), torch.rand(2, 3, H, W, generator=g), batch))
    whole, merged = two_rank_equivalence(PlaneSensitivity, updates)
    assert merged.item() == pytest.approx(whole.item(), rel=1e-6)
