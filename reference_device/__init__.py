"""The reference virtio-blk-pci device: a VIRTIO 1.2 model in plain Python.

It is the suite's embedded default target and its yardstick: every case must
pass against it, and every injectable defect (``defects.py``) must make at
least one case fail.

    from reference_device import DeviceConfig, VirtioBlkPci, GuestMemory
    mem = GuestMemory(size=64 << 20)
    dev = VirtioBlkPci(DeviceConfig.from_mapping({"num_queues": 2}, where="x.yaml"), mem)
"""

from .chain import ChainError
from .config import ConfigError, DeviceConfig
from .defects import DEFECTS, Defect
from .device import VirtioBlkPci
from .memory import DmaError, GuestMemory

__all__ = [
    "DEFECTS",
    "ChainError",
    "ConfigError",
    "Defect",
    "DeviceConfig",
    "DmaError",
    "GuestMemory",
    "VirtioBlkPci",
]
