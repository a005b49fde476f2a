"""SOH / RUL / cycle-life model zoo: estimators, splits by cell, metrics, training tables.

No dagster here. Estimators follow the scikit-learn contract (`base`), accept arrays or
DataFrames with NaNs (`preprocessing`), and are seeded through `random_state`:

  dummy       DummyBaseline                      constant (mean) predictor, the floor
  linear      LinearBaseline, RidgeBaseline      the seed's baseline_lr
  forest      RandomForestBaseline               the seed's baseline_rf
  boosting    GradientBoostingBaseline
  intervals   ConformalRegressor                 split- or cross-conformal intervals around any model
  lstm        LSTMRegressor                      the seed's baseline_lstm (PyTorch)
  severson    severson_features, SeversonCycleLife   Severson et al. 2019 early-life models
  splits      split_cells, leave_one_cell_out, check_disjoint, assert_disjoint
  metrics     soh_metrics, rul_metrics, interval_metrics
  datasets    soh_dataset, rul_dataset, cycle_life_dataset, TrainingTable, frame_hash
  registry    ESTIMATORS, make_estimator

Modules are imported one by one (nothing is re-exported here) so that using the linear models
does not import torch.
"""
