"""Where things live: BARs, regions inside them, capabilities in config space.

The shape follows QEMU's virtio-blk-pci (non-transitional) so the suite sees
the same layout on every target:

  BAR 1  32-bit memory, 4 KiB          MSI-X table at 0x000, PBA at 0x800
  BAR 4  64-bit prefetchable, 16 KiB   common cfg 0x0000, ISR 0x1000,
                                        device cfg 0x2000, notify 0x3000

Capabilities (4.1.4), chained from 0x34 in the order QEMU presents them:
MSI-X 0x98 -> pci_cfg 0x84 -> notify 0x70 -> device 0x60 -> ISR 0x50 -> common 0x40.
"""

from __future__ import annotations

MSIX_BAR = 1
MSIX_BAR_SIZE = 0x1000
MSIX_TABLE_OFFSET = 0x000
MSIX_PBA_OFFSET = 0x800

VIRTIO_BAR = 4
VIRTIO_BAR_SIZE = 0x4000
REGION_SIZE = 0x1000
COMMON_OFFSET = 0x0000
ISR_OFFSET = 0x1000
DEVICE_OFFSET = 0x2000
NOTIFY_OFFSET = 0x3000

CAP_COMMON = 0x40
CAP_ISR = 0x50
CAP_DEVICE = 0x60
CAP_NOTIFY = 0x70
CAP_PCI_CFG = 0x84
CAP_MSIX = 0x98
CAP_EXTRA = 0xA4  # first free byte after MSI-X: optional caps some defects add

SUBSYSTEM_ID = 0x1100  # 4.1.2.1: >= 0x40 for a non-transitional device (QEMU's value)
