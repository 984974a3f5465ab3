"""Slot detection a mutation audit found unpinned: NVML's answers read through a stand-in
binding, MIG devices, the spellings of auto and none, what CUDA_VISIBLE_DEVICES hides, and
slot counts that are not numbers."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from metaopt._errors import MetaoptError
from metaopt.peer._gpus import detect_slots, nvml_gpus


def _no_nvml() -> list[str] | None:
    return None


def _fake_pynvml(
    monkeypatch: pytest.MonkeyPatch,
    uuids: list[Any],
    *,
    init_fails: bool = False,
    fails_at: int | None = None,
) -> list[str]:
    """Installs a stand-in for nvidia-ml-py's pynvml; returns the calls it saw."""
    calls: list[str] = []
    fake = types.ModuleType("pynvml")

    def init() -> None:
        calls.append("init")
        if init_fails:
            raise RuntimeError("NVMLError_LibraryNotFound")

    def handle(i: int) -> int:
        if i == fails_at:
            raise RuntimeError("NVMLError_GpuIsLost")
        return i

    fake.nvmlInit = init  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: len(uuids)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda h: uuids[h]  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return calls


def test_nvml_uuids_given_as_bytes_are_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Older nvidia-ml-py returns UUIDs as bytes: a trial must get CUDA_VISIBLE_DEVICES=GPU-…,
    not the repr "b'GPU-…'", which CUDA reads as no device at all."""
    calls = _fake_pynvml(monkeypatch, [b"GPU-aaaa", "GPU-bbbb"])
    assert nvml_gpus() == ["GPU-aaaa", "GPU-bbbb"]
    assert calls == ["init", "shutdown"]  # NVML is released after the look
    slots = detect_slots("auto", environ={})
    assert [dict(s.env) for s in slots] == [
        {"CUDA_VISIBLE_DEVICES": "GPU-aaaa"},
        {"CUDA_VISIBLE_DEVICES": "GPU-bbbb"},
    ]


def test_nvml_that_cannot_start_or_fails_midway_is_no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """A binding without a driver, or a GPU lost while listing, means "NVML cannot tell" (None):
    `--gpus 0` is then taken with a warning, not refused as "this machine has no GPU 0"."""
    _fake_pynvml(monkeypatch, ["GPU-a"], init_fails=True)
    assert nvml_gpus() is None
    assert [s.gpu for s in detect_slots("0", environ={})] == ["0"]
    calls = _fake_pynvml(monkeypatch, ["GPU-a", "GPU-b"], fails_at=1)
    assert nvml_gpus() is None
    assert calls == ["init", "shutdown"]
    assert [s.gpu for s in detect_slots("0,1", environ={})] == ["0", "1"]


def test_a_mig_device_is_taken_though_nvml_lists_only_whole_gpus() -> None:
    """NVML's list holds GPUs, never their MIG instances: a MIG UUID the user names (as
    nvidia-smi -L prints it) must be taken, or MIG slices could never be used."""
    mig = "MIG-GPU-a/1/0"
    slots = detect_slots(f"0,{mig}", environ={}, probe=lambda: ["GPU-a"])
    assert [s.gpu for s in slots] == ["0", mig]


@pytest.mark.parametrize("spelling", ["None", "NONE", " none "])
def test_none_in_any_case_hides_the_gpus(spelling: str) -> None:
    """`--gpus None` means none, as `none` does: trials run on CPU with the GPUs hidden."""
    slots = detect_slots(spelling, 2, environ={"CUDA_VISIBLE_DEVICES": "0"}, probe=lambda: ["X"])
    assert [(s.gpu, dict(s.env)) for s in slots] == [(None, {"CUDA_VISIBLE_DEVICES": ""})] * 2


def test_auto_in_any_case_reads_the_allocation() -> None:
    slots = detect_slots(" AUTO ", environ={"CUDA_VISIBLE_DEVICES": "3"}, probe=lambda: ["X"])
    assert [s.gpu for s in slots] == ["3"]


@pytest.mark.parametrize(("visible", "gpus"), [("-2", []), ("1,-1,0", ["1"]), ("2,-3", ["2"])])
def test_any_negative_entry_ends_the_visible_list_as_cuda_reads_it(
    visible: str, gpus: list[str]
) -> None:
    """CUDA stops at the first invalid entry, and any negative index is one (not -1 alone):
    a device after it is not visible, so the peer must not give it a slot."""
    slots = detect_slots("auto", 1, environ={"CUDA_VISIBLE_DEVICES": visible}, probe=_no_nvml)
    assert [s.gpu for s in slots] == (gpus or [None])


@pytest.mark.parametrize(
    "gpus", ["GPU-", "MIG-", "-1", "0x1", "1.0", "\u0660", "0,\u0661", "\uff11"]
)
def test_device_names_that_name_no_device_are_refused(gpus: str) -> None:
    """A bare prefix or a number CUDA does not read is a one-line error, not a slot pinned
    to a device that does not exist: digits of other scripts too (Arabic-Indic, full-width),
    which passed as GPU indices without NVML to check them."""
    with pytest.raises(MetaoptError, match="--gpus"):
        detect_slots(gpus, environ={}, probe=_no_nvml)


@pytest.mark.parametrize("slots", [True, False, 2.0, "2"])
def test_a_slot_count_that_is_not_a_whole_number_is_refused(slots: Any) -> None:
    """True is an int to Python but not a count a user meant; 2.0 or "2" from a careless
    caller must not give range() a float or a string far from the check."""
    with pytest.raises(MetaoptError, match="--slots"):
        detect_slots("auto", slots, environ={}, probe=_no_nvml)


@pytest.mark.parametrize(
    ("visible", "gpus"),
    [("NoDevFiles", []), ("0,foo,1", ["0"]), ("\u0660", []), ("1,\u0662", ["1"])],
)
def test_a_word_in_the_visible_list_ends_it_as_cuda_reads_it(visible: str, gpus: list[str]) -> None:
    """CUDA stops at the first entry that names no device, a word too (some schedulers set
    CUDA_VISIBLE_DEVICES=NoDevFiles for a job with no GPU): `--slots 4` there gave one "GPU"
    slot named NoDevFiles, each trial on no GPU, instead of 4 CPU slots."""
    slots = detect_slots("auto", 4, environ={"CUDA_VISIBLE_DEVICES": visible}, probe=_no_nvml)
    assert [s.gpu for s in slots] == (gpus or [None] * 4)
