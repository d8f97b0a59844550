"""Native GMP featurizer on generated data: invariances, derivatives, periodic images, dtype, cache,
setting parsing and CLI errors (no external files needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from mfhpo.config import DescriptorConfig
from mfhpo.errors import MfhpoError
from mfhpo.gmp import FeatureCache, FeaturizeOptions, GMPSetting, dense_dfp, featurize, featurize_many


def _setting(scheme="gmp", orders=None, **kw):
    if orders is None:
        orders = {0: {"groups": [1]}, 1: {"groups": [1]}, 2: {"groups": "all"}, 3: {"groups": "all"}} \
            if scheme == "gmp" else {0: {}, 1: {}, 2: {}, 3: {}}
    desc = DescriptorConfig(scheme=scheme, orders=orders, sigmas=kw.pop("sigmas", [0.3, 0.8, 1.5]),
                            cutoff=kw.pop("cutoff", 5.0), **kw)
    return GMPSetting.from_descriptor(desc, ["Cu", "O", "H", "C", "Pt"])


def _slab():
    s = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    s += Atoms("OH", positions=s.positions[-1] + np.array([[0.3, 0.2, 1.9], [0.5, 0.1, 2.85]]))
    s.rattle(0.05, seed=1)
    return s


def _molecule():
    m = molecule("CH3CH2OH")
    m.rattle(0.02, seed=2)
    return m


def _relmax(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (np.abs(a - b) / np.maximum(np.abs(b).max(0), 1e-12)).max()


def test_translation_and_permutation():
    s = _setting()
    at = _slab()
    f = featurize(at, s, derivatives=True)
    moved = at.copy()
    moved.positions += np.array([1.3, -7.1, 0.4])  # outside the cell: wrapping must not matter
    assert _relmax(featurize(moved, s).fp, f.fp) < 1e-10
    perm = np.random.default_rng(0).permutation(len(at))
    fp2 = featurize(at[perm], s, derivatives=True)
    assert _relmax(fp2.fp, f.fp[perm]) < 1e-10
    d1 = dense_dfp(f).numpy()[perm][:, :, perm]
    assert np.abs(dense_dfp(fp2).numpy() - d1).max() < 1e-9 * np.abs(d1).max()


def test_rotation_invariance():
    m = _molecule()
    R = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    r = m.copy()
    r.positions = m.positions @ R.T
    on = _setting("gmpordernorm")
    assert _relmax(featurize(r, on).fp, featurize(m, on).fp) < 1e-10
    g = _setting()
    low = np.array([o <= 1 for o, _, _ in g.columns])
    a, b = featurize(r, g).fp.numpy(), featurize(m, g).fp.numpy()
    assert _relmax(a[:, low], b[:, low]) < 1e-10
    assert _relmax(a[:, ~low], b[:, ~low]) > 1e-3  # order >= 2 per-group features are not invariant


@pytest.mark.parametrize("kw", [dict(), dict(square=True), dict(cutoff_function="cosine"),
                                dict(scheme="gmpordernorm"), dict(scheme="gmpordernorm", square=False,
                                                                  cutoff_function="cosine"),
                                dict(rs_setup={"setup": "scale", "scale_factor": 1.5}),
                                dict(scheme="gmpordernorm", channels=["valence", "count", "period"])])
def test_finite_differences(kw):
    s = _setting(**kw)
    at = bulk("Cu", "fcc", a=3.6) * (1, 1, 2)  # cell smaller than the cutoff: many images
    at += Atoms("O", positions=[[0.9, 1.1, 0.7]])
    at.rattle(0.05, seed=4)
    f = featurize(at, s, derivatives=True)
    dd = dense_dfp(f).numpy()
    h = 1e-5
    scale = np.maximum(np.abs(dd).max(axis=(0, 2, 3)), 1e-12)
    for j in range(len(at)):
        for a in range(3):
            p, m = at.copy(), at.copy()
            p.positions[j, a] += h
            m.positions[j, a] -= h
            fd = (featurize(p, s).fp - featurize(m, s).fp).numpy() / (2 * h)
            assert (np.abs(fd - dd[:, :, j, a]) / scale).max() < 1e-5, (j, a)


def test_cosine_cutoff_is_continuous():
    s = _setting(cutoff_function="cosine", cutoff=4.0)
    vals = []
    for x in (3.999, 4.001):
        at = Atoms("CuO", positions=[[0, 0, 0], [x, 0, 0]])
        vals.append(featurize(at, s).fp.numpy())
    assert np.abs(vals[0] - vals[1]).max() < 1e-5 * np.abs(vals[0]).max()


def test_supercell_and_sparse_layout():
    s = _setting()
    at = _slab()
    f = featurize(at, s, derivatives=True)
    sup = featurize(at.repeat((2, 1, 1)), s).fp.numpy()
    n = len(at)
    assert _relmax(sup[:n], f.fp) < 1e-10 and _relmax(sup[n:], f.fp) < 1e-10
    keys = f.pair_i.numpy() * n + f.pair_j.numpy()
    assert len(np.unique(keys)) == len(keys)
    assert set(range(n)) <= set(f.pair_i[f.pair_i == f.pair_j].tolist())
    # translation of everything leaves fp unchanged: sum over j of dfp[i, :, j] = 0
    assert np.abs(dense_dfp(f).numpy().sum(axis=2)).max() < 1e-9 * np.abs(f.dfp.numpy()).max()


def test_face_atoms_and_molecule_in_any_box():
    s = _setting()
    at = _slab()
    sp = at.get_scaled_positions()
    sp[0, 0] = 1 - 1e-9  # within 1e-7 of a face (AMPTorch bug 1)
    at.set_scaled_positions(sp)
    shifted = at.copy()
    shifted.positions += 0.0123
    assert _relmax(featurize(at, s).fp, featurize(shifted, s).fp) < 1e-10
    m = _molecule()
    boxed = m.copy()
    boxed.cell = [3.0, 3.0, 3.0]  # smaller than the molecule, pbc False: no images
    assert _relmax(featurize(boxed, s).fp, featurize(m, s).fp) < 1e-12


def test_batching_and_float32():
    s = _setting()
    benzene, ethanol = molecule("C6H6"), _molecule()
    benzene.rattle(0.03, seed=3)
    ethanol.rattle(0.03, seed=4)
    images = [_slab(), _molecule(), bulk("Pt", "fcc", a=3.9), benzene, ethanol]
    one = [featurize(a, s, derivatives=True) for a in images]
    many = featurize_many(images, s, derivatives=True)
    some = featurize_many(images[1:4], s, derivatives=True)
    # on the CPU a structure's features do not depend on what else is featurized with it, to the
    # bit (a study caches features of growing subsets; a bundle retrain computes them afresh)
    for a, b in zip(one, many):
        assert torch.equal(a.pair_i, b.pair_i) and torch.equal(a.fp, b.fp) and torch.equal(a.dfp, b.dfp)
    for a, b in zip(one[1:4], some):
        assert torch.equal(a.fp, b.fp) and torch.equal(a.dfp, b.dfp)
    # the one-atom Pt crystal's derivatives are exactly 0 (all its neighbours are its own images)
    # up to rounding noise of ~1e-15
    dscale = max(np.abs(a.dfp.numpy()).max() for a in one)
    assert np.abs(one[2].dfp.numpy()).max() < 1e-12 * dscale
    # float32 output is the float64 result, cast (same batch, so the same float64 values)
    f32 = featurize_many(images, s, derivatives=True, dtype=torch.float32)
    for a, b in zip(many, f32):
        assert b.fp.dtype == torch.float32 and b.dfp.dtype == torch.float32
        assert _relmax(b.fp.double(), a.fp) < 1e-6
        assert torch.equal(b.dfp, a.dfp.float())


def _varied_structures(n: int, seed: int) -> list:
    """Molecules, slabs and crystals of different sizes and neighbour counts."""
    rng = np.random.default_rng(seed)
    makers = [lambda: molecule("CH3CH2OH"), lambda: molecule("C6H6"), lambda: molecule("CH3COOH"), _slab,
              lambda: bulk("Pt", "fcc", a=3.9) * (2, 1, 1), lambda: bulk("Cu", "fcc", a=3.6, cubic=True)]
    out = []
    for k in range(n):
        a = makers[k % len(makers)]()
        a.rattle(0.05, seed=int(rng.integers(1 << 30)))
        out.append(a)
    return out


@pytest.mark.parametrize("kw", [{}, {"cutoff_function": "cosine", "cutoff": 3.5},
                                {"orders": {0: {"groups": [1]}, 2: {"groups": "all"}, 4: {"groups": "all"}},
                                 "sigmas": [0.3, 0.6, 1.0, 1.5, 2.0, 2.5]}])
def test_blocked_layout_is_bitwise_independent_of_the_chunk(kw):
    """The CPU's default layout: a structure's features and derivatives are bitwise the same whether it
    is featurized alone, with others in one shared chunk (in any order), or cut by centres into
    several chunks (a study caches features of growing subsets; a bundle retrain computes them in
    one call). Settings cover both component-sum paths and both cutoff functions."""
    s = _setting(**kw)
    images = _varied_structures(18, seed=5)
    alone = [featurize(a, s, derivatives=True) for a in images]
    order = np.random.default_rng(6).permutation(len(images))
    for options in (FeaturizeOptions(), FeaturizeOptions(chunk_pairs=300)):
        mixed = featurize_many([images[k] for k in order], s, derivatives=True, options=options)
        for k, f in zip(order, mixed):
            a = alone[k]
            assert torch.equal(a.pair_j, f.pair_j) and torch.equal(a.fp, f.fp) and torch.equal(a.dfp, f.dfp), k
        fp_only = featurize_many([images[k] for k in order[:7]], s, options=options)
        assert all(torch.equal(alone[k].fp, f.fp) for k, f in zip(order[:7], fp_only))


def test_cache(tmp_path):
    s = _setting()
    images = [_slab(), _molecule()]
    cache = FeatureCache(tmp_path / "c")
    first = featurize_many(images, s, derivatives=True, cache=cache)
    assert cache.misses == 2 and cache.writes == 2
    again = featurize_many(images, s, derivatives=True, cache=cache)
    assert cache.hits == 2
    for a, b in zip(first, again):
        assert torch.equal(a.fp, b.fp) and torch.equal(a.dfp, b.dfp)
    # a derivative entry also serves fp-only requests; another setting misses
    featurize_many(images, s, cache=cache)
    assert cache.hits == 4
    featurize_many(images[:1], _setting(cutoff=4.0), cache=cache)
    assert cache.misses == 3
    # entries say which layout made them (the layouts differ in the last bits): the greedy layout
    # neither reads the blocked layout's entries nor overwrites them
    greedy = featurize_many(images, s, derivatives=True, cache=cache, options=FeaturizeOptions(layout="greedy"))
    assert cache.misses == 5 and cache.writes == 5
    assert cache.path(s, images[0], torch.float64, True, "b").exists() and cache.path(s, images[0], torch.float64, True).exists()
    assert all(torch.allclose(a.fp, b.fp, rtol=1e-12, atol=0) for a, b in zip(first, greedy))
    # a truncated file is ignored (recomputed), no temp files left behind
    p = cache.path(s, images[0], torch.float64, True, "b")
    p.write_bytes(p.read_bytes()[:100])
    assert featurize_many(images[:1], s, derivatives=True, cache=cache)[0].fp.shape[0] == len(images[0])
    assert not list((tmp_path / "c").rglob(".tmp-*"))


def test_cache_dtype_and_corrupt_entries(tmp_path):
    s = _setting()
    images = [_slab(), _molecule()]
    cache = FeatureCache(tmp_path / "c")
    ref = featurize_many(images, s, derivatives=True, dtype=torch.float32, cache=cache)
    p = cache.path(s, images[0], torch.float32, True, "b")
    assert p.exists() and p.stat().st_size < 4 * ref[0].dfp.numel() + 4 * ref[0].fp.numel() + 16 * len(ref[0].pair_i) + 4096
    again = featurize_many(images, s, derivatives=True, dtype=torch.float32, cache=FeatureCache(tmp_path / "c"))
    for a, b in zip(ref, again):
        assert b.dfp.dtype == torch.float32 and b.pair_i.dtype == torch.int64
        assert torch.equal(a.fp, b.fp) and torch.equal(a.dfp, b.dfp) and torch.equal(a.pair_j, b.pair_j)
        b.dfp.mul_(2.0)  # cached tensors are writable and private (copy-on-write): the file is unchanged
    c3 = FeatureCache(tmp_path / "c")
    fp_only = featurize_many(images, s, dtype=torch.float32, cache=c3)  # served from the fpd entries
    assert c3.hits == 2 and fp_only[0].dfp is None and torch.equal(fp_only[0].fp, ref[0].fp)
    assert torch.equal(featurize_many(images[:1], s, derivatives=True, dtype=torch.float32,
                                      cache=FeatureCache(tmp_path / "c"))[0].dfp, ref[0].dfp)
    # garbage header / wrong magic / empty file: misses, recomputed and rewritten
    for bad in (b"", b"MFGMPC1\n" + b"\xff" * 8, b"not a cache entry at all"):
        p.write_bytes(bad)
        c4 = FeatureCache(tmp_path / "c")
        f = featurize_many(images[:1], s, derivatives=True, dtype=torch.float32, cache=c4)[0]
        assert c4.misses == 1 and c4.writes == 1 and torch.equal(f.dfp, ref[0].dfp)


def test_setting_keys_and_densities(tmp_path):
    a, b = _setting(), _setting()
    assert a.key() == b.key() and hash(a) == hash(b)
    assert a.key() != _setting(square=True).key()
    assert GMPSetting.from_dict(json.loads(json.dumps(a.to_dict()))).key() == a.key()
    assert a.nfeat == 3 * (1 + 1 + 2 + 3)
    (tmp_path / "Cu_x.g").write_text("1.0 2.0\n0.5 0.7 extra\n")
    (tmp_path / "O.g").write_text("3.0 1.0\n")
    desc = DescriptorConfig(densities=str(tmp_path))
    s = GMPSetting.from_descriptor(desc, ["Cu", "O"])
    assert s.densities["Cu"] == ((1.0, 0.5), (2.0, 0.7))
    assert s.key() != GMPSetting.from_descriptor(DescriptorConfig(), ["Cu", "O"]).key()
    with pytest.raises(MfhpoError, match="H"):
        GMPSetting.from_descriptor(desc, ["Cu", "O", "H"])
    with pytest.raises(MfhpoError, match="Au"):
        featurize(Atoms("Au"), s)
    from mfhpo.gmp.densities import default_density, electrons

    for el, nv in (("H", 1), ("O", 6), ("Cu", 11), ("Pt", 10), ("Bi", 5)):
        assert abs(electrons(default_density(el)) - nv) < 1e-12


def test_density_channels():
    """Each channel is the valence featurizer on rescaled densities; blocks concatenated in order."""
    from mfhpo.gmp.densities import electrons, period

    one = _setting("gmpordernorm", cutoff_function="cosine")
    three = _setting("gmpordernorm", cutoff_function="cosine", channels=["valence", "count", "period"])
    assert three.nfeat == 3 * one.nfeat and "channels valence+count+period" in three.describe()
    assert three.key() != one.key() and GMPSetting.from_dict(three.to_dict()).key() == three.key()
    old_format = {k: v for k, v in one.to_dict().items() if k != "channels"}  # checkpoints before channels
    assert GMPSetting.from_dict(old_format).key() == one.key()
    subs = three.channel_settings()
    assert subs[0].key() == one.key()  # the valence block is exactly the single-channel feature set
    for el in ("Cu", "O", "H"):
        assert abs(electrons(subs[1].densities[el]) - 1.0) < 1e-12
        assert abs(electrons(subs[2].densities[el]) - period(el)) < 1e-12
    assert (period("H"), period("O"), period("Cu"), period("Pt")) == (1, 2, 4, 6)
    at = _slab()
    f3 = featurize(at, three, derivatives=True)
    n = one.nfeat
    for k, sub in enumerate(subs):
        f = featurize(at, sub, derivatives=True)
        assert torch.equal(f3.fp[:, k * n:(k + 1) * n], f.fp) and torch.equal(f3.dfp[:, k * n:(k + 1) * n], f.dfp)
    # the extra channels carry information the valence block does not: Cu vs a neighbour swap
    assert not torch.allclose(f3.fp[:, n:2 * n] * 11, f3.fp[:, :n])
    with pytest.raises(ValueError, match="channels"):
        DescriptorConfig(channels=["valence", "valence"])
    with pytest.raises(ValueError):
        DescriptorConfig(channels=["spin"])


def test_density_channels_cache(tmp_path):
    three = _setting(channels=["valence", "period"])
    cache = FeatureCache(tmp_path / "c")
    first = featurize_many([_slab()], three, derivatives=True, cache=cache)[0]
    assert cache.writes == 2  # one entry per channel, reusable by any setting that has that channel
    featurize_many([_slab()], _setting(), cache=cache)
    assert cache.hits == 1
    again = featurize_many([_slab()], three, derivatives=True, cache=cache)[0]
    assert torch.equal(first.fp, again.fp) and torch.equal(first.dfp, again.dfp)


@pytest.mark.parametrize("derivatives", [False, True])
def test_density_channels_one_pass_equals_per_channel(tmp_path, derivatives):
    """All channels in one pass (shared neighbour pairs and monomials): every channel's block and
    cache entry is bitwise what featurizing that channel's setting alone gives and stores."""
    three = _setting(channels=["valence", "count", "period"])
    subs = three.channel_settings()
    images = [_slab(), _molecule(), bulk("Pt", "fcc", a=3.9) * (2, 2, 2)]
    one_pass = FeatureCache(tmp_path / "one")
    feats = featurize_many(images, three, derivatives=derivatives, cache=one_pass)
    assert one_pass.writes == 3 * len(images)
    per_channel = FeatureCache(tmp_path / "per")
    n = subs[0].nfeat
    for c, sub in enumerate(subs):
        alone = featurize_many(images, sub, derivatives=derivatives, cache=per_channel)
        for atoms, f, g in zip(images, feats, alone):
            assert torch.equal(f.fp[:, c * n:(c + 1) * n], g.fp)
            if derivatives:
                assert torch.equal(f.pair_i, g.pair_i) and torch.equal(f.pair_j, g.pair_j)
                assert torch.equal(f.dfp[:, c * n:(c + 1) * n], g.dfp)
            a = one_pass.path(sub, atoms, torch.float64, derivatives, "b")
            b = per_channel.path(sub, atoms, torch.float64, derivatives, "b")
            assert a.read_bytes() == b.read_bytes()
    # a partly cached structure: the missing channel is computed and stored, the result unchanged
    one_pass.path(subs[1], images[0], torch.float64, derivatives, "b").unlink()
    cache = FeatureCache(tmp_path / "one")
    again = featurize_many(images, three, derivatives=derivatives, cache=cache)
    assert cache.writes == 1 and cache.hits == 3 * len(images) - 1
    for f, g in zip(feats, again):
        assert torch.equal(f.fp, g.fp) and (not derivatives or torch.equal(f.dfp, g.dfp))


