"""The settings of a ``preimage serve`` instance: where it writes, how much it runs, what it accepts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServeConfig:
    """Every limit of the web app. The CLI fills ``out``, ``jobs`` and ``device``; tests shrink the rest."""

    out: Path = Path("out/serve")       # the only folder the server writes to (uploads/, jobs/)
    jobs: int = 1                       # optimizations that run at once (one worker thread each)
    max_queued: int = 32                # jobs waiting beyond those; more are refused ("server busy")
    max_upload_bytes: int = 20_000_000  # an upload larger than this is refused (413) before it is stored
    max_upload_pixels: int = 40_000_000  # width x height above this is refused (decompression bombs)
    max_uploads: int = 500              # uploads kept at once; more are refused until the server restarts
    max_steps: int = 5000               # the largest step count a job may ask for
    max_input_size: int = 512           # the largest network input / image side a job may ask for
    max_frames: int = 60                # live frames kept per job (the oldest are dropped)
    frames_kept_jobs: int = 8           # finished jobs that keep their live frames (older ones keep none)
    device: str = "cpu"                 # where the models run: cpu, cuda, cuda:N
    models_per_worker: int = 2          # loaded models each worker keeps (least recently used dropped)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.jobs < 1:
            raise ValueError("jobs must be >= 1")
