"""DGDIR's pieces on tiny tensors, with the expected values computed by hand in the comments, and a stop/resume run."""
from __future__ import annotations

import json

import pytest
import torch

from benchmark.runner import run_one
from benchmark.suites import plan
from methods.dgdir import (OFFICIAL_PHASE_RMS, contrastive_terms, draw_fourier_views, draw_partners, fourier_mix,
                           fourier_views, joint_cluster_count, low_frequency_mask, phase_only, phase_view,
                           prototype_loss, queue_info_nce, scaled_side)
from methods.momentum import KeyQueue

from .conftest import assert_key_encoder_trails, run_stopped_after_one_epoch, tiny_suite


def _grey_2x2(rows) -> torch.Tensor:
    """A [1, 3, 2, 2] image whose three channels are the given 2x2 values."""
    return torch.tensor(rows, dtype=torch.float64).expand(1, 3, 2, 2).clone()


# --- amplitude mixing ---------------------------------------------------------------------------------------------

def test_amplitude_mixing_by_hand():
    # 2x2 DFT: F00 = a+b+c+d, F01 = a-b+c-d, F10 = a+b-c-d, F11 = a-b-c+d for x = [[a, b], [c, d]].
    # v = [[0, 0.8], [0, 0]]: F(v) = 0.8 [[1, -1], [1, -1]] -> |F(v)| = 0.8 everywhere, phase [[0, pi], [0, pi]].
    # z = [[0.6, 0.2], [0.2, 0.2]]: F(z) = [[1.2, 0.4], [0.4, 0.4]], phase 0.
    # lam = 1: spectrum |F(z)| e^{i phase(v)} = [[1.2, -0.4], [0.4, -0.4]]; x(n) = 1/4 sum F(k) (-1)^{k.n}
    #   x00 = (1.2 - 0.4 + 0.4 - 0.4)/4 = 0.2, x01 = (1.2 + 0.4 + 0.4 + 0.4)/4 = 0.6, x10 = x11 = 0.2
    #   (z's amplitude, v's structure: the bright pixel sits where v's delta is).
    # lam = 0.5: A' = 0.4 + 0.5 |F(z)| = [[1.0, 0.6], [0.6, 0.6]] -> signed [[1.0, -0.6], [0.6, -0.6]]
    #   x00 = (1.0 - 0.6 + 0.6 - 0.6)/4 = 0.1, x01 = (1.0 + 0.6 + 0.6 + 0.6)/4 = 0.7, x10 = x11 = 0.1.
    # lam = 0: v itself. mu = 0, so no phase mixing.
    v = _grey_2x2([[0.0, 0.8], [0.0, 0.0]]).expand(3, 3, 2, 2)
    z = _grey_2x2([[0.6, 0.2], [0.2, 0.2]]).expand(3, 3, 2, 2)
    rgb, _ = fourier_views(v, z, torch.tensor([0.0, 0.5, 1.0]), torch.zeros(3), side=1, rms=0.5)
    expected = [[[0.0, 0.8], [0.0, 0.0]], [[0.1, 0.7], [0.1, 0.1]], [[0.2, 0.6], [0.2, 0.2]]]
    for image, values in zip(rgb, expected):
        for channel in image:
            assert channel.tolist() == [pytest.approx(row, abs=1e-12) for row in values]


def test_full_amplitude_mixing_takes_the_partners_amplitude_and_keeps_the_phase():
    torch.manual_seed(0)
    v, z = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    mixed = fourier_mix(v, z, torch.ones(2), torch.zeros(2), side=3)           # lam = 1, mu = 0, unclipped
    spectrum, spectrum_v = torch.fft.fft2(mixed), torch.fft.fft2(v)
    assert torch.allclose(spectrum.abs(), torch.fft.fft2(z).abs(), atol=1e-9)
    assert torch.allclose(spectrum / spectrum.abs(), spectrum_v / spectrum_v.abs(), atol=1e-9)
    # lam = 1 and mu = 1 over the whole spectrum (a square as large as the image) rebuild the partner itself.
    assert torch.allclose(fourier_mix(v, z, torch.ones(2), torch.ones(2), side=8), z, atol=1e-12)
    assert torch.allclose(fourier_mix(v, z, torch.zeros(2), torch.zeros(2), side=3), v, atol=1e-12)


# --- the phase view -------------------------------------------------------------------------------------------------

