"""This machine's slots: one per GPU, each trial pinned to its GPU by CUDA_VISIBLE_DEVICES.

``--gpus auto`` takes the GPUs this process may use: those ``CUDA_VISIBLE_DEVICES`` lists when
it is set (a scheduler's allocation is respected; empty or ``-1`` means none), else every GPU
NVIDIA's NVML reports (by UUID, which unlike an index means the same device to NVML and CUDA),
else none. ``--gpus 0,1`` names them; ``--gpus none`` runs on CPU and hides GPUs from trials.
With no GPU there are ``slots`` CPU slots.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from metaopt._errors import MetaoptError

log = logging.getLogger("metaopt.peer")

__all__ = ["Slot", "detect_slots", "nvml_gpus"]

_VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Slot:
    """Where one trial runs: a GPU (its CUDA_VISIBLE_DEVICES entry) or a CPU slot (None)."""

    index: int
    gpu: str | None
    env: Mapping[str, str] = field(default_factory=dict)  # added to the trial's environment


def nvml_gpus() -> list[str] | None:
    """UUIDs of the GPUs NVML sees, or None when NVML (nvidia-ml-py or a driver) is absent."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # a binding with no driver raises its own NVMLError
        return None
    try:
        out: list[str] = []
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            out.append(uuid.decode() if isinstance(uuid, bytes) else str(uuid))
        return out
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def detect_slots(
    gpus: str = "auto",
    slots: int = 1,
    *,
    environ: Mapping[str, str] | None = None,
    probe: Callable[[], list[str] | None] = nvml_gpus,
) -> list[Slot]:
    """The slots of this peer.

    Args:
        gpus: ``auto``, ``none``, or a comma-separated list of GPU indices or UUIDs.
        slots: the number of CPU slots when there is no GPU.
        environ: the environment to read CUDA_VISIBLE_DEVICES from (``os.environ``).
        probe: lists the GPUs when CUDA_VISIBLE_DEVICES is unset (NVML).

    Returns:
        One slot per GPU, or ``slots`` CPU slots.

    Raises:
        MetaoptError: ``gpus`` or ``slots`` is not valid.
    """
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise MetaoptError(f"--slots {slots!r}: give a whole number of at least 1")
    env = os.environ if environ is None else environ
    choice = gpus.strip().lower()
    if choice == "none":
        return [Slot(i, None, {_VISIBLE: ""}) for i in range(slots)]
    if choice == "auto":
        visible = env.get(_VISIBLE)
        devices = _visible(visible) if visible is not None else (probe() or [])
    else:
        devices = named_gpus(gpus)
        _check_named(gpus, devices, probe())
    if not devices:
        return [Slot(i, None, {}) for i in range(slots)]
    if slots > 1:  # (it said "1 slot(s)" and nothing of the --slots 2 it was given)
        log.warning(
            "--slots %d is the number of slots without a GPU; with %d GPU(s) seen there is one"
            " slot a GPU (--gpus none for CPU slots)",
            slots,
            len(devices),
        )
    return [Slot(i, d, {_VISIBLE: d}) for i, d in enumerate(devices)]


def named_gpus(gpus: str) -> list[str]:
    """The GPUs a --gpus other than auto and none names, or a one-line MetaoptError. (Checked
    before a peer makes its data directory: a refused --gpus x left one behind.)"""
    devices = [d.strip() for d in gpus.split(",")]
    if (
        not gpus.strip()
        or not all(_DEVICE.fullmatch(d) for d in devices)
        or len({_same(d) for d in devices}) != len(devices)  # 0 and 00 are one GPU
    ):
        raise MetaoptError(
            f"--gpus (or METAOPT_GPUS) {gpus!r}: use auto, none, or distinct GPU indices such"
            " as 0,1"
        )
    return devices


# What CUDA_VISIBLE_DEVICES takes: an index, or a GPU or MIG UUID as nvidia-smi -L prints it.
# ASCII digits: re's \d takes any script's (Arabic-Indic ٠ passed as GPU 0 and reached CUDA).
_DEVICE = re.compile(r"[0-9]+|(?:GPU|MIG)-[0-9A-Za-z/-]+")


def _check_named(given: str, devices: list[str], seen: list[str] | None) -> None:
    """Refuse a GPU NVML says this machine does not have (``--gpus 7`` here ran every trial
    with CUDA_VISIBLE_DEVICES=7, on no GPU). Without NVML nothing can be checked; a MIG
    device is not among the GPUs NVML lists."""
    if seen is None:
        # Said, not refused: a driver without NVML's Python binding still runs CUDA.
        log.warning(
            "--gpus %s: NVML (nvidia-ml-py and an NVIDIA driver) is not here to check that this"
            " machine has those GPUs; trials get CUDA_VISIBLE_DEVICES as given",
            given,
        )
        return
    named: dict[str, str] = {}  # each GPU's UUID -> how it was named
    for d in devices:
        known = (d.isdigit() and int(d) < len(seen)) or d in seen or d.startswith("MIG-")
        if not known:
            have = f"GPUs 0-{len(seen) - 1}" if seen else "no GPU"
            raise MetaoptError(
                f"--gpus {given!r}: this machine has no GPU {d} (NVML sees {have});"
                " use auto, none, or one it has"
            )
        uuid = seen[int(d)] if d.isdigit() else d
        if uuid in named:  # two slots would share one GPU, each trial thinking it alone
            raise MetaoptError(
                f"--gpus {given!r}: {named[uuid]} and {d} are the same GPU; name each GPU once"
            )
        named[uuid] = d


def _same(device: str) -> str:
    """A device as CUDA reads it: index 00 is index 0."""
    return str(int(device)) if device.isdigit() else device


def _visible(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",")]
    # CUDA stops at the first invalid entry, and -1 is the usual way to hide every device
    # (a word such as NoDevFiles, which some schedulers set, was taken for one GPU).
    out: list[str] = []
    for d in devices:
        if not _DEVICE.fullmatch(d):
            break
        out.append(d)
    return out
