"""The simulated cluster: neverstop's behaviours on simpy virtual time, with faults."""
