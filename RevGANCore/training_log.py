"""A training run's metrics: ``metrics.csv`` (and TensorBoard when installed) on the main
process, and the rows in memory for the run's summary."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Optional

#: Columns of metrics.csv, in order (rows may lack some: losses of the other mode, validation).
FIELDS = ("step", "lr", "seconds", "g_total", "g_gan", "g_l1", "g_cycle", "g_identity", "g_physics", "g_spectrum",
          "d_total", "val_l1", "val_psnr", "val_l1_inverse", "val_l1_input", "val_physics", "val_spectrum",
          "val_unpaired", "g_slab", "val_real_l1", "val_real_psnr", "g_degraded_pairs",
          "val_degraded_pairs", "g_degraded_means", "val_degraded_means", "g_recorrupted_pairs",
          "val_recorrupted_pairs")


class MetricsLog:
    def __init__(self, output_dir: Path, is_main: bool, tensorboard: bool):
        self.csv_path = Path(output_dir) / "metrics.csv"
        self.is_main = is_main
        self.history: List[dict] = []
        self.tensorboard: Optional[object] = None
        if is_main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except ImportError:  # the tensorboard package is optional
                self.tensorboard = None

    def write(self, row: dict) -> None:
        self.history.append(row)
        if not self.is_main:
            return
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=FIELDS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, row["step"])

    def validations(self) -> List[dict]:
        return [row for row in self.history if "val_l1" in row]

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
