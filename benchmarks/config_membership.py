"""SMAC's ``config not in processed_configs`` test: a plain list (SMAC) against mfhpo's ConfigList
(mfhpo.study.optimizers), with N configurations of the demo study's 13-parameter space. SMAC's
ConfigSelector runs this test for each candidate configuration it proposes.

    python benchmarks/config_membership.py [--n 1000 3000 5000] [--queries 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> None:
    from mfhpo.study.config import load_study
    from mfhpo.study.optimizers import ConfigList
    from mfhpo.study.space import build_space_spec, to_configspace

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 3000, 5000])
    ap.add_argument("--queries", type=int, default=20)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from driver_scale import STUDY

    path = Path(tempfile.mkdtemp(prefix="mfhpo_cm_")) / "s.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    study = load_study(path)
    cs = to_configspace(build_space_spec(study, str(path)), seed=0)
    pool = cs.sample_configuration(max(a.n) + a.queries)
    queries = pool[-a.queries:]  # not members: the whole list is scanned, as for a new candidate
    for n in a.n:
        plain = list(pool[:n])
        t = time.perf_counter()
        r1 = [c in plain for c in queries]
        t_list = (time.perf_counter() - t) / a.queries
        t = time.perf_counter()
        fast = ConfigList(plain)
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        r2 = [c in fast for c in queries]
        t_set = (time.perf_counter() - t) / a.queries
        assert r1 == r2
        more = plain + list(queries[:1])  # SMAC reassigns the run history's configurations + new ones
        t = time.perf_counter()
        again = ConfigList.reusing(more, fast)
        t_reuse = time.perf_counter() - t
        assert queries[0] in again and queries[1] not in again
        print(f"{n:5d} configurations: list {t_list * 1e3:8.2f} ms per test, ConfigList {t_set * 1e3:6.3f} ms "
              f"(x{t_list / t_set:,.0f}); building it {t_build * 1e3:.0f} ms once, {t_reuse * 1e3:.1f} ms on "
              f"SMAC's reassignment", flush=True)


if __name__ == "__main__":
    main()
