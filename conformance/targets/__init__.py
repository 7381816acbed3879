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


def check_target(spec: TargetSpec) -> None:
    """Check a target's options without starting anything; TargetConfigError if wrong.

    Every kind but qemu-vm starts nothing before its first case, so building
    one and closing it is the check.  qemu-vm boots its VM when built, so only
    its options, its kernel and its QEMU binary are checked here (a boot failure
    is reported when the run opens it).
    """
    if spec.kind == "qemu-vm":
        from conformance.targets.vm.config import vm_spec_from_mapping
        from conformance.targets.vm.machine import preflight

        try:
            preflight(vm_spec_from_mapping(spec.options, spec.where))
        except TargetError as exc:
            raise TargetConfigError(f"{spec.where}: {exc}") from None
        return
    open_target(spec).close()


__all__ = [
    "KINDS", "Target", "TargetConfigError", "TargetError", "TargetSpec",
    "check_target", "load_target_file", "open_target", "spec_from_mapping",
]
