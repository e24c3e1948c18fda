"""The VM state timeline: one row per VM, coloured by the state users saw, faults marked.

It is the picture of the ZStack guide's VM list moving through Unknown / Recovering /
Running, drawn from a run's transitions, so a recovery time can be read off by eye and
compared with where the guest really executed (the thin black line under each row).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.result import RunResult, Transition

STATE_COLOURS: dict[str, str] = {
    "Running": "#2e9e44",
    "Starting": "#9bd8a4",
    "Stopping": "#f0a030",
    "Stopped": "#9a9a9a",
    "Unknown": "#8e5cc2",
    "Recovering": "#d8413a",
    "Migrating": "#3a7bd5",
}
OTHER_COLOUR = "#444444"  # a state this module does not know yet: still drawn, never hidden
LIGHT_STATES = {"Starting", "Stopping", "Stopped"}  # dark text reads better on these


def _segments(result: RunResult, vm: str) -> list[tuple[float, float, Transition]]:
    """(start, end, transition) for each state of ``vm``: it holds until the VM's next change."""
    changes = sorted((t for t in result.transitions if t.vm == vm), key=lambda t: t.t)
    ends = [t.t for t in changes[1:]] + [result.duration_s] if changes else []
    return [(tr.t, end, tr) for tr, end in zip(changes, ends, strict=True) if end > tr.t]


@dataclass(frozen=True)
class Bar:
    """One state of one VM as drawn: row, start and end (seconds), the state and its host."""

    row: int
    vm: str
    start: float
    end: float
    state: str
    host: str | None
    colour: str


@dataclass(frozen=True)
class Timeline:
    """What the picture shows, before matplotlib draws it: rows (VMs by name, top first),
    the state bars, where each guest really ran (ground truth) and the injected faults."""

    rows: tuple[str, ...]
    bars: tuple[Bar, ...]
    runs: tuple[tuple[int, float, float], ...]  # (row, start, end)
    faults: tuple[tuple[float, str], ...]  # (t, label)


def timeline(result: RunResult) -> Timeline:
    vms = tuple(sorted({t.vm for t in result.transitions}
                       | {str(r["name"]) for r in result.vm_table if r.get("name")}))
    row_of = {vm: i for i, vm in enumerate(vms)}
    bars = tuple(Bar(row_of[vm], vm, start, end, tr.state, tr.host, STATE_COLOURS.get(tr.state, OTHER_COLOUR))
                 for vm in vms for start, end, tr in _segments(result, vm))
    runs = tuple((row_of[r.vm], r.start, result.duration_s if r.end is None else r.end)
                 for r in result.runs if r.vm in row_of)
    faults = tuple((f.t, f"{f.action} {f.target or ''}".strip())
                   for f in sorted(result.faults, key=lambda f: f.t))
    return Timeline(vms, bars, runs, faults)


def plot_timeline(result: RunResult, path: str) -> Timeline:
    """Write the timeline of ``result`` as a PNG at ``path``.

    The Agg backend is chosen here, not at import, so that importing this module never
    changes the backend of a notebook or GUI session, and so the CLI works without a display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    model = timeline(result)
    vms = model.rows
    minutes = result.duration_s > 300
    scale = 60.0 if minutes else 1.0
    x_end = max(result.duration_s, 1e-9) / scale

    fig, ax = plt.subplots(figsize=(12, 1.8 + 0.55 * max(len(vms), 1)))
    labels = []  # (text, x0, x1) in data units: checked for fit once the layout is final
    for bar in model.bars:
        x0, width = bar.start / scale, (bar.end - bar.start) / scale
        ax.broken_barh([(x0, width)], (bar.row - 0.35, 0.7), facecolors=bar.colour)
        if bar.host:
            text = ax.text(x0 + width / 2, bar.row, bar.host, ha="center", va="center", fontsize=8,
                           color="black" if bar.state in LIGHT_STATES else "white", clip_on=True)
            labels.append((text, x0, x0 + width))
    for row, start, end in model.runs:  # the ground truth: where the guest really executed
        y = row + 0.42
        ax.plot([start / scale, end / scale], [y, y], color="black", linewidth=2, solid_capstyle="butt")
    for t, label in model.faults:
        x = t / scale
        ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
        ax.annotate(label, (x, 1.0),
                    xycoords=("data", "axes fraction"), xytext=(2, 4), textcoords="offset points",
                    rotation=30, fontsize=7, va="bottom", annotation_clip=False)

    ax.set_yticks(range(len(vms)), vms)
    ax.set_ylim(max(len(vms), 1) - 0.4, -0.6)  # first VM (by name) on top
    ax.set_xlim(0, x_end)
    ax.set_xlabel("simulated time (min)" if minutes else "simulated time (s)")
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.suptitle(result.scenario, x=0.01, ha="left", fontsize=11)
    handles: list[Patch | Line2D] = [Patch(color=c, label=s) for s, c in STATE_COLOURS.items()]
    handles.append(Line2D([], [], color="black", linewidth=2, label="guest really runs"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))

    # Host names only where they fit: measured in pixels once the layout is final.
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for text, x0, x1 in labels:
        bar_px = ax.transData.transform((x1, 0))[0] - ax.transData.transform((x0, 0))[0]
        if text.get_window_extent(renderer).width + 4 > bar_px:
            text.remove()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return model