def test_phase_view_by_hand():
    # Grey v = [[0, 0.8], [0, 0]] (equal channels, luma weights sum to 1): phase [[0, pi], [0, pi]], as above.
    # Constant amplitude C = rms * sqrt(2 * 2) = 2 rms on every frequency, then the inverse DFT:
    # C [[1, -1], [1, -1]] -> C at pixel (0, 1), 0 elsewhere (a delta's phase is a delta's).
    v = _grey_2x2([[0.0, 0.8], [0.0, 0.0]])
    view = phase_view(v, rms=0.25)                                    # C = 0.5
    assert view.shape == (1, 3, 2, 2)
    for channel in view[0]:
        assert channel.tolist() == [pytest.approx([0.0, 0.5], abs=1e-12), pytest.approx([0.0, 0.0], abs=1e-12)]
    # The official constant (RMS 0.875 of the pixel range) gives C = 1.75: clipped to 1.
    assert phase_view(v, rms=OFFICIAL_PHASE_RMS)[0, 0, 0, 1].item() == pytest.approx(1.0)
    # 50000 on 0-255 pixels at 224 px: RMS 50000 / 224 grey levels = 0.8754 of the range (Parseval).
    assert OFFICIAL_PHASE_RMS == pytest.approx(0.87535, abs=1e-5)


def test_phase_only_image_has_the_requested_rms():
    # Parseval: sum_x p(x)^2 = (1/N) sum_k C^2 = C^2, so the RMS over N = H W pixels is C / sqrt(N) = rms.
    torch.manual_seed(1)
    images = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    rms = phase_only(images, 0.3).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert rms.tolist() == pytest.approx([0.3, 0.3], abs=1e-12)


def test_phase_view_is_unchanged_by_scaling_the_amplitude():
    torch.manual_seed(2)
    v = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    # A positive, even (f -> -f symmetric) weighting of every frequency, the same on every channel: the image stays
    # real and each frequency keeps its phase; plus a plain brightness scaling (amplitude x 3).
    f = torch.fft.fftfreq(16, dtype=torch.float64)
    weight = 0.5 + 1.5 * torch.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / 0.02)
    reweighted = torch.fft.ifft2(torch.fft.fft2(v) * weight).real
    assert not torch.allclose(reweighted, v, atol=1e-2)
    reference = phase_view(v, OFFICIAL_PHASE_RMS)
    assert torch.allclose(phase_view(reweighted, OFFICIAL_PHASE_RMS), reference, atol=1e-9)
    assert torch.allclose(phase_view(3 * v, OFFICIAL_PHASE_RMS), reference, atol=1e-9)
    # ... and it is the phase of the un-mixed view: the RGB view changes with the partner, the phase view does not.
    z1, z2 = torch.rand(2, 2, 3, 16, 16, dtype=torch.float64)
    lam, mu = torch.full((2,), 0.7), torch.full((2,), 0.3)
    rgb1, phase1 = fourier_views(v, z1, lam, mu, 5, OFFICIAL_PHASE_RMS)
    rgb2, phase2 = fourier_views(v, z2, lam, mu, 5, OFFICIAL_PHASE_RMS)
    assert not torch.allclose(rgb1, rgb2, atol=1e-3) and torch.equal(phase1, phase2)


# --- low-frequency phase mixing ----------------------------------------------------------------------------------

def test_low_frequency_square():
    # S = 8, side 3: fftshift puts index k at (k + 4) % 8; the square covers shifted positions 4 - 1 .. 4 + 1,
    # i.e. indices k = 7, 0, 1 (signed frequencies -1, 0, 1) on both axes: 9 frequencies.
    mask = low_frequency_mask(8, 3)
    assert mask.sum().item() == 9
    assert mask.nonzero().tolist() == [[r, c] for r in (0, 1, 7) for c in (0, 1, 7)]
    # 224 px, side 50 (the official): shifted rows/cols 87 .. 136 = signed frequencies -25 .. 24.
    rows = low_frequency_mask(224, 50)[:, 0].nonzero().flatten()
    signed = torch.where(rows >= 112, rows - 224, rows)
    assert sorted(signed.tolist()) == list(range(-25, 25))
    # The side scales with the image: 50 px at 224 px -> round(50 * 32 / 224) = round(7.14) = 7 px at 32 px.
    assert [scaled_side(50, 224), scaled_side(50, 32), scaled_side(0, 32), scaled_side(1, 32)] == [50, 7, 0, 1]


