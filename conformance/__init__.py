"""virtio-blk-conformance: a VIRTIO 1.2 conformance suite for virtio-blk-pci devices."""

__version__ = "0.1.0"
