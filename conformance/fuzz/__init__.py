"""Fuzzing virtio-blk devices with hostile descriptor chains.

``chain`` describes a request as a driver lays it out (malformed ones
included), ``rawring`` puts it into a live queue and observes the device,
``strategies`` generates hostile chains with Hypothesis, ``session`` runs
them against a target and recognises findings, ``engine`` is the
time-bounded loop and ``reproducer`` the file format and replay.
"""
