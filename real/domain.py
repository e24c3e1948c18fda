"""Libvirt domain XML for a neverstop VM, and reading back what neverstop stored in it.

neverstop keeps a VM's definition (CPU, memory, storage pool) in its own inventory, as
ZStack keeps it in its database, and (re)defines the domain on whichever host starts it.
The pool name travels in the domain's ``<metadata>``: a host agent reports its running
guests as VM -> pool, and that must be readable from libvirt alone after the agent
restarts.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from actors.inventory import VmDef

METADATA_NS = "https://neverstop.invalid/xmlns/domain/1"


@dataclass(frozen=True)
class GuestTemplate:
    """How this site's guests are built.

    ``kind`` is the libvirt domain type: ``kvm`` on real hosts, ``qemu`` for TCG guests
    (the lab), ``test`` for the test driver. ``pool_paths`` maps a pool to its mount
    point on every host; a disk image ``<mount>/<vm>.qcow2`` is attached when it exists
    (``cache='none'``, which live migration on shared storage requires). Without one
    the guest is diskless, which is all the lab needs.
    """

    kind: str = "kvm"
    emulator: str = ""  # empty: libvirt's default for the domain type
    pool_paths: dict[str, str] = field(default_factory=dict)
    memory_mib_override: int = 0  # lab: every guest gets this much, whatever its VmDef says

    def disk_path(self, vm: VmDef) -> str | None:
        mount = self.pool_paths.get(vm.pool)
        if not mount:
            return None
        path = os.path.join(mount, f"{vm.name}.qcow2")
        return path if os.path.exists(path) else None


def domain_xml(vm: VmDef, template: GuestTemplate, uuid: str = "") -> str:
    """The persistent definition of ``vm`` for ``template.kind`` hosts; ``uuid`` keeps an
    existing definition's identity when it is redefined."""
    memory = template.memory_mib_override or vm.memory_mib
    meta = (f"<ns:neverstop xmlns:ns={quoteattr(METADATA_NS)}>"
            f"<ns:pool>{escape(vm.pool)}</ns:pool>"
            f"<ns:shared>{'true' if vm.pool_shared else 'false'}</ns:shared>"
            f"<ns:cluster>{escape(vm.cluster)}</ns:cluster>"
            "</ns:neverstop>")
    parts = [
        f"<domain type={quoteattr(template.kind)}>",
        f"<name>{escape(vm.name)}</name>",
        f"<uuid>{escape(uuid)}</uuid>" if uuid else "",
        f"<metadata>{meta}</metadata>",
        f"<memory unit='MiB'>{memory}</memory>",
        f"<vcpu>{vm.cpu}</vcpu>",
    ]
    if template.kind == "test":
        parts.append("<os><type>hvm</type></os>")
    else:
        parts += [
            "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>",
            "<features><acpi/></features>",
            "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>",
            "<on_crash>destroy</on_crash>",
            "<devices>",
        ]
        if template.emulator:
            parts.append(f"<emulator>{escape(template.emulator)}</emulator>")
        disk = template.disk_path(vm)
        if disk:
            parts.append("<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>"
                         f"<source file={quoteattr(disk)}/><target dev='vda' bus='virtio'/></disk>")
        parts += ["<serial type='pty'/>", "<memballoon model='none'/>", "</devices>"]
    parts.append("</domain>")
    return "".join(parts)


def pool_of(xml: str) -> str | None:
    """The pool neverstop recorded in a domain's XML, or None for a foreign domain."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    node = root.find(f"metadata/{{{METADATA_NS}}}neverstop/{{{METADATA_NS}}}pool")
    return node.text if node is not None and node.text else None
