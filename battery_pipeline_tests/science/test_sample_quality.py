"""The seed's data rules on sampling gaps and outliers, through `validate_samples`: short gaps are
interpolated and recorded, long gaps and incomplete cycles are quarantined, outliers are flagged
and kept. Nothing vanishes: raw = valid + quarantined in every case."""

import numpy as np

from battery_pipeline.science import sample_quality
from battery_pipeline.science.validation import ValidationRules, validate_samples
from battery_pipeline_tests.fixtures import cycling_frame
from battery_pipeline_tests.science.test_validation import LIMITS, canonical

# cycling_frame: per cycle 4 steps x 20 points (charge, rest, discharge, rest), 80 rows a cycle.


def accounted(result, frame) -> bool:
    return len(result.valid) + len(result.quarantined) == len(frame)


def test_clean_samples_have_no_flags_and_no_missing_cycles():
    result = validate_samples(canonical(cycling_frame()), LIMITS)
    assert result.flags.empty and result.missing_by_cycle.empty and result.dropped_cycles() == []


def test_gap_under_five_points_is_interpolated_and_every_value_is_recorded():
    truth = canonical(cycling_frame())
    frame = truth.copy()
    frame.loc[5:8, "voltage_v"] = np.nan  # 4 points inside the first charge step
    result = validate_samples(frame, LIMITS)
    assert result.quarantined.empty and accounted(result, frame)
    # linear ramp: the interpolation recovers it; the input frame (raw) keeps its holes
    np.testing.assert_allclose(result.valid.loc[5:8, "voltage_v"], truth.loc[5:8, "voltage_v"])
    assert frame.loc[5:8, "voltage_v"].isna().all()
    flags = result.flags
    assert list(flags["flag"]) == ["interpolated"] * 4 and set(flags["channel"]) == {"voltage_v"}
    assert list(flags["source_row"]) == [5, 6, 7, 8]
    assert "fixture.csv:4 and fixture.csv:9 (4-point gap)" in flags["detail"].iloc[0]
    assert result.flag_counts() == {"interpolated": {"voltage_v": 4}}


def test_gap_of_five_points_is_quarantined_not_interpolated():
    frame = canonical(cycling_frame())
    frame.loc[5:9, "current_a"] = np.nan
    result = validate_samples(frame, LIMITS)
    assert set(result.quarantined["source_row"]) == {5, 6, 7, 8, 9}
    assert set(result.quarantined["reason_code"]) == {"missing_value"}
    assert result.flags.empty and accounted(result, frame)


def test_gap_at_a_step_boundary_or_with_a_rejected_end_is_not_interpolated():
    frame = canonical(cycling_frame())
    frame.loc[19:20, "voltage_v"] = np.nan  # last charge sample, first rest sample
    frame.loc[45, "voltage_v"] = np.nan
    frame.loc[44, "temperature_c"] = 150.0  # the left end of the second gap is rejected
    result = validate_samples(frame, LIMITS)
    reasons = dict(zip(result.quarantined["source_row"], result.quarantined["reason_code"]))
    assert reasons == {19: "missing_value", 20: "missing_value", 44: "temperature_out_of_range", 45: "missing_value"}
    assert "44" in result.quarantined.set_index("source_row").loc[45, "reason"]
    assert result.flags.empty and accounted(result, frame)


