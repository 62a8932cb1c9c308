"""Time to the first line: how long `preimage ...` takes to say something.

Three cases, each a fresh process: ``--help`` (the first line of stdout), a missing image
(``preimage invert nope.png``: the error line on stderr) and a real run (``preimage invert
sample:chelsea --steps 1 --input-size 64``: its first line on stderr, "inverting ...", printed once
the model is loaded, and the time to exit). Each case runs ``--repeat`` times; the median and the
minimum are reported (the machine is shared, so the minimum is the least disturbed).

    python benchmarks/startup.py --repeat 5            # -> benchmarks/results/startup.{json,md}
    python benchmarks/startup.py --preimage /path/to/other/checkout   # another version, same cases
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "--help": (["--help"], "stdout"),
    "missing image": (["invert", "nope.png"], "stderr"),
    "real run (first line)": (["invert", "sample:chelsea", "--steps", "1", "--input-size", "64", "--force"], "stderr"),
}


def first_line_seconds(argv: list[str], stream: str, root: Path, out: str) -> tuple[float, float, str]:
    """(seconds to the first line on ``stream``, seconds to exit, that line)."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "preimage", *argv]
    if argv[0] == "invert" and "--force" in argv:
        args += ["--out", out]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    assert pipe is not None
    line = pipe.readline()
    first = time.perf_counter() - t0
    proc.communicate()
    return first, time.perf_counter() - t0, line.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--preimage", type=Path, default=ROOT, help="checkout to time (default: this one)")
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (argv, stream) in CASES.items():
            firsts, totals, line = [], [], ""
            for _ in range(a.repeat):
                f, t, line = first_line_seconds(argv, stream, a.preimage, tmp)
                firsts.append(f)
                totals.append(t)
            rows.append({"case": name, "command": "preimage " + " ".join(argv), "first_line_median_s": statistics.median(firsts),
                         "first_line_min_s": min(firsts), "exit_median_s": statistics.median(totals),
                         "first_line": line[:100], "runs": a.repeat})
            print(f"{name:24s} first line {statistics.median(firsts):6.2f} s (min {min(firsts):.2f}), "
                  f"exit {statistics.median(totals):6.2f} s: {line[:70]}")
    result = {"label": a.label, "python": sys.version.split()[0], "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    suffix = "" if a.preimage == ROOT else "_" + a.label.replace(" ", "_")
    Path(f"{a.out}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Start-up: time to the first line ({a.label})", "",
          f"`python benchmarks/startup.py --repeat {a.repeat}`; shared 2-core machine; median (min) of {a.repeat} runs", "",
          "| case | first line | exit | line |", "|---|---|---|---|"]
    md += [f"| {r['case']} | {r['first_line_median_s']:.2f} s ({r['first_line_min_s']:.2f}) | {r['exit_median_s']:.2f} s "
           f"| `{r['first_line'][:60]}` |" for r in rows]
    Path(f"{a.out}{suffix}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
