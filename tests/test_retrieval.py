import numpy as np
import pytest

from evalharness.errors import ProbeError
from evalharness.probes.retrieval import ranks

from helpers import build_file, clustered, probe


def test_hand_computed_ranks_count_ties_against_the_model():
    gallery = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.6, 0.8]], dtype=np.float32)
    query = np.array([[0.6, 0.8]], dtype=np.float32)
    # sims: 0.6, 0.8, 1.0, 1.0; relevant = item 2 only; item 3 ties with it and counts against
    assert ranks(query, gallery, np.array([[False, False, True, False]])).tolist() == [2]
    assert ranks(query, gallery, np.array([[True, False, False, False]])).tolist() == [4]
    assert ranks(query, gallery, np.array([[True, True, False, False]])).tolist() == [3]
    assert ranks(query, gallery, np.array([[False, False, False, False]])).tolist() == [5]


def reference_ranks(queries, gallery, relevant):
    sims = queries.astype(np.float64) @ gallery.astype(np.float64).T
    out = []
    for s, r in zip(sims, relevant, strict=True):
        best = s[r].max()
        out.append(1 + int(((s >= best) & ~r).sum()))
    return np.array(out)


def test_video_to_video_recall_equals_an_independent_computation(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16)) * 0.5
    train, train_y = clustered(rng, 300, 16, 8, centres)
    test, test_y = clustered(rng, 100, 16, 8, centres)
    path, protocol, root = build_file(tmp_path, train, train_y, test, test_y, probes={"retrieval": {}})
    record = probe("retrieval", path, protocol, root)
    expected = reference_ranks(test, train, test_y[:, None] == train_y[None, :])
    assert record["predictions"]["rank"] == expected.tolist()
    for k in (1, 5, 10, 20, 50):
        assert record["metrics"][f"R@{k}"]["value"] == pytest.approx((expected <= k).mean())
    assert record["headline"] == "R@1"


def test_collapsed_embeddings_cannot_score(tmp_path):
    rng = np.random.default_rng(1)
    _, train_y = clustered(rng, 60, 4, 3, rng.normal(size=(3, 4)))
    _, test_y = clustered(rng, 30, 4, 3, rng.normal(size=(3, 4)))
    flat = np.full((90, 4), 0.5, dtype=np.float32)
    path, protocol, root = build_file(tmp_path, flat[:60], train_y, flat[60:], test_y, probes={"retrieval": {}})
    record = probe("retrieval", path, protocol, root)
    assert record["metrics"]["R@1"]["value"] == 0.0 and record["metrics"]["R@20"]["value"] == 0.0


def text_case(tmp_path, videos, texts, captions, name="tv"):
    n = len(videos)
    ids = [f"te{i:04d}" for i in range(n)]
    caption_rows = [(ids[v], f"caption {j}") for j, v in enumerate(captions)]
    per_video = {}
    text_ids = []
    for v, _ in caption_rows:
        text_ids.append(f"{v}#{per_video.get(v, 0)}")
        per_video[v] = per_video.get(v, 0) + 1
    train = np.ones((1, videos.shape[1]), np.float32)
    return build_file(tmp_path, train, [0], videos, [0] * n, name=name, probes={"retrieval": {}},
                      text={"ids": text_ids, "captions": caption_rows, "embeddings": texts})


def test_text_video_metrics_equal_an_independent_computation(tmp_path):
    rng = np.random.default_rng(2)
    videos = rng.normal(size=(40, 8)).astype(np.float32)
    videos /= np.linalg.norm(videos, axis=1, keepdims=True)
    owner = np.repeat(np.arange(40), 2)  # two captions per video
    texts = (videos[owner] + rng.normal(scale=0.8, size=(80, 8))).astype(np.float32)
    path, protocol, root = text_case(tmp_path, videos, texts, owner)
    record = probe("retrieval", path, protocol, root)
    unit = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    t2v = reference_ranks(unit, videos, owner[:, None] == np.arange(40)[None, :])
    v2t = reference_ranks(videos, unit, np.arange(40)[:, None] == owner[None, :])
    m = record["metrics"]
    for k in (1, 5, 10):
        assert m[f"t2v_R@{k}"]["value"] == pytest.approx((t2v <= k).mean())
        assert m[f"v2t_R@{k}"]["value"] == pytest.approx((v2t <= k).mean())
    assert m["t2v_MdR"]["value"] == np.median(t2v) and m["t2v_MnR"]["value"] == pytest.approx(t2v.mean())
    assert m["v2t_MdR"]["value"] == np.median(v2t) and m["v2t_MnR"]["value"] == pytest.approx(v2t.mean())
    assert 0 < m["t2v_R@1"]["value"] < 1


def test_text_video_collapsed_scores_nothing_and_truth_comes_from_the_manifest(tmp_path):
    videos = np.full((10, 4), 0.5, np.float32)
    texts = np.full((10, 4), 0.5, np.float32)
    path, protocol, root = text_case(tmp_path, videos, texts, np.arange(10))
    m = probe("retrieval", path, protocol, root)["metrics"]
    assert m["t2v_R@1"]["value"] == 0 and m["t2v_MdR"]["value"] == 10 and m["v2t_MnR"]["value"] == 10
    import h5py

    with h5py.File(path, "r+") as f:
        claimed = f["text/video_ids"][()]
        f["text/video_ids"][0] = claimed[1]
    with pytest.raises(ProbeError, match="disagrees with the manifest for caption 'te0000#0'"):
        probe("retrieval", path, protocol, root)