def _cli(argv, capsys):
    from mfhpo.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


def _write_setting(path, **fp_extra):
    fp = {"MCSHs": {"0": {"groups": [1], "sigmas": [0.5, 1.0]}, "1": {"groups": [1], "sigmas": [0.5]}},
          "cutoff": 4.0}
    fp.update(fp_extra)
    path.write_text(json.dumps({"fp_scheme": "gmpordernorm" if "orders" in str(fp) else "gmp",
                                "fp_params": fp, "elements": ["C", "H", "O"]}))
    return path


def test_cli_errors(tmp_path, capsys):
    import ase.io

    (tmp_path / "C.g").write_text("4.0 1.0\n")
    gs = {"C": "C.g", "H": "C.g", "O": "C.g"}
    good = _write_setting(tmp_path / "s.json", atom_gaussians=gs)
    mol = tmp_path / "m.xyz"
    ase.io.write(str(mol), _molecule())
    out = tmp_path / "o.npz"
    code, _ = _cli(["featurize", str(mol), "--setting", str(good), "--out", str(out), "--derivatives"], capsys)
    assert code in (0, None)
    z = np.load(out)
    assert str(z["layout"]) == "sparse" and z["fp_000"].shape == (9, 3)
    npair = z["pair_i_000"].shape[0]
    assert z["pair_j_000"].shape == (npair,) and z["dfp_000"].shape == (npair, 3, 3) and npair > 9
    code, _ = _cli(["featurize", str(mol), "--setting", str(good), "--out", str(out), "--derivatives", "--dense"],
                   capsys)
    assert code in (0, None)
    zd = np.load(out)
    assert str(zd["layout"]) == "dense" and zd["dfp_000"].shape == (9, 3, 9, 3) and "pair_i_000" not in zd.files
    assert np.array_equal(zd["dfp_000"][z["pair_i_000"], :, z["pair_j_000"], :], z["dfp_000"])
    code, err = _cli(["featurize", str(mol), "--setting", str(good), "--out", str(out), "--dense"], capsys)
    assert code == 2 and "--dense only applies with --derivatives" in err
    cases = []
    cases.append(([str(tmp_path / "missing.xyz")], "missing.xyz: file not found"))
    (tmp_path / "junk.traj").write_bytes(b"\x00\x01garbage")
    cases.append(([str(tmp_path / "junk.traj")], "junk.traj: cannot read"))
    nan = _molecule()
    nan.positions[2, 1] = np.nan
    ase.io.write(str(tmp_path / "nan.traj"), [_molecule(), nan])
    cases.append(([str(tmp_path / "nan.traj")], "frame 1: positions contain NaN"))
    ase.io.write(str(tmp_path / "au.traj"), Atoms("AuC", positions=[[0, 0, 0], [2, 0, 0]]))
    cases.append(([str(tmp_path / "au.traj")], "element(s) Au have no density"))
    for argv, msg in cases:
        code, err = _cli(["featurize", *argv, "--setting", str(good), "--out", str(out)], capsys)
        assert code == 2 and msg in err and "\n" not in err, err
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"fp_scheme": "gmp",')
    bad_order = _write_setting(tmp_path / "o6.json", atom_gaussians=gs,
                               MCSHs={"6": {"groups": [1], "sigmas": [1.0]}})
    bad_group = _write_setting(tmp_path / "g.json", atom_gaussians=gs,
                               MCSHs={"2": {"groups": [3], "sigmas": [1.0]}})
    no_key = tmp_path / "nokey.json"
    no_key.write_text(json.dumps({"fp_scheme": "gmp", "fp_params": {"cutoff": 4}, "elements": ["C"]}))
    no_g = _write_setting(tmp_path / "nog.json")
    for path, msg in ((bad_json, "invalid JSON"), (bad_order, "MCSHs.6"), (bad_group, "has no group 3"),
                      (no_key, "fp_params.MCSHs"), (no_g, "atom_gaussians")):
        code, err = _cli(["featurize", str(mol), "--setting", str(path), "--out", str(out)], capsys)
        assert code == 2 and path.name in err and msg in err and "\n" not in err, err


