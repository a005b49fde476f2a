"""Saving and loading fitted estimators of the zoo: joblib for scikit-learn-style models, a torch
state_dict for the LSTM.

`save_estimator(estimator, directory)` writes into `directory`:
  * `lstm/` (`LSTMRegressor.save`: `lstm_state.pt` + `lstm.json`) when the estimator is an LSTM
    or a `ConformalRegressor` around one; the wrapper itself (calibration scores, parameters)
    goes to `estimator.joblib` with its LSTM detached, so the network is never pickled;
  * `estimator.joblib` for everything else.
It returns the names of the files written. `load_estimator(directory)` reverses it.

Why not pickle the LSTM as well: a state_dict loads with `torch.load(weights_only=True)`, which
runs no code from the file and survives torch upgrades that change module internals. joblib
files, like any pickle, must only be loaded from a trusted model store (ours).
"""

from __future__ import annotations

import copy
from pathlib import Path

import joblib

from battery_pipeline.science.ml.intervals import ConformalRegressor
from battery_pipeline.science.ml.lstm import LSTMRegressor

JOBLIB_FILE = "estimator.joblib"
LSTM_DIR = "lstm"


def _inner_lstm(estimator) -> LSTMRegressor | None:
    if isinstance(estimator, LSTMRegressor):
        return estimator
    if isinstance(estimator, ConformalRegressor) and isinstance(getattr(estimator, "estimator_", None), LSTMRegressor):
        return estimator.estimator_
    return None


def save_estimator(estimator, directory) -> list[str]:
    """Write a fitted estimator into `directory` (created); returns the relative paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lstm = _inner_lstm(estimator)
    if lstm is None:
        joblib.dump(estimator, directory / JOBLIB_FILE)
        return [JOBLIB_FILE]
    lstm.save(directory / LSTM_DIR)
    written = [f"{LSTM_DIR}/{p.name}" for p in sorted((directory / LSTM_DIR).iterdir())]
    if lstm is not estimator:
        wrapper = copy.copy(estimator)  # shallow: the original keeps its fitted LSTM
        wrapper.estimator_ = None
        joblib.dump(wrapper, directory / JOBLIB_FILE)
        written.append(JOBLIB_FILE)
    return written


def load_estimator(directory):
    """The fitted estimator `save_estimator` wrote into `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no saved estimator at {directory}")
    lstm = LSTMRegressor.load(directory / LSTM_DIR) if (directory / LSTM_DIR).is_dir() else None
    if not (directory / JOBLIB_FILE).exists():
        if lstm is None:
            raise FileNotFoundError(f"{directory} holds neither {JOBLIB_FILE} nor {LSTM_DIR}/")
        return lstm
    estimator = joblib.load(directory / JOBLIB_FILE)
    if lstm is not None:
        estimator.estimator_ = lstm
    return estimator
