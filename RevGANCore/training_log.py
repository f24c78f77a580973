"""A training run's metrics: ``metrics.csv`` (and TensorBoard when installed) on the main
process, and the rows in memory for the run's summary."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional

from .output import write_text_atomic

#: Columns of metrics.csv, in order (rows may lack some: losses of the other mode, validation).
FIELDS = ("step", "lr", "seconds", "g_total", "g_gan", "g_l1", "g_cycle", "g_identity", "g_physics", "g_spectrum",
          "d_total", "val_l1", "val_psnr", "val_l1_inverse", "val_l1_input", "val_physics", "val_spectrum",
          "val_unpaired", "g_slab", "val_real_l1", "val_real_psnr", "g_degraded_pairs",
          "val_degraded_pairs", "g_degraded_means", "val_degraded_means", "g_recorrupted_pairs",
          "val_recorrupted_pairs")


def _step_of(row: Dict[str, str]) -> Optional[int]:
    try:
        return int(float(row.get("step") or ""))
    except ValueError:
        return None


class MetricsLog:
    """``resume_step``: the checkpoint step a resumed run continues from, or None for a fresh
    run. An existing metrics.csv is made one table with this run before the first row: rows
    past ``resume_step`` (logged after the checkpoint, then lost with the process) are dropped,
    since the resumed run logs those steps again; a fresh run starts the file anew; a last line
    torn by a kill is dropped; and columns added since the file was begun are appended to its
    header, its own columns kept. Only a file that needs it is rewritten (atomically)."""

    def __init__(self, output_dir: Path, is_main: bool, tensorboard: bool, resume_step: Optional[int] = None):
        self.csv_path = Path(output_dir) / "metrics.csv"
        self.is_main = is_main
        self.fieldnames: List[str] = list(FIELDS)
        self.history: List[dict] = []
        if is_main and self.csv_path.exists():
            self._continue_file(resume_step)
        self.tensorboard: Optional[object] = None
        if is_main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except ImportError:  # the tensorboard package is optional
                self.tensorboard = None

    def _continue_file(self, resume_step: Optional[int]) -> None:
        if resume_step is None:  # a fresh run keeps nothing of an earlier run without a checkpoint
            self._rewrite([])
            return
        lines = self.csv_path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        torn = bool(lines) and not lines[-1].endswith("\n")
        if torn:
            lines = lines[:-1]
        reader = csv.DictReader(lines)
        header, rows = list(reader.fieldnames or []), list(reader)
        kept = [row for row in rows if (_step_of(row) or 0) <= resume_step]
        self.fieldnames = header + [name for name in FIELDS if name not in header]
        if torn or len(kept) != len(rows) or self.fieldnames != header:
            self._rewrite(kept)

    def _rewrite(self, rows: List[Dict[str, str]]) -> None:
        """metrics.csv as the header of :attr:`fieldnames` and ``rows``, replaced atomically."""
        stream = io.StringIO()
        writer = csv.DictWriter(stream, fieldnames=self.fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({key: value for key, value in row.items() if key is not None} for row in rows)
        write_text_atomic(self.csv_path, stream.getvalue())

    def write(self, row: dict) -> None:
        self.history.append(row)
        if not self.is_main:
            return
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.fieldnames, extrasaction="ignore")
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
