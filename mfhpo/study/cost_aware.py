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


def seconds_per_unit(trials) -> np.ndarray:
    """Wall seconds per epoch-equivalent of each told trial (``trials``: SMAC's key -> value
    mapping). A trial that trained nothing (crashed before training, 0 epoch-equivalents) gets the
    median of the others, so its seconds per unit is no outlier."""
    t = np.full(len(trials), np.nan)
    for i, (key, value) in enumerate(trials.items()):
        units = (value.additional_info or {}).get("epoch_equivalents")
        units = key.budget if units is None else units  # a value told without epoch-equivalents
        if units is not None and float(units) > 0:
            t[i] = max(float(value.time) / float(units), _MIN_SECONDS)
    ok = np.isfinite(t)
    return np.where(ok, t, float(np.median(t[ok])) if ok.any() else 1.0)


def _encoder_cls():
    from smac.runhistory.encoder import RunHistoryLogScaledEncoder

    class CostAndSecondsEncoder(RunHistoryLogScaledEncoder):
        """SMAC's log-scaled cost (column 0, as without cost awareness) beside
        log(1 + wall seconds per epoch-equivalent) (column 1)."""

        def _build_matrix(self, trials, store_statistics: bool = False):
            X, y = super()._build_matrix(trials=trials, store_statistics=store_statistics)
            t = seconds_per_unit(trials)
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

        # SMAC hands the acquisition function its whole model (both outputs): EI, and everything else
        # that reads ``acquisition_function.model`` (the local search's start points), sees only the
        # cost model; the seconds model is kept beside it
        @property
        def model(self):
            return self._model

        @model.setter
        def model(self, model) -> None:
            models = getattr(model, "models", None)
            if models is not None and len(models) == 2:
                self._model, self._seconds_model = models
            else:
                self._model = model

        def _compute(self, X: np.ndarray) -> np.ndarray:
            ei = super()._compute(X)
            log_t, _ = self._seconds_model.predict_marginalized(X)
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