def test_featurize_options_decide_the_chunking(monkeypatch):
    """FeaturizeOptions, passed explicitly, set how many chunks a call computes; environment variables
    are not read; every chunking gives the same features to rounding; records without a layout read
    as the greedy one."""
    from mfhpo.gmp import kernels

    calls = []
    real = kernels.compute_chunk
    monkeypatch.setattr(kernels, "compute_chunk", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = _setting()
    images = [_molecule(), molecule("C6H6"), _molecule(), bulk("Pt", "fcc", a=3.9)]

    def chunks(options):
        calls.clear()
        feats = featurize_many(images, s, derivatives=True, options=options)
        return len(calls), feats

    monkeypatch.setenv("MFHPO_GMP_SHARE_CHUNKS", "0")  # not a switch
    n_default, shared = chunks(None)
    assert n_default == 1  # the CPU default: blocked layout, small structures share a chunk
    n_own, own = chunks(FeaturizeOptions(share_chunks=False))
    assert n_own == len(images)
    assert chunks(FeaturizeOptions(layout="greedy"))[0] == len(images)  # greedy on the CPU: one per chunk
    n_split, split = chunks(FeaturizeOptions(chunk_pairs=64))  # large structures cut by centres
    assert n_split > len(images)
    _, greedy = chunks(FeaturizeOptions(layout="greedy", share_chunks=True))
    dscale = max(float(a.dfp.abs().max()) for a in own)
    for a, b, c, g in zip(own, shared, split, greedy):
        assert torch.equal(a.pair_i, b.pair_i) and torch.equal(a.pair_j, c.pair_j)
        assert torch.equal(a.fp, b.fp) and torch.equal(a.fp, c.fp) and torch.equal(a.dfp, c.dfp)
        assert _relmax(g.fp, a.fp) < 1e-12 and float((g.dfp - a.dfp).abs().max()) < 1e-12 * dscale
    assert FeaturizeOptions().shares_chunks("cpu") is True and FeaturizeOptions().shares_chunks("cuda") is True
    assert FeaturizeOptions(layout="greedy").shares_chunks("cpu") is False
    assert FeaturizeOptions().resolved("cpu") == FeaturizeOptions(share_chunks=True, layout="blocked")
    assert FeaturizeOptions().resolved("cuda") == FeaturizeOptions(share_chunks=True, layout="greedy")
    assert FeaturizeOptions.from_dict(FeaturizeOptions(True, 12.0).to_dict()) == FeaturizeOptions(True, 12.0)
    assert FeaturizeOptions.from_dict({"share_chunks": False}) == FeaturizeOptions(False, layout="greedy")
    with pytest.raises(MfhpoError, match="layout"):
        FeaturizeOptions(layout="tiled")
    with pytest.raises(MfhpoError, match="chunk_mb"):
        FeaturizeOptions(chunk_mb=0)
    with pytest.raises(MfhpoError, match="chunk_pairs"):
        FeaturizeOptions(chunk_pairs=0)
