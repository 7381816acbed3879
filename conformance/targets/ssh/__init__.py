"""The ssh target: a virtio-blk device inside a guest, driven by the guest agent over SSH."""
