"""Real mode: the behaviours of ``actors`` on Thespian and libvirt (see docs/real-mode.md)."""

import real.thespian_env  # noqa: F401  (Thespian's settings, before anything imports Thespian)