def test_cycle_with_over_ten_percent_missing_is_quarantined_whole():
    frame = canonical(cycling_frame(n_cycles=3))
    cycle1 = frame.index[frame["cycle_number"] == 1]
    frame.loc[cycle1[[2, 12, 22, 32, 42, 52, 62, 72, 75]], "voltage_v"] = np.nan  # 9 of 80 = 11.25 %
    cycle2 = frame.index[frame["cycle_number"] == 2]
    frame.loc[cycle2[[2, 12, 22, 32, 42, 52, 62, 72]], "voltage_v"] = np.nan  # 8 of 80 = 10 %: kept
    result = validate_samples(frame, LIMITS)
    assert result.dropped_cycles() == [1]
    assert set(result.valid["cycle_number"]) == {0, 2} and accounted(result, frame)
    dropped = result.quarantined[result.quarantined["cycle_number"] == 1]
    assert len(dropped) == 80
    assert dropped["reason_code"].value_counts().to_dict() == {"cycle_incomplete": 71, "missing_value": 9}
    assert "9 of 80 samples" in dropped.loc[dropped["reason_code"] == "cycle_incomplete", "reason"].iloc[0]
    # cycle 2's single-point gaps are interpolated and recorded
    assert result.flag_counts() == {"interpolated": {"voltage_v": 8}}
    table = result.missing_by_cycle.set_index("cycle_number")
    assert table.loc[1, "missing_rows"] == 9 and table.loc[1, "dropped"] and not table.loc[2, "dropped"]


def test_missing_share_limit_and_gap_length_are_configurable():
    frame = canonical(cycling_frame())
    frame.loc[5:8, "voltage_v"] = np.nan
    strict = ValidationRules(max_gap_points=0, max_missing_share=0.01)
    result = validate_samples(frame, LIMITS, strict)
    assert result.dropped_cycles() == [0] and result.flags.empty and accounted(result, frame)


def test_short_temperature_gap_is_interpolated_and_a_sensorless_cell_is_left_alone():
    frame = canonical(cycling_frame())
    frame.loc[3:4, "temperature_c"] = np.nan
    result = validate_samples(frame, LIMITS)
    assert result.quarantined.empty
    assert result.flag_counts() == {"interpolated": {"temperature_c": 2}}
    assert result.valid["temperature_c"].notna().all()
    no_sensor = canonical(cycling_frame()).assign(temperature_c=np.nan)
    result = validate_samples(no_sensor, LIMITS)
    assert result.quarantined.empty and result.flags.empty and result.valid["temperature_c"].isna().all()


def test_three_sigma_outliers_are_flagged_and_kept():
    frame = canonical(cycling_frame())
    frame.loc[50, "voltage_v"] += 0.3  # a 300 mV spike inside the discharge, within the window
    frame.loc[10, "current_a"] = 1.2  # a current glitch during the CC charge
    result = validate_samples(frame, LIMITS)
    assert result.quarantined.empty and len(result.valid) == len(frame)
    outliers = result.flags[result.flags["flag"] == "outlier"].set_index("channel")
    assert set(outliers.index) == {"voltage_v", "current_a"}
    assert outliers.loc["voltage_v", "source_row"] == 50 and outliers.loc["current_a", "source_row"] == 10
    assert outliers.loc["voltage_v", "value"] == frame.loc[50, "voltage_v"]  # the measured value, kept
    assert result.valid.loc[50, "voltage_v"] == frame.loc[50, "voltage_v"]
    assert "sigma" in outliers.loc["voltage_v", "detail"]


def test_noise_flags_about_the_gaussian_tail_only():
    rng = np.random.default_rng(0)
    frame = canonical(cycling_frame(n_cycles=10, points_per_step=50))
    frame["voltage_v"] += rng.normal(0, 0.005, len(frame))
    result = validate_samples(frame, LIMITS)
    share = (result.flags["channel"] == "voltage_v").sum() / len(frame)
    assert share < 0.01  # 3 sigma: a fraction of a percent, not a share of the data


def test_local_medians_ignore_step_edges_and_single_spikes():
    values = np.array([1.0, 1.0, 9.0, 1.0, 1.0, 5.0, 6.0, 7.0, 8.0])
    segment = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    with_sample, without_sample = sample_quality.local_medians(values, segment)
    np.testing.assert_array_equal(with_sample, [1, 1, 1, 1, 1, 5, 6, 7, 8])  # a ramp: residual 0
    np.testing.assert_array_equal(without_sample, [1, 1, 1, 1, 1, 5, 6, 7, 8])
    rng = np.random.default_rng(1)
    columns = rng.normal(size=(5, 1000))
    np.testing.assert_array_equal(sample_quality._median5(*columns), np.median(columns, axis=0))
