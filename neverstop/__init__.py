"""The ``neverstop`` command: the front door above both runtimes (``neverstop.cli``)."""
