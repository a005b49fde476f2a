"""LSTM regressor in PyTorch (the seed's `baseline_lstm`), behind the scikit-learn contract.

Input shapes:
  * 3-D `(n, steps, features)`: each sample is its own sequence (any number of steps; the
    `seq_len` parameter is not used); `groups` only steer the validation split.
  * 2-D `(n, features)` (array or DataFrame): the rows are a time series. Each row becomes the
    window of the `seq_len` rows ending at it *within its group* (`groups`, e.g. cell ids; rows
    of one group must be in time order, groups may be interleaved; without groups all rows are
    one series). The first rows of a group, which have fewer than seq_len predecessors, are
    left-padded by repeating the group's first row, so every row gets a prediction and output
    row i belongs to input row i. A window never mixes groups. `seq_len=1` treats rows as
    independent samples. Pass the same kind of `groups` to `predict`.
  Prediction input must have the same number of dimensions and features as the training input.

NaN: median imputation + standardisation per feature (`preprocessing.MedianImputeScaler`, fitted
on the training rows, over all time steps for 3-D input) before windowing. y is standardised for
training (the loss is the MSE of standardised y) and predictions are returned in y's units.

Network (defaults from the seed notebook): `num_layers` stacked LSTM layers of `hidden_size`
units, a linear head on the last time step's output; Adam (`learning_rate`, `weight_decay`), MSE
loss, mini-batches of `batch_size` windows shuffled each epoch.

Early stopping: `validation_fraction` of the groups (whole cells; of the rows when there are no
groups or only one) is held out; after each epoch the validation MSE is computed, the weights of
the best epoch are kept, and training stops after `patience` epochs without a strict improvement
or at `max_epochs`. `validation_fraction=0` trains exactly `max_epochs` epochs. `history_` has
the per-epoch losses (standardised units).

Determinism: weights, dropout and shuffling are seeded from `random_state` inside
`torch.random.fork_rng` (the caller's global RNG state is left as it was); fit and predict run
with `torch.use_deterministic_algorithms(True)` and `num_threads` intra-op threads (both restored
afterwards), so the same data, parameters and seed give bit-identical predictions on the same
machine and torch build. CPU only. The network computes in float32: the prediction for one
row can differ in its last bits (~1e-7 relative) with the other rows in its batch; the same input
always gives the same output.

Saving: `save(directory)` writes `lstm_state.pt` (weights and preprocessing statistics, loaded
back with `torch.load(weights_only=True)`, i.e. no pickled code) and `lstm.json` (parameters,
fitted metadata, training history); `LSTMRegressor.load(directory)` restores a model that predicts
identically. Plain pickle / joblib also work.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from torch import nn

from battery_pipeline.science.ml.intervals import calibration_split
from battery_pipeline.science.ml.preprocessing import MedianImputeScaler

STATE_FILE = "lstm_state.pt"
METADATA_FILE = "lstm.json"
FORMAT_VERSION = 1
_PREDICT_BATCH = 4096


class LSTMNetwork(nn.Module):
    """Stacked LSTM + linear head on the last step: (batch, steps, features) -> (batch,)."""

    def __init__(self, n_features: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(
            input_size=n_features,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,  # torch warns on dropout with one layer
        )
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(x)
        return self.head(output[:, -1, :]).squeeze(-1)


def sliding_windows(X: np.ndarray, seq_len: int, groups=None) -> np.ndarray:
    """(n, features) -> (n, seq_len, features): the window ending at each row within its group.

    Rows of a group are taken in their given order; missing history is filled with the group's
    first row (module docstring).
    """
    X = np.asarray(X)
    n = len(X)
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len!r}")
    if groups is None:
        codes = np.zeros(n, dtype=np.int64)
    else:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} rows")
        codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    order = np.argsort(codes, kind="stable")  # group by group, time order kept inside a group
    sorted_codes = codes[order]
    group_start = np.searchsorted(sorted_codes, sorted_codes, side="left")
    position = np.arange(n) - group_start
    lags = np.arange(seq_len - 1, -1, -1)  # oldest first
    rows_sorted = group_start[:, None] + np.maximum(position[:, None] - lags[None, :], 0)
    windows_sorted = X[order[rows_sorted]]
    windows = np.empty_like(windows_sorted)
    windows[order] = windows_sorted
    return windows


@contextmanager
def _torch_determinism(num_threads: int | None):
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if num_threads:
            torch.set_num_threads(int(num_threads))
        torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)


class LSTMRegressor(RegressorMixin, BaseEstimator):
    """LSTM regression on sequences (module docstring: shapes, NaN, early stopping, determinism).

    Parameters
    ----------
    seq_len : int, default 10
        Window length for 2-D input (rows, i.e. cycles).
    hidden_size : int, default 32
    num_layers : int, default 2
    dropout : float, default 0.0
        Between LSTM layers (only with num_layers > 1).
    learning_rate : float, default 1e-3
        Adam step size.
    weight_decay : float, default 0.0
        Adam L2 penalty.
    batch_size : int, default 64
    max_epochs : int, default 100
    patience : int, default 10
        Epochs without validation improvement before stopping.
    validation_fraction : float, default 0.15
        Share of groups (else rows) held out for early stopping; 0 disables it.
    random_state : int, default 0
    num_threads : int or None, default 1
        torch intra-op threads during fit/predict (None: leave torch's setting).

    Fitted: `module_` (LSTMNetwork), `preprocessor_`, `y_mean_`, `y_scale_`, `history_`
    (list of {"epoch", "train_loss", "val_loss"}), `best_epoch_` (1-based), `n_epochs_`,
    `stopped_early_`, `input_ndim_`, `n_features_in_`, `feature_names_in_` (DataFrame input),
    `validation_groups_` (held-out group names, or None).
    """

    def __init__(
        self,
        seq_len: int = 10,
        hidden_size: int = 32,
        num_layers: int = 2,
        dropout: float = 0.0,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 64,
        max_epochs: int = 100,
        patience: int = 10,
        validation_fraction: float = 0.15,
        random_state: int = 0,
        num_threads: int | None = 1,
    ):
        self.seq_len = seq_len
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.num_threads = num_threads

    # --- input handling ------------------------------------------------------------------------
    def _rows_and_shape(self, X, reset: bool) -> tuple[np.ndarray, tuple | None]:
        """Validated float rows (2-D) and, for 3-D input, the (n, steps) to fold back to."""
        if getattr(X, "ndim", 2) == 3:
            X = np.asarray(X, dtype=np.float64)
            if np.isinf(X).any():
                raise ValueError("X contains infinity")
            if reset:
                self.n_features_in_ = X.shape[2]
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            elif X.shape[2] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[2]} features, the model was fitted with {self.n_features_in_}")
            return X.reshape(-1, X.shape[2]), X.shape[:2]
        rows = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64, reset=reset)
        return rows, None

    def _sequences(self, X, groups, reset: bool) -> np.ndarray:
        ndim = getattr(X, "ndim", 2)
        if ndim > 3:
            raise ValueError(f"X must be 2-D (n, features) or 3-D (n, steps, features), got {ndim}-D")
        # other shapes (1-D, ...) get scikit-learn's own message from validate_data below
        if not reset and ndim in (2, 3) and ndim != self.input_ndim_:
            raise ValueError(f"the model was fitted on {self.input_ndim_}-D input, got {ndim}-D")
        rows, shape = self._rows_and_shape(X, reset)
        if reset:
            self.input_ndim_ = ndim
            self.preprocessor_ = MedianImputeScaler().fit(rows)
        scaled = self.preprocessor_.transform(rows)
        if shape is not None:
            return scaled.reshape(*shape, -1)
        return sliding_windows(scaled, int(self.seq_len), groups)

    # --- training ------------------------------------------------------------------------------
    def _check_params(self) -> None:
        for name in ("hidden_size", "num_layers", "batch_size", "max_epochs", "patience", "seq_len"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")

    def fit(self, X, y, groups=None):
        self._check_params()
        windows = self._sequences(X, groups, reset=True)
        y = column_or_1d(np.asarray(y, dtype=np.float64), warn=True)
        if len(y) != len(windows):
            raise ValueError(f"X has {len(windows)} samples, y has {len(y)}")
        if not np.isfinite(y).all():
            raise ValueError("y must be finite (drop unlabelled rows first)")
        self.y_mean_ = float(y.mean())
        std = float(y.std())
        self.y_scale_ = std if std > 0 else 1.0
        target = (y - self.y_mean_) / self.y_scale_

        use_groups = groups is not None and len(np.unique(np.asarray(groups).astype(str))) >= 2
        if self.validation_fraction > 0 and len(y) >= 2:
            train, val = calibration_split(
                len(y), self.validation_fraction, groups if use_groups else None, self.random_state
            )
        else:
            train, val = np.arange(len(y)), np.zeros(0, dtype=np.int64)
        self.validation_groups_ = (
            sorted({str(g) for g in np.asarray(groups)[val]}) if use_groups and len(val) else None
        )

        with _torch_determinism(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            self._train(
                torch.as_tensor(windows[train], dtype=torch.float32),
                torch.as_tensor(target[train], dtype=torch.float32),
                torch.as_tensor(windows[val], dtype=torch.float32),
                torch.as_tensor(target[val], dtype=torch.float32),
            )
        return self

    def _train(self, x_train, y_train, x_val, y_val) -> None:
        module = LSTMNetwork(self.n_features_in_, int(self.hidden_size), int(self.num_layers), float(self.dropout))
        optimizer = torch.optim.Adam(module.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        loss_fn = nn.MSELoss()
        shuffle = torch.Generator().manual_seed(int(self.random_state))
        n_train, batch = len(y_train), int(self.batch_size)
        history, best_loss, best_state, best_epoch, waited = [], np.inf, None, 0, 0
        stopped_early = False
        for epoch in range(1, int(self.max_epochs) + 1):
            module.train()
            total = 0.0
            permutation = torch.randperm(n_train, generator=shuffle)
            for start in range(0, n_train, batch):
                index = permutation[start : start + batch]
                optimizer.zero_grad()
                loss = loss_fn(module(x_train[index]), y_train[index])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
            record = {"epoch": epoch, "train_loss": total / n_train, "val_loss": None}
            if len(y_val):
                module.eval()
                with torch.no_grad():
                    val_loss = loss_fn(module(x_val), y_val).item()
                record["val_loss"] = val_loss
                if val_loss < best_loss:
                    best_loss, best_epoch, waited = val_loss, epoch, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    waited += 1
            history.append(record)
            if len(y_val) and waited >= self.patience:
                stopped_early = True
                break
        if best_state is not None:
            module.load_state_dict(best_state)
        else:
            best_epoch = len(history)
        module.eval()
        self.module_ = module
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.n_epochs_ = len(history)
        self.stopped_early_ = stopped_early

    # --- prediction ----------------------------------------------------------------------------
    def predict(self, X, groups=None) -> np.ndarray:
        """Predictions in y's units, one per input row (2-D) or sequence (3-D)."""
        check_is_fitted(self, "module_")
        windows = torch.as_tensor(self._sequences(X, groups, reset=False), dtype=torch.float32)
        out = []
        with _torch_determinism(self.num_threads), torch.no_grad():
            self.module_.eval()
            for start in range(0, len(windows), _PREDICT_BATCH):
                out.append(self.module_(windows[start : start + _PREDICT_BATCH]).numpy())
        scaled = np.concatenate(out).astype(np.float64) if out else np.zeros(0)
        return scaled * self.y_scale_ + self.y_mean_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.three_d_array = True
        return tags

    # --- persistence ---------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write `lstm_state.pt` + `lstm.json` into `directory` (created); returns it."""
        check_is_fitted(self, "module_")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {f"module.{k}": v for k, v in self.module_.state_dict().items()}
        for name in ("median_", "mean_", "scale_"):
            state[f"preprocessor.{name}"] = torch.as_tensor(getattr(self.preprocessor_, name), dtype=torch.float64)
        torch.save(state, directory / STATE_FILE)
        metadata = {
            "format_version": FORMAT_VERSION,
            "class": type(self).__name__,
            "torch_version": torch.__version__,
            "params": self.get_params(),
            "fitted": {
                "n_features_in": int(self.n_features_in_),
                "feature_names_in": (
                    [str(c) for c in self.feature_names_in_] if hasattr(self, "feature_names_in_") else None
                ),
                "input_ndim": int(self.input_ndim_),
                "y_mean": self.y_mean_,  # json writes repr(float): exact round trip
                "y_scale": self.y_scale_,
                "best_epoch": int(self.best_epoch_),
                "n_epochs": int(self.n_epochs_),
                "stopped_early": bool(self.stopped_early_),
                "validation_groups": self.validation_groups_,
                "history": self.history_,
            },
        }
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        return directory

    @classmethod
    def load(cls, directory) -> "LSTMRegressor":
        """A fitted model from a `save` directory (weights loaded with weights_only=True)."""
        directory = Path(directory)
        metadata = json.loads((directory / METADATA_FILE).read_text())
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported LSTM artifact format {metadata.get('format_version')!r}")
        state = torch.load(directory / STATE_FILE, weights_only=True)
        model = cls(**metadata["params"])
        fitted = metadata["fitted"]
        model.n_features_in_ = fitted["n_features_in"]
        if fitted["feature_names_in"] is not None:
            model.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)
        model.input_ndim_ = fitted["input_ndim"]
        model.y_mean_, model.y_scale_ = fitted["y_mean"], fitted["y_scale"]
        model.best_epoch_, model.n_epochs_ = fitted["best_epoch"], fitted["n_epochs"]
        model.stopped_early_ = fitted["stopped_early"]
        model.validation_groups_ = fitted["validation_groups"]
        model.history_ = fitted["history"]
        preprocessor = MedianImputeScaler()
        for name in ("median_", "mean_", "scale_"):
            setattr(preprocessor, name, state[f"preprocessor.{name}"].numpy())
        preprocessor.n_features_in_ = model.n_features_in_
        model.preprocessor_ = preprocessor
        module = LSTMNetwork(model.n_features_in_, int(model.hidden_size), int(model.num_layers), float(model.dropout))
        module.load_state_dict({k[len("module."):]: v for k, v in state.items() if k.startswith("module.")})
        module.eval()
        model.module_ = module
        return model
