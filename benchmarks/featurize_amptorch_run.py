"""Run AMPTorch's GMP harness (``../shared/amptorch_gmp/amptorch_gmp.py``, built outside the
repository) with the seconds inside its C++ function counted as *process CPU time* instead of wall
time, so that "C++ kernel alone per CPU-second" compares with mfhpo's CPU time under machine load.

Runs under the AMPTorch virtual env's python (numpy, ase, cffi; no torch, no mfhpo):

    AMPTORCH_VENV/bin/python benchmarks/featurize_amptorch_run.py HARNESS.py --setting S.json --data FILE [--derivatives]

The harness module is imported unchanged; only its ``TimedLib`` proxy class is replaced by a subclass
that reads ``time.process_time``. It prints the harness's ``RESULT {json}`` line
(``c_function_s`` / ``c_only_atoms_per_s`` then are CPU seconds / atoms per CPU-second).
"""

import importlib.util
import sys
import time


def main() -> None:
    harness = sys.argv[1]
    spec = importlib.util.spec_from_file_location("amptorch_gmp_harness", harness)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class CpuTimedLib(mod.TimedLib):
        def __getattr__(self, name):
            fn = getattr(self._lib, name)

            def call(*a):
                t = time.process_time()
                r = fn(*a)
                self.seconds += time.process_time() - t
                self.calls += 1
                return r

            return call

    mod.TimedLib = CpuTimedLib
    sys.argv = [harness] + sys.argv[2:]
    mod.main()


if __name__ == "__main__":
    main()
