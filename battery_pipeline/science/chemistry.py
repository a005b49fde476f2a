"""Per-chemistry facts shared by validation and the twin models.

Voltage windows are the manufacturer-style operating limits of common lithium-ion chemistries
(datasheet values of typical cells: A123 APR18650M1A for LFP, LG HG2 / Samsung 30Q for NMC,
Panasonic NCR18650PF for NCA, generic graphite/LCO for LCO). Validation widens them by a margin,
because terminal voltage legitimately overshoots under load and at CV start.
"""

from __future__ import annotations

VOLTAGE_WINDOWS_V: dict[str, tuple[float, float]] = {
    "LFP": (2.0, 3.65),
    "NMC": (2.5, 4.2),
    "NCA": (2.5, 4.2),
    "LCO": (2.7, 4.2),
    "LMO": (2.5, 4.2),
    "LTO": (1.5, 2.8),
}

# No chemistry known: the envelope of lithium electrochemistry itself, so only readings no
# lithium cell can give are caught (a reversed lead, a channel beyond any electrolyte's stability).
# Not a full-cell window such as 1.5-4.45 V: files nobody described include half cells against
# lithium (a graphite or silicon anode cycles at 0.005-1.5 V, BioLogic's gcpl zoo file at 0.004-2.36 V)
# and 5 V-class cathodes (LNMO to 4.9 V, the DLR BDF file), which that window would have
# quarantined as 63-90 % "voltage out of window".
GENERIC_LI_ION_WINDOW_V = (0.0, 5.0)


def voltage_window(chemistry: str | None) -> tuple[float, float]:
    if chemistry and chemistry.upper() in VOLTAGE_WINDOWS_V:
        return VOLTAGE_WINDOWS_V[chemistry.upper()]
    return GENERIC_LI_ION_WINDOW_V
