"""The VM state timeline: one row per VM, coloured by the state users saw, faults marked.

It is the picture of the ZStack guide's VM list moving through Unknown / Recovering /
Running, drawn from a run's transitions, so a recovery time can be read off by eye.
"""

from __future__ import annotations

from sim.result import RunResult

STATE_COLOURS = {
    "Running": "#2e9e44",
    "Starting": "#9bd8a4",
    "Stopping": "#f0a030",
    "Stopped": "#9a9a9a",
    "Unknown": "#8e5cc2",
    "Recovering": "#d8413a",
    "Migrating": "#3a7bd5",
}


def plot_timeline(result: RunResult, path: str) -> None:
    """Write the timeline of ``result`` as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    vms = sorted({t.vm for t in result.transitions} | {r["name"] for r in result.vm_table})
    minutes = result.duration_s > 300
    scale = 60.0 if minutes else 1.0
    fig, ax = plt.subplots(figsize=(12, 1.8 + 0.55 * max(len(vms), 1)))
    for row, vm in enumerate(vms):
        changes = [t for t in result.transitions if t.vm == vm]
        for i, tr in enumerate(changes):
            end = changes[i + 1].t if i + 1 < len(changes) else result.duration_s
            width = (end - tr.t) / scale
            if width <= 0:
                continue
            ax.broken_barh([(tr.t / scale, width)], (row - 0.35, 0.7),
                           facecolors=STATE_COLOURS.get(tr.state, "#444444"))
            label = tr.host or ""
            if label and width > result.duration_s / scale * 0.08:
                ax.text(tr.t / scale + width / 2, row, label, ha="center", va="center", fontsize=8,
                        color="white")
    for run in result.runs:  # the ground truth: where the guest really executed
        if run.vm in vms:
            row = vms.index(run.vm)
            end = result.duration_s if run.end is None else run.end
            ax.plot([run.start / scale, end / scale], [row - 0.42, row - 0.42], color="black",
                    linewidth=2, solid_capstyle="butt")
    for fault in result.faults:
        x = fault.t / scale
        ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
        ax.annotate(f"{fault.action} {fault.target or ''}".strip(), (x, 1.0),
                    xycoords=("data", "axes fraction"), xytext=(2, 4), textcoords="offset points",
                    rotation=30, fontsize=7, va="bottom")
    ax.set_yticks(range(len(vms)), vms)
    ax.set_ylim(-0.6, max(len(vms), 1) - 0.4)
    ax.set_xlim(0, result.duration_s / scale)
    ax.set_xlabel("simulated time (min)" if minutes else "simulated time (s)")
    fig.suptitle(result.scenario, x=0.01, ha="left", fontsize=11)
    handles = [Patch(color=c, label=s) for s, c in STATE_COLOURS.items()]
    handles.append(Line2D([], [], color="black", linewidth=2, label="guest really runs"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
