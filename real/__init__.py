"""The same behaviours on Thespian and libvirt, for real KVM hosts (see README)."""
