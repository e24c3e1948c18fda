"""The pure core of neverstop: HA behaviours that react to messages through a context.

Nothing here may touch simpy, thespian, libvirt, asyncio, the wall clock or the
module-level random generator; ``tests/test_purity.py`` enforces it. The same
behaviours run on simulated time (``sim``) and on real hosts (``real``).
"""
