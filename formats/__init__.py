"""What both runtimes share, between the behaviours and the runtimes.

The layers, each importing only those before it:
  actors/   behaviours (pure: no simpy, Thespian, libvirt or clock)
  formats/  the cluster and scenario file format, units, user-facing errors and exit codes,
            tables: what an operator writes and reads, the same for simulation and real hosts
  sim/, real/  the two runtimes, siblings: neither imports the other
  neverstop/  the command line's front door, with the groups ``sim.cli`` and ``real.cli``
"""