def test_phase_mixing_touches_only_the_low_frequency_square():
    torch.manual_seed(3)
    v, z = torch.rand(2, 3, 16, 16, dtype=torch.float64), torch.rand(2, 3, 16, 16, dtype=torch.float64)
    zero, mu = torch.zeros(2), torch.tensor([0.3, 0.1])
    # mu = 0: nothing changes.
    assert torch.allclose(fourier_mix(v, z, zero, zero, side=5), v, atol=1e-12)
    mixed = fourier_mix(v, z, zero, mu, side=5)                       # lam = 0: v's amplitude everywhere
    spectrum, spectrum_v, spectrum_z = torch.fft.fft2(mixed), torch.fft.fft2(v), torch.fft.fft2(z)
    inside = low_frequency_mask(16, 5)
    unit = spectrum / spectrum.abs()
    # Outside the square, v's phase; inside, (1 - mu) angle F(v) + mu angle F(z); the amplitude is v's throughout.
    expected = torch.polar(torch.ones_like(spectrum_v.real),
                           (1 - mu.view(-1, 1, 1, 1)) * spectrum_v.angle() + mu.view(-1, 1, 1, 1) * spectrum_z.angle())
    assert torch.allclose(unit[..., ~inside], (spectrum_v / spectrum_v.abs())[..., ~inside], atol=1e-9)
    assert torch.allclose(unit[..., inside], expected[..., inside], atol=1e-9)
    assert not torch.allclose(unit[..., inside], (spectrum_v / spectrum_v.abs())[..., inside], atol=1e-2)
    assert torch.allclose(spectrum.abs(), spectrum_v.abs(), atol=1e-9)


def test_augmentation_is_batched():
    torch.manual_seed(4)
    v, z = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    lam, mu = torch.rand(4), torch.rand(4) * 0.4
    rgb, phase = fourier_views(v, z, lam, mu, 5, OFFICIAL_PHASE_RMS)
    for i in range(4):
        rgb_i, phase_i = fourier_views(v[i:i + 1], z[i:i + 1], lam[i:i + 1], mu[i:i + 1], 5, OFFICIAL_PHASE_RMS)
        assert torch.allclose(rgb[i:i + 1], rgb_i, atol=1e-6) and torch.allclose(phase[i:i + 1], phase_i, atol=1e-6)
    # The random version draws lam ~ U(0, 1) and then mu ~ U(0, 0.4), one of each per image.
    torch.manual_seed(5)
    drawn = draw_fourier_views(v, z, 1.0, 0.4, 5, OFFICIAL_PHASE_RMS)
    torch.manual_seed(5)
    lam, mu = torch.rand(4), torch.rand(4) * 0.4
    assert torch.equal(drawn[0], fourier_views(v, z, lam, mu, 5, OFFICIAL_PHASE_RMS)[0])


class _ConstantDomain:
    def __init__(self, size: int, value: float, side: int = 8):
        self.value, self.size, self.image_size = value, size, side

    def __len__(self):
        return self.size

    def images(self, index, device="cpu"):
        return torch.full((len(index), 3, self.image_size, self.image_size), self.value, device=device)


def test_partners_come_from_the_union_of_both_domains():
    # Domain A (10 images) is all 0, domain B (30 images) all 1: a uniform draw over the 40 images is from B with
    # probability 30/40 = 0.75 (binomial sd over 4000 draws: 0.007).
    torch.manual_seed(6)
    partners = draw_partners((_ConstantDomain(10, 0.0), _ConstantDomain(30, 1.0)), 4000, side=4, device="cpu")
    assert partners.shape == (4000, 3, 4, 4)                          # resized to the view's side
    assert set(partners.unique().tolist()) == {0.0, 1.0}
    assert partners[:, 0, 0, 0].mean().item() == pytest.approx(0.75, abs=0.03)


# --- losses ---------------------------------------------------------------------------------------------------------

def test_queue_info_nce_masks_the_own_sample_by_hand():
    # Queue slots: (1, 0) from instance 5, (0, 1) from 7, (-1, 0) from 3, one empty slot. q = (1, 0), k+ = (0.6, 0.8),
    # T = 0.5. Query of instance 5: its own old key (slot 0) and the empty slot are no negatives:
    #   logits (0.6, 0, -1) / 0.5 = (1.2, 0, -2); loss = log(e^1.2 + 1 + e^-2) - 1.2 = 0.29413.
    # Query of instance 9: slot 0 is a negative too: log(e^1.2 + e^2 + 1 + e^-2) - 1.2 = 1.27186.
    queue = KeyQueue(4, 2)
    queue.enqueue(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), torch.tensor([5, 7, 3]))
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    positive = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    losses = queue_info_nce(q, positive, queue, torch.tensor([5, 9]), temperature=0.5)
    assert losses.tolist() == pytest.approx([0.29413, 1.27186], abs=1e-5)
    losses.sum().backward()
    assert torch.isfinite(q.grad).all()                               # the -inf logits give no NaN


