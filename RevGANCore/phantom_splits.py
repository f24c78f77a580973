"""Which phantoms train, validate and test: the seeds and case lists that the Table-2
configurations (configs/table2), the demo and the quality benchmark share.

- training set: phantoms generated with ``TRAIN_SEED``; ``VALIDATION_CASES`` of it are held
  out and decide everything chosen during training (checkpoints, which seed to ship);
- test set: ``TEST_CASES`` phantoms generated with ``TEST_SEED``, never seen in training;
  they are only measured, they decide nothing;
- ``FIT_CASES``: training cases that fit the classical baselines (never the validation case);
  the unpaired spectral-ratio filter takes their sharp volumes and the smooth volumes of
  ``UNPAIRED_FIT_CASES``, so no case contributes both kernels.
"""

from __future__ import annotations

TRAIN_SEED = 0
VALIDATION_CASES = ("case000",)
FIT_CASES = ("case001", "case002", "case003", "case004")
TEST_SEED = 2026
TEST_CASES = 5
UNPAIRED_FIT_CASES = ("case005", "case006", "case007", "case008")
