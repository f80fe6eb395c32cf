#!/usr/bin/env python3
"""Plots a soak run (benches/soak.sh) and prints its summary: RSS, open files, threads and
CPU over time, with the 10-minute RSS value and the reader rounds.
   soak-plot.py soak.csv rounds.csv soak.png"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(samples_csv, rounds_csv, png):
    rows = list(csv.DictReader(open(samples_csv)))
    rounds = list(csv.DictReader(open(rounds_csv)))
    t = [int(r["t_s"]) / 60 for r in rows]
    rss = [int(r["rss_kb"]) / 1024 for r in rows]
    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    ax[0].plot(t, rss)
    ax[0].set_ylabel("RSS (MiB)")
    ref = [m for tm, m in zip(t, rss) if tm >= 10]
    if ref:
        ax[0].axhline(ref[0], color="grey", ls="--", lw=0.8)
        ax[0].axhspan(ref[0] * 0.95, ref[0] * 1.05, color="grey", alpha=0.1)
    ax[1].plot(t, [int(r["fds"]) for r in rows])
    ax[1].set_ylabel("open files")
    ax[2].plot(t, [int(r["threads"]) for r in rows])
    ax[2].set_ylabel("threads")
    ax[3].plot(t, [float(r["cpu_pct"]) for r in rows])
    ax[3].set_ylabel("CPU (% of a core)")
    ax[3].set_xlabel("minutes")
    fig.suptitle("gst-ipcam gateway soak")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    print(f"soak: {len(rows)} samples over {t[-1]:.1f} min -> {png}")
    if ref:
        worst = max(abs(m - ref[0]) / ref[0] * 100 for m in ref)
        print(f"RSS at 10 min {ref[0]:.1f} MiB, at the end {rss[-1]:.1f} MiB, "
              f"largest departure after 10 min {worst:.1f} %")
    for k in ("fds", "threads"):
        v = [int(r[k]) for r in rows]
        print(f"{k}: min {min(v)}, max {max(v)}, last {v[-1]}")
    cpu = [float(r["cpu_pct"]) for r in rows[1:]]
    if cpu:
        print(f"CPU: mean {sum(cpu) / len(cpu):.1f} % of a core")
    print(f"RTP packets lost camera->gateway: {rows[-1]['rtp_lost']}")
    full = sum(1 for r in rounds if r["readers"] == r["readers_with_frames"])
    print(f"reader rounds: {len(rounds)}, every reader got frames in {full}; "
          f"frames per reader min {min((int(r['min_frames']) for r in rounds), default=0)}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
