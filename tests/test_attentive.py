"""The attentive probe: the pooler against the published equations, the head grid, selection on validation only,
every test clip once, seeds, the order-only contrast with a linear probe on the token mean, and torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.special import erf

from evalharness.probes.attentive import Config, Place, TokenClips, learning_rate, train_grid
from evalharness.probes.pooler import AttentiveClassifier
from evalharness.results import compare_records
from evalharness.store import EmbeddingFile

from helpers import build_file, probe

GRID = (4, 2, 2)  # t, h, w
DIM = 8


# ------------------------------------------------------------------ the pooler, from the equations


def _layer_norm(x, w, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * w + b


def _linear(x, layer):
    return x @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()


def _attention(q, k, v, heads):
    """softmax(Q K^T / sqrt(d)) V per head, heads concatenated (Vaswani et al., eq. 1)."""
    out = []
    d = q.shape[-1] // heads
    for h in range(heads):
        qh, kh, vh = (a[..., h * d:(h + 1) * d] for a in (q, k, v))
        logits = qh @ np.swapaxes(kh, -1, -2) / math.sqrt(d)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        out.append(weights / weights.sum(-1, keepdims=True) @ vh)
    return np.concatenate(out, -1)


def _mlp(x, mlp):
    hidden = _linear(x, mlp.fc1)
    return _linear(0.5 * hidden * (1 + erf(hidden / math.sqrt(2))), mlp.fc2)


def _norm(x, ln):
    return _layer_norm(x, ln.weight.detach().double().numpy(), ln.bias.detach().double().numpy())


def reference_classifier(model: AttentiveClassifier, x: np.ndarray, heads: int) -> np.ndarray:
    """V-JEPA's attentive classifier written out: self-attention blocks x + A(LN(x)), x + MLP(LN(x)); then the query
    q + A(q, LN(x)) (output projection if any), q + MLP(LN(q)); the mean over queries; a linear layer."""
    for block in model.blocks:
        h = _norm(x, block.norm1)
        q, k, v = np.split(_linear(h, block.attn.qkv), 3, axis=-1)
        x = x + _linear(_attention(q, k, v, heads), block.attn.proj)
        x = x + _mlp(_norm(x, block.norm2), block.mlp)
    cross = model.cross_attention_block
    query = np.broadcast_to(model.query_tokens.detach().double().numpy(), (len(x),) + model.query_tokens.shape[1:])
    h = _norm(x, cross.norm1)
    k, v = np.split(_linear(h, cross.xattn.kv), 2, axis=-1)
    attended = _attention(_linear(query, cross.xattn.q), k, v, heads)
    if cross.xattn.proj is not None:
        attended = _linear(attended, cross.xattn.proj)
    q = query + attended
    q = q + _mlp(_norm(q, cross.norm2), cross.mlp)
    return _linear(q.mean(1), model.linear)


@pytest.mark.parametrize("depth,proj,queries", [(1, True, 1), (4, False, 1), (2, True, 3)])
def test_the_pooler_equals_the_published_equations(depth, proj, queries):
    torch.manual_seed(0)
    model = AttentiveClassifier(12, 5, num_heads=3, depth=depth, cross_proj=proj, queries=queries).double()
    with torch.no_grad():  # move the norms and biases off their initial values so they count
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = np.random.default_rng(0).normal(size=(4, 10, 12))
    got = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, reference_classifier(model, x, 3), atol=1e-6, rtol=0)


def test_the_initialisation_is_v_jepa_s():
    torch.manual_seed(0)
    model = AttentiveClassifier(64, 4, num_heads=4, depth=4, cross_proj=False)
    assert all(float(b.detach().abs().max()) == 0 for name, b in model.named_parameters() if name.endswith("bias")
               and not name.startswith("linear"))
    q = model.cross_attention_block.xattn.q.weight.detach()
    assert 0.015 < float(q.std()) < 0.025  # trunc_normal(std 0.02), truncated at +-2 (absolute, so in effect never)
    third = model.blocks[2].mlp.fc2.weight.detach()
    assert 0.015 / math.sqrt(6) < float(third.std()) < 0.025 / math.sqrt(6)  # divided by sqrt(2 * layer)


def test_views_meet_as_the_card_says():
    from evalharness.probes.attentive import _sequences

    tokens = torch.arange(2 * 6 * 3).float().reshape(2, 6, 3, 1)  # 2 clips, 2 temporal x 3 spatial views, 3 tokens
    assert _sequences(tokens, "joint", 3).shape == (2, 18, 1)
    assert _sequences(tokens, "average", 3).shape == (12, 3, 1)
    segments = _sequences(tokens, "segments", 3)
    assert segments.shape == (6, 6, 1)  # per clip and spatial view: both temporal views' tokens, in time order
    assert segments[1, :, 0].tolist() == [3, 4, 5, 12, 13, 14]  # clip 0, spatial view 1: views 1 and 4


def test_learning_rate_warms_up_then_follows_jepas_cosine():
    # jepa's WarmupCosineSchedule steps before each iteration: iteration i runs at schedule step i + 1
    assert learning_rate(0, 100, 10, 1.0, 0.0) == pytest.approx(0.1)
    assert learning_rate(9, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert learning_rate(10, 100, 10, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 90)))
    assert learning_rate(54, 100, 10, 1.0, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(99, 100, 0, 2.0, 0.0) == pytest.approx(0.0)  # the last iteration reaches the final value


def test_the_config_refuses_what_cannot_run():
    from evalharness.probes import resolve_config
    from evalharness.protocol import Task

    for bad, message in (({"lrs": []}, "lrs"), ({"lrs": [0.1, 0.1]}, "distinct"), ({"seeds": [-1]}, "seeds"),
                         ({"views": "max"}, "views"), ({"warmup_epochs": 30}, "warmup"), ({"depth": 0}, "depth")):
        with pytest.raises(ValueError, match=message):
            resolve_config("attentive", bad, Task.CLASSIFICATION)
    assert resolve_config("attentive", {"lrs": [0.1, 0.01]}, Task.CLASSIFICATION)["lrs"] == (0.1, 0.01)


# ------------------------------------------------------------------ order-only tokens


def order_tokens(rng, n, views=1):
    """Tokens whose class is which half of the clip holds the +1 contents: every clip has the same multiset of
    contents and positions, so the mean over tokens carries no class information; only the order does."""
    labels = rng.integers(0, 2, n)
    t, h, w = GRID
    x = np.zeros((n, views, t, h, w, DIM), np.float32)
    frame = np.arange(t)[:, None, None]
    x[..., 1] = np.sin(2 * np.pi * frame / t)
    x[..., 2] = np.cos(2 * np.pi * frame / t)
    x[..., 3] = np.arange(h)[None, :, None] - 0.5
    x[..., 4] = np.arange(w)[None, None, :] - 0.5
    early = np.where(frame < t // 2, 1.0, -1.0)
    for i, label in enumerate(labels):
        x[i, ..., 0] = early if label == 0 else -early
    x[..., 5:] = rng.normal(scale=0.3, size=x[..., 5:].shape)
    return x, labels


ATTENTIVE = {"num_heads": 2, "epochs": 12, "batch_size": 16, "lrs": [0.01, 0.001], "weight_decays": [0.01],
             "seeds": [0, 1]}


@pytest.fixture(scope="module")
def order_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    train, train_y = order_tokens(rng, 150)
    test, test_y = order_tokens(rng, 61)  # not a multiple of the batch size: nothing may be dropped
    folder = tmp_path_factory.mktemp("order")
    mean = lambda x: x.reshape(len(x), 1, -1, DIM).mean(2)
    return build_file(folder, mean(train), train_y, mean(test), test_y, name="order",
                      probes={"attentive": ATTENTIVE, "linear": {"c_grid": {"log10_min": -3, "log10_max": 3, "steps": 7}}},
                      tokens=(train, test))


def test_attentive_learns_order_only_classes_that_a_linear_probe_on_the_mean_cannot(order_file):
    path, protocol, root = order_file
    attentive = probe("attentive", path, protocol, root)
    linear = probe("linear", path, protocol, root)
    assert attentive["metrics"]["top1"]["value"] > 0.95
    assert linear["metrics"]["top1"]["value"] < 0.7  # chance is 0.5; 61 items
    chosen = attentive["chosen"]
    # the record holds the whole grid's validation curves; the chosen head is recomputable from them alone
    for run in chosen["seeds"]:
        finals = [curve[-1] for curve in run["val_top1_curve"]]
        assert run["chosen_head"] == finals.index(max(finals))
        assert (run["lr"], run["weight_decay"]) == tuple(chosen["heads"][run["chosen_head"]].values())
        assert len(run["val_top1_curve"]) == 2 and all(len(c) == ATTENTIVE["epochs"] for c in run["val_top1_curve"])
    # every test clip counted exactly once, for every seed
    with EmbeddingFile(path) as f:
        test_ids = [i for i in f.ids if i.startswith("te")]
    predictions = attentive["predictions"]
    assert sorted(predictions["ids"]) == test_ids and len(set(predictions["ids"])) == 61
    assert attentive["metrics"]["top1"]["n"] == 61 == chosen["test_clips"]
    assert all(len(p) == 2 for p in predictions["predicted"])
    # the headline is the mean of the seeds; its interval resamples seeds and items
    seeds = [run["test_top1"] for run in chosen["seeds"]]
    assert attentive["metrics"]["top1"]["value"] == pytest.approx(np.mean(seeds))
    assert chosen["seed_top1_std"] == pytest.approx(np.std(seeds))
    top1 = attentive["metrics"]["top1"]
    assert top1["ci_low"] <= top1["value"] <= top1["ci_high"]
    # compare pairs its per-item values (the share of seeds right on each clip); McNemar needs 0/1 values
    paired = compare_records(attentive, {**attentive, "model": "other"})
    assert paired["difference"].value == 0
    assert ("mcnemar" in paired) == (set(predictions["value"]) <= {0.0, 1.0})


def _grid_run(path, config, grid, place=None):
    with EmbeddingFile(path) as f:
        rows = np.arange(len(f.ids))
        labels = np.array([0 if i % 2 else 1 for i in range(len(rows))])
        fit, val = TokenClips(f, rows[:100], labels[:100]), TokenClips(f, rows[100:130], labels[100:130])
        trained = train_grid(fit, val, DIM, 2, config, 3, grid, place or Place())
    return trained


def test_micro_batches_accumulate_to_the_whole_batch(order_file):
    config = Config(num_heads=2, epochs=2, batch_size=16, lrs=(0.01,), weight_decays=(0.01,))
    whole = _grid_run(order_file[0], config, config.grid())
    parts = _grid_run(order_file[0], config, config.grid(), Place(micro_batch=5))
    assert parts.train_loss[0] == pytest.approx(whole.train_loss[0], rel=1e-5)
    for a, b in zip(whole.heads[0].state_dict().values(), parts.heads[0].state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_heads_trained_together_equal_heads_trained_one_at_a_time_and_the_same_seed_repeats_bits(order_file):
    path = order_file[0]
    config = Config(num_heads=2, epochs=2, batch_size=16, lrs=(0.01, 0.001), weight_decays=(0.0, 0.1))
    grid = config.grid()
    together = _grid_run(path, config, grid)
    for h, pair in enumerate(grid):
        alone = _grid_run(path, config, [pair])
        assert alone.val_top1[0] == together.val_top1[h] and alone.train_loss[0] == together.train_loss[h]
        for (name, a), b in zip(alone.heads[0].state_dict().items(), together.heads[h].state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    again = _grid_run(path, config, grid)
    assert again.train_loss == together.train_loss


def test_a_file_without_tokens_is_refused_in_one_line(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, DIM)).astype(np.float32)
    path, protocol, root = build_file(tmp_path, x[:30], rng.integers(0, 2, 30), x[30:], rng.integers(0, 2, 10),
                                      probes={"attentive": ATTENTIVE})
    from evalharness.errors import ProbeError

    with pytest.raises(ProbeError, match="holds no token features"):
        probe("attentive", path, protocol, root)


def test_views_averaged_and_bfloat16_tokens(tmp_path):
    rng = np.random.default_rng(1)
    train, train_y = order_tokens(rng, 80, views=2)
    test, test_y = order_tokens(rng, 21, views=2)
    mean = lambda x: x.reshape(len(x), 2, -1, DIM).mean(2)
    settings = {**ATTENTIVE, "views": "average", "seeds": [0], "lrs": [0.01]}
    path, protocol, root = build_file(tmp_path, mean(train), train_y, mean(test), test_y, probes={"attentive": settings},
                                      tokens=(train, test), token_dtype="bfloat16")
    record = probe("attentive", path, protocol, root)
    assert record["metrics"]["top1"]["n"] == 21 and record["metrics"]["top1"]["value"] > 0.9


@pytest.mark.slow
def test_torchrun_two_processes_score_every_test_clip_once(order_file, tmp_path):
    path, _protocol, root = order_file
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "evalharness", "probe", "attentive", str(path), "-p", str(root.parent / "order.yaml"),
                             "-d", str(root), "--out", str(tmp_path / "results")],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = list((tmp_path / "results").rglob("*.json"))
    assert len(records) == 1  # only rank 0 writes
    record = json.loads(records[0].read_text())
    assert record["chosen"]["world_size"] == 2 and record["metrics"]["top1"]["n"] == 61
    assert sorted(record["predictions"]["ids"]) == sorted(set(record["predictions"]["ids"]))
    assert record["metrics"]["top1"]["value"] > 0.9
    # the same global batches, split across two processes: the same training up to float summation order
    alone = probe("attentive", path, _protocol, root)
    for two, one in zip(record["chosen"]["seeds"], alone["chosen"]["seeds"], strict=True):
        for curve_two, curve_one in zip(two["train_loss_curve"], one["train_loss_curve"], strict=True):
            assert curve_two[:2] == pytest.approx(curve_one[:2], rel=1e-4)
