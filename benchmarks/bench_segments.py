"""Decoding one clip of a segment deep in a long video: seeking to it vs decoding from frame 0.

    .venv/bin/python benchmarks/bench_segments.py [--frames 3000] [--rounds 5] [--write-results]

Writes one h264 video like an Epic-Kitchens recording resized to 456x256 (50 fps, a keyframe every 50 frames)
and times `VideoReader.frames` for a 32-frame clip at stride 2 (63 frames) starting at 10%, 50% and 90% of it,
with `seek=True` (what `epic:` and other segment sources use) and without, rounds interleaved; checks that both
give the same pixels. `--write-results` replaces the block between the markers in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_md import replace_block  # the sibling module: scripts run with benchmarks/ on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BEGIN, END = "<!-- bench_segments:begin -->", "<!-- bench_segments:end -->"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--write-results", action="store_true")
    a = p.parse_args()
    from vivit_cli.data.video import VideoReader, probe, write_video

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (8, 256, 456, 3), np.uint8)  # texture that moves: h264 has real work to do
    video = np.stack([np.roll(base[k % 8], 3 * k, axis=1) for k in range(a.frames)])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "long.mp4")
        write_video(path, video, "libx264", fps=50, gop=50)
        del video
        meta = probe(path)
        rows = []
        for where in (0.1, 0.5, 0.9):
            start = int(where * (a.frames - 63))
            wanted = np.arange(start, start + 63, 2)
            times = {True: [], False: []}
            same = True
            for _ in range(a.rounds):
                got = {}
                for seek in (True, False):
                    t0 = time.perf_counter()
                    got[seek] = VideoReader(path, meta, None, seek=seek).frames(wanted)
                    times[seek].append(time.perf_counter() - t0)
                same &= bool(np.array_equal(got[True], got[False]))
            rows.append({"start": start, "seek_ms": 1000 * statistics.median(times[True]),
                         "scan_ms": 1000 * statistics.median(times[False]), "identical": same})
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
           "machine": platform.processor() or platform.machine(), "frames": a.frames, "rounds": a.rounds,
           "load": os.getloadavg()[0], "rows": rows}
    text = block(res)
    print(text)
    if a.write_results:
        replace_block(BEGIN, END, text)
    return 0


def block(res: dict) -> str:
    rows = "\n".join(f"| {r['start']} | {r['scan_ms']:.0f} | {r['seek_ms']:.0f} | {r['scan_ms'] / r['seek_ms']:.1f}x "
                     f"| {'yes' if r['identical'] else '**no**'} |" for r in res["rows"])
    return (f"{BEGIN}\n## Segments of a long video: seek vs decode from the start (`benchmarks/bench_segments.py`)\n\n"
            f"- Date: {res['date']}; machine: {res['cores']} cores ({res['machine']}), shared with other jobs "
            f"(load {res['load']:.1f})\n"
            f"- `.venv/bin/python benchmarks/bench_segments.py --frames {res['frames']} --rounds {res['rounds']} "
            "--write-results`\n"
            f"- One h264 video, 456x256, 50 fps, keyframe every 50 frames, {res['frames']} frames; one clip of 32 "
            f"frames at stride 2; medians of {res['rounds']} interleaved rounds\n\n"
            "| clip starts at frame | from frame 0 (ms) | seek (ms) | speed-up | same pixels |\n|---|---|---|---|---|\n"
            f"{rows}\n{END}")


if __name__ == "__main__":
    sys.exit(main())