def test_four_terms_use_the_queue_of_the_query_modality_by_hand():
    # Phase queue key a = (0.6, 0.8), rgb queue key b = (0, -1), both from instance 0; query instance 5; T = 1;
    # q_phase = k_phase = (1, 0), q_rgb = k_rgb = (0, 1).
    #   phase-phase: pos 1, neg q_phase . a = 0.6   -> log(e + e^0.6) - 1 = 0.51302
    #   rgb-rgb:     pos 1, neg q_rgb . b = -1      -> log(e + e^-1) - 1 = 0.12693
    #   phase->rgb:  pos q_phase . k_rgb = 0, neg q_phase . a = 0.6 (phase queue) -> log(1 + e^0.6) = 1.03749
    #                (the rgb queue would give log 2 = 0.69315)
    #   rgb->phase:  pos q_rgb . k_phase = 0, neg q_rgb . b = -1 (rgb queue)      -> log(1 + e^-1) = 0.31326
    #                (the phase queue would give log(1 + e^0.8) = 1.17110)
    queues = {"phase": KeyQueue(1, 2), "rgb": KeyQueue(1, 2)}
    queues["phase"].enqueue(torch.tensor([[0.6, 0.8]]), torch.tensor([0]))
    queues["rgb"].enqueue(torch.tensor([[0.0, -1.0]]), torch.tensor([0]))
    e0, e1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    terms = contrastive_terms(e0, e1, e0, e1, queues, torch.tensor([5]), temperature=1.0)
    got = {name: value.item() for name, value in terms.items()}
    assert got == pytest.approx({"phase_phase": 0.51302, "rgb_rgb": 0.12693, "phase_rgb": 1.03749,
                                 "rgb_phase": 0.31326}, abs=1e-5)
    # cross_negatives="key" (the switch): the cross terms take the positive key's modality queue instead.
    swapped = contrastive_terms(e0, e1, e0, e1, queues, torch.tensor([5]), 1.0, cross_negatives="key")
    assert {name: value.item() for name, value in swapped.items()} == pytest.approx(
        {"phase_phase": 0.51302, "rgb_rgb": 0.12693, "phase_rgb": 0.69315, "rgb_phase": 1.17110}, abs=1e-5)


def test_prototype_loss_by_hand():
    # Unit centroids (1, 0), (0, 1); g = (1, 0) and (0.6, 0.8), both assigned to cluster 1; no temperature.
    #   row 1: logits (1, 0), target 1 -> log(e + 1) - 0 = 1.31326
    #   row 2: logits (0.6, 0.8), target 1 -> log(e^0.6 + e^0.8) - 0.8 = 0.59814;  mean 0.95570
    g = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert prototype_loss(g, centroids, torch.tensor([1, 1])).item() == pytest.approx(0.95570, abs=1e-5)


def test_joint_cluster_count_is_the_union_of_nested_class_sets():
    # partial: the query's 6 classes lie within the retrieval domain's 12; open: the other way round.
    assert joint_cluster_count((6, 12)) == 12 and joint_cluster_count((12, 6)) == 12
    assert joint_cluster_count((12, 12)) == 12


# --- a run ------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_quickstart_run_stops_and_resumes_bitwise(tmp_path, cache_dir, one_thread):
    suite = tiny_suite("test_dgdir_resume", methods=["dgdir"])
    # Two epochs, the prototype loss from the second; the run is stopped after the first.
    spec = plan(suite, assignments=["dgdir.epochs=2", "dgdir.warmup_epochs=1"])[0]

    uninterrupted, spec_path, state = run_stopped_after_one_epoch(spec, tmp_path, cache_dir)
    # The key encoder (an EMA, behind the query encoder) and the four queues are in the checkpoint.
    assert_key_encoder_trails(state)
    for domain in (0, 1):
        for modality in ("phase", "rgb"):
            assert (state[f"queues.{domain}.{modality}.index"] >= 0).any()
    resumed = run_one(spec_path)
    assert resumed == uninterrupted
    history = json.loads((spec_path.parent / "metrics.json").read_text())["history"]
    assert history[0]["prototype"] == 0.0 and history[1]["prototype"] > 0.0    # warm-up, then the prototype loss
