import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mfhpo.data import (Dataset, fit_reference_energies, load_dataset, nested_subset, read_structures,
                        split_indices, structure_hash, KCAL_PER_MOL_IN_EV)
from mfhpo.errors import MfhpoError


def test_demo_dataset_is_labelled_and_hash_stable(demo_images):
    ds = Dataset.from_images(demo_images, require_forces=True, group_key="sid")
    assert len(ds) == 60 and ds.has_forces
    assert all((~m).sum() == 4 for m in ds.free)  # bottom layer of a 2x2 slab is fixed
    h = ds.hash()
    assert h == Dataset.from_images(demo_images, require_forces=True).hash()
    moved = [a.copy() for a in demo_images]
    for a, b in zip(moved, demo_images):
        a.calc = b.calc
    moved[3].positions[0, 0] += 1e-6
    assert structure_hash(moved[3]) != structure_hash(demo_images[3])


def test_split_is_seeded_disjoint_and_groupwise(demo_images):
    ds = Dataset.from_images(demo_images, group_key="sid")
    s1 = split_indices(len(ds), 0.2, 0.1, seed=3, groups=ds.groups)
    s2 = split_indices(len(ds), 0.2, 0.1, seed=3, groups=ds.groups)
    assert s1.as_dict() == s2.as_dict()
    allidx = np.concatenate([s1.train, s1.val, s1.test])
    assert sorted(allidx.tolist()) == list(range(len(ds)))
    tr, va, te = (set(ds.groups[s]) for s in (s1.train, s1.val, s1.test))
    assert not (tr & va) and not (tr & te) and not (va & te)
    s3 = split_indices(len(ds), 0.2, 0.1, seed=4, groups=ds.groups)
    assert s3.as_dict() != s1.as_dict()


def test_nested_subsets_contain_each_other():
    train = np.arange(100, 200)
    prev = set()
    for f in (0.05, 0.1, 0.33, 0.5, 0.9, 1.0):
        cur = set(nested_subset(train, f, seed=7).tolist())
        assert prev <= cur
        assert len(cur) == int(np.ceil(f * 100))
        prev = cur
    assert prev == set(train.tolist())


def test_reference_energies_recover_linear_model():
    rng = np.random.default_rng(0)
    eps = {"Cu": -3.5, "O": -4.2, "H": -1.1}
    images = []
    for _ in range(30):
        n = rng.integers(1, 5, size=3)
        syms = ["Cu"] * n[0] + ["O"] * n[1] + ["H"] * n[2]
        images.append(Atoms(syms, positions=rng.normal(size=(len(syms), 3))))
    E = np.array([sum(eps[s] for s in a.get_chemical_symbols()) for a in images])
    refs = fit_reference_energies(images, E)
    for e, v in eps.items():
        assert refs[e] == pytest.approx(v, abs=1e-10)


def _labelled(e=1.0, f=None, **kw):
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], **kw)
    a.calc = SinglePointCalculator(a, energy=e, forces=np.zeros((2, 3)) if f is None else f)
    return a


def test_validation_errors_name_file_frame_and_problem(tmp_path):
    bad = _labelled()
    bad.positions[1, 2] = np.nan
    with pytest.raises(MfhpoError, match=r"x.traj: frame 1: positions contain NaN"):
        Dataset.from_images([_labelled(), bad], source="x.traj")
    with pytest.raises(MfhpoError, match="energy is NaN"):
        Dataset.from_images([_labelled(e=np.nan)], source="x")
    zero = _labelled(cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True)
    with pytest.raises(MfhpoError, match="zero volume"):
        Dataset.from_images([zero], source="x")
    nolabel = Atoms("H")
    with pytest.raises(MfhpoError, match="frame 0: has no energy"):
        Dataset.from_images([nolabel], source="x")
    with pytest.raises(MfhpoError, match="have no density"):
        Dataset.from_images([_labelled()], source="x", known_elements=["C"])
    with pytest.raises(MfhpoError, match="file not found"):
        read_structures(tmp_path / "missing.traj")
    junk = tmp_path / "junk.traj"
    junk.write_text("not a trajectory")
    with pytest.raises(MfhpoError, match="junk.traj: cannot read"):
        read_structures(junk)


def test_md17_npz_is_converted_to_ev(tmp_path):
    z = np.array([6, 1, 1, 1, 1])
    R = np.random.default_rng(0).normal(size=(3, 5, 3))
    E = np.array([-100.0, -101.0, -99.5])
    F = np.ones((3, 5, 3))
    np.savez(tmp_path / "rmd17.npz", nuclear_charges=z, coords=R, energies=E, forces=F)
    np.savez(tmp_path / "md17.npz", z=z, R=R, E=E[:, None], F=F)
    for name in ("rmd17.npz", "md17.npz"):
        ds = load_dataset(tmp_path / name, require_forces=True)
        assert len(ds) == 3
        assert ds.energies[1] == pytest.approx(-101.0 * KCAL_PER_MOL_IN_EV)
        assert ds.forces[0][0, 0] == pytest.approx(KCAL_PER_MOL_IN_EV)
        assert not ds.images[0].pbc.any()


def test_atomic_open_publishes_whole_file_with_normal_permissions(tmp_path):
    import os

    import pytest

    from mfhpo.atomic import _UMASK, atomic_open

    target = tmp_path / "out.bin"
    with atomic_open(target) as fh:
        fh.write(b"complete")
    assert target.read_bytes() == b"complete"
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~_UMASK
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"complete"  # the old file survives, no temporary left behind
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
