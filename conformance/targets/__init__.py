"""Targets: where the device under test lives.  Each kind builds a Target from a spec."""

from __future__ import annotations

from collections.abc import Callable

from conformance.targets.base import Target, TargetConfigError, TargetError
from conformance.targets.config import TargetSpec, load_target_file, spec_from_mapping


def _reference(spec: TargetSpec) -> Target:
    from conformance.targets.reference import ReferenceTarget

    return ReferenceTarget.from_spec(spec)


def _qtest(spec: TargetSpec) -> Target:
    from conformance.targets.qtest.target import QtestTarget

    return QtestTarget.from_spec(spec)


def _ssh(spec: TargetSpec) -> Target:
    from conformance.targets.ssh.target import SshTarget

    return SshTarget.from_spec(spec)


def _qemu_vm(spec: TargetSpec) -> Target:
    from conformance.targets.vm.target import QemuVmTarget

    return QemuVmTarget.from_spec(spec)


KINDS: dict[str, Callable[[TargetSpec], Target]] = {
    "reference": _reference,
    "qtest": _qtest,
    "ssh": _ssh,
    "qemu-vm": _qemu_vm,
}


def open_target(spec: TargetSpec) -> Target:
    return KINDS[spec.kind](spec)


__all__ = [
    "KINDS", "Target", "TargetConfigError", "TargetError", "TargetSpec",
    "load_target_file", "open_target", "spec_from_mapping",
]
