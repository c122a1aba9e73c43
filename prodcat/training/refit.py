"""``--refit_on_all_rows``: what the first, held-out run hands to the second, all-rows run.

The first run holds out the validation split, as every prodcat run does, and fits on it what needs
unseen rows: the softmax temperature, the prior correction and the n-gram ensemble's weights. Its
validation scores are the run's estimate of quality. The second run trains again from the base model
on every row, with the same settings and number of epochs, and carries those over unchanged
(docs/experiments.md has what the extra rows are worth).

Example:
    >>> holdout = HoldoutRun.load("outputs/model/holdout")
    >>> holdout.epochs, holdout.prior_tau  # bigbasket-27k with the defaults
    (10.0, 0.0)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from prodcat.core.artifacts import TrainingSummary, has_summary, read_summary
from prodcat.core.errors import ProdcatError

#: Subfolder of ``--output_dir`` that holds the first (held-out) run.
HOLDOUT_SUBDIR = "holdout"


def holdout_dir(output_dir: str) -> str:
    """Where the first run of ``--refit_on_all_rows`` writes its model and figures."""
    return os.path.join(output_dir, HOLDOUT_SUBDIR)


def holdout_finished(directory: str) -> bool:
    """True when a first run completed there (its summary is the last file a run writes)."""
    return has_summary(directory)


@dataclass
class HoldoutRun:
    """The finished first run: its summary (settings, validation figures) and its folder."""

    directory: str
    summary: TrainingSummary

    @classmethod
    def load(cls, directory: str) -> HoldoutRun:
        try:
            summary = read_summary(directory, strict=True)
        except ProdcatError as err:
            raise ProdcatError(f"{err}; train again without --resume_from_checkpoint") from None
        return cls(directory, summary)

    def _results(self, name: str) -> dict:
        """One entry of the first run's ``results`` (``train``, ``eval``, ``ngram_ensemble``), or {}."""
        return self.summary.result(name)

    @property
    def epochs(self) -> float:
        """The number of epochs the first run trained for (chosen from the data when it was 0)."""
        epochs = self.summary.num_train_epochs
        if epochs is None:
            raise ProdcatError(
                f"{self.directory}: the first run's summary has no num_train_epochs; train again without --resume_from_checkpoint"
            )
        return epochs

    @property
    def prior_tau(self) -> float:
        """The prior-correction strength tuned on the held-out rows (0 when off or not helpful)."""
        return float(self._results("train").get("prior_correction_tau") or 0.0)

    @property
    def calibration(self) -> dict | None:
        """The temperature fit on the held-out rows and its before/after figures, if calibration ran."""
        calibration = self.summary.calibration
        return calibration if calibration and "temperature" in calibration else None

    @property
    def temperature(self) -> float:
        return float(self.calibration["temperature"]) if self.calibration else 1.0

    @property
    def validation_results(self) -> dict | None:
        """The first run's scores on its held-out rows (``eval_*`` metrics)."""
        return self._results("eval") or None

    @property
    def ngram_validation(self) -> dict:
        """The n-gram ensemble's validation figures from the first run (empty without the ensemble)."""
        return {key: value for key, value in self._results("ngram_ensemble").items() if key.startswith("validation_")}

    def summary_fields(self) -> dict[str, Any]:
        """Fields of the first run's summary that describe the validation split, for the second run's summary."""
        keys = ("validation_split", "num_validation", "widget_examples", "train_only_classes")
        fields: dict[str, Any] = {key: getattr(self.summary, key) for key in keys}
        fields["refit_on_all_rows"] = {
            "holdout_dir": HOLDOUT_SUBDIR,
            "holdout_num_train": self.summary.num_train,
            "holdout_train_wall_seconds": self._results("train").get("train_wall_seconds"),
        }
        return fields

    def carry_over(self, summary: TrainingSummary) -> TrainingSummary:
        """The second run's ``summary`` with the first run's validation split and the ``refit_on_all_rows`` record.

        Example:
            >>> holdout.carry_over(summary).refit_on_all_rows["holdout_dir"]
            'holdout'
        """
        return dataclasses.replace(summary, **self.summary_fields())
