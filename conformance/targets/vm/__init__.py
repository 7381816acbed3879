"""The qemu-vm target: the suite boots its own test VM and tests the device over SSH."""
