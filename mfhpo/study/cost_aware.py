"""Cost-aware acquisition for SMAC (``optimizer_options.acquisition: ei_per_second``).

Configurations of one space differ several-fold in what an epoch costs (batch size, network width,
descriptor size). Plain expected improvement (EI) ignores that; here SMAC gets a second random forest
that predicts log(1 + wall seconds per epoch-equivalent) and the acquisition is

    EI(x) / predicted seconds per epoch-equivalent of x

with EI exactly SMAC's own (``EI(log=True)`` on its log-scaled costs). The seconds come from what
mfhpo tells SMAC for every trial: ``TrialValue.time`` (the trial's wall seconds) and
``additional_info["epoch_equivalents"]`` (epochs trained x subset fraction; the budget when absent).
SMAC's own ``EIPS`` divides plain EI on the encoded cost by log(1 + seconds), and its encoder drops the
log scaling of the cost, so cost awareness and the cost model would change together; this module
changes only the first.
"""

from __future__ import annotations

import numpy as np

_MIN_SECONDS = 1e-3  # floor of the seconds per epoch-equivalent (trials too fast to time)


def seconds_per_unit(key, value) -> float:
    """Wall seconds per epoch-equivalent of one told trial."""
    units = (value.additional_info or {}).get("epoch_equivalents") or key.budget or 1.0
    return max(float(value.time) / max(float(units), 1e-12), _MIN_SECONDS)


def _encoder_cls():
    from smac.runhistory.encoder import RunHistoryLogScaledEncoder

    class CostAndSecondsEncoder(RunHistoryLogScaledEncoder):
        """SMAC's log-scaled cost (column 0, as without cost awareness) beside
        log(1 + wall seconds per epoch-equivalent) (column 1)."""

        def _build_matrix(self, trials, store_statistics: bool = False):
            X, y = super()._build_matrix(trials=trials, store_statistics=store_statistics)
            t = np.array([seconds_per_unit(k, v) for k, v in trials.items()], dtype=float)
            cost = np.asarray(y, dtype=float).reshape(len(t), -1)[:, 0] if len(t) else np.zeros(0)
            return X, np.column_stack([cost, np.log1p(t)])

    return CostAndSecondsEncoder


def _acquisition_cls():
    from smac.acquisition.function import EI

    class EIPerSecond(EI):
        """SMAC's EI on the cost model divided by the predicted seconds per epoch-equivalent."""

        @property
        def name(self) -> str:
            return "Expected Improvement per second"

        def _compute(self, X: np.ndarray) -> np.ndarray:
            both = self._model
            cost_model, time_model = both.models
            self._model = cost_model
            try:
                ei = super()._compute(X)
            finally:
                self._model = both
            log_t, _ = time_model.predict_marginalized(X)
            seconds = np.maximum(np.expm1(np.asarray(log_t, dtype=float).reshape(-1, 1)), _MIN_SECONDS)
            return ei / seconds

    return EIPerSecond


def cost_aware_parts(scenario, cost_model, seconds_model) -> dict:
    """The facade arguments that make SMAC cost-aware: one model of two outputs (the cost, and
    log(1 + seconds per epoch-equivalent)), the encoder that supplies both, and EI per second."""
    from smac.model.multi_objective_model import MultiObjectiveModel

    return {
        "model": MultiObjectiveModel([cost_model, seconds_model], objectives=["cost", "seconds_per_unit"],
                                     seed=scenario.seed),
        "runhistory_encoder": _encoder_cls()(scenario),
        "acquisition_function": _acquisition_cls()(log=True),
    }
