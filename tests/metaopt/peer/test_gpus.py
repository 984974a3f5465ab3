"""Slot detection: explicit GPUs, CUDA_VISIBLE_DEVICES, NVML, CPU slots."""

from __future__ import annotations

import pytest

from metaopt._errors import MetaoptError
from metaopt.peer._gpus import Slot, detect_slots


def _no_nvml() -> list[str] | None:
    return None


def test_cpu_slots_when_there_is_no_gpu() -> None:
    slots = detect_slots("auto", 3, environ={}, probe=_no_nvml)
    assert slots == [Slot(0, None, {}), Slot(1, None, {}), Slot(2, None, {})]


def test_nvml_gpus_by_uuid() -> None:
    slots = detect_slots("auto", 4, environ={}, probe=lambda: ["GPU-a", "GPU-b"])
    assert [(s.index, s.gpu, dict(s.env)) for s in slots] == [
        (0, "GPU-a", {"CUDA_VISIBLE_DEVICES": "GPU-a"}),
        (1, "GPU-b", {"CUDA_VISIBLE_DEVICES": "GPU-b"}),
    ]


def test_an_allocation_in_cuda_visible_devices_wins_over_nvml() -> None:
    slots = detect_slots("auto", environ={"CUDA_VISIBLE_DEVICES": "2,3"}, probe=lambda: ["X"])
    assert [s.gpu for s in slots] == ["2", "3"]


@pytest.mark.parametrize("visible", ["", "-1", "-1,0"])
def test_hidden_gpus_mean_cpu_slots(visible: str) -> None:
    slots = detect_slots("auto", 2, environ={"CUDA_VISIBLE_DEVICES": visible}, probe=lambda: ["X"])
    assert [s.gpu for s in slots] == [None, None]


def test_explicit_list_and_none() -> None:
    assert [s.gpu for s in detect_slots(" 0, 1 ", environ={}, probe=_no_nvml)] == ["0", "1"]
    slots = detect_slots("none", 2, environ={"CUDA_VISIBLE_DEVICES": "0"})
    assert [dict(s.env) for s in slots] == [{"CUDA_VISIBLE_DEVICES": ""}] * 2


def test_gpu_uuids_are_devices() -> None:
    uuid = "GPU-8f3c2a1e-6b7d-4c5e-9f0a-1b2c3d4e5f60"
    mig = "MIG-GPU-8f3c2a1e-6b7d-4c5e-9f0a-1b2c3d4e5f60/1/0"
    assert [s.gpu for s in detect_slots(f"{uuid},{mig}", environ={}, probe=_no_nvml)] == [uuid, mig]


def test_a_named_gpu_nvml_does_not_see_is_refused() -> None:
    # `--gpus 7` on a machine without GPUs was taken: every trial got CUDA_VISIBLE_DEVICES=7.
    two = ["GPU-a", "GPU-b"]
    assert [s.gpu for s in detect_slots("1,GPU-a", environ={}, probe=lambda: two)] == ["1", "GPU-a"]
    cases = (("7", [], "no GPU"), ("2", two, "GPUs 0-1"), ("GPU-c", two, "0-1"))
    for gpus, seen, have in cases:
        with pytest.raises(MetaoptError) as info:
            detect_slots(gpus, environ={}, probe=lambda seen=seen: seen)
        message = str(info.value)
        assert f"has no GPU {gpus}" in message and have in message and "\n" not in message
    # An Arabic-Indic one, a digit to int(), was taken: CUDA reads no such index. It is no
    # GPU index at all, NVML or not.
    with pytest.raises(
        MetaoptError,
        match=r"^--gpus \(or METAOPT_GPUS\) '١': use auto, none, or distinct GPU indices",
    ):
        detect_slots("١", environ={}, probe=lambda: two)


def test_named_gpus_nvml_cannot_check_are_taken_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `--gpus 0,1` on a machine with no NVML was taken without a word: 2 slots, each trial
    # given a GPU that may not exist.
    slots = detect_slots("0,1", environ={}, probe=_no_nvml)
    assert [s.gpu for s in slots] == ["0", "1"]
    assert "--gpus 0,1: NVML" in caplog.text and "not here to check" in caplog.text


def test_one_gpu_named_twice_is_refused_however_it_is_spelt() -> None:
    """Two slots on one GPU run two trials on it, each sized for the whole card: index 0 and
    its UUID (NVML tells), or 0 and 00 (CUDA reads both as 0), name it twice."""
    two = ["GPU-a", "GPU-b"]
    with pytest.raises(MetaoptError, match=r"^--gpus '0,GPU-a': 0 and GPU-a are the same GPU"):
        detect_slots("0,GPU-a", environ={}, probe=lambda: two)
    with pytest.raises(MetaoptError, match="distinct GPU indices"):
        detect_slots("0,00", environ={}, probe=_no_nvml)
    assert [s.gpu for s in detect_slots("1,GPU-a", environ={}, probe=lambda: two)] == ["1", "GPU-a"]


@pytest.mark.parametrize("gpus", ["", "0,,1", "0,0", "all", "bogus", "0,cuda:1"])
def test_bad_gpu_lists_are_one_line_errors(gpus: str) -> None:
    with pytest.raises(MetaoptError, match="--gpus"):
        detect_slots(gpus, environ={}, probe=_no_nvml)


@pytest.mark.parametrize("slots", [0, -1])
def test_bad_slot_counts_are_one_line_errors(slots: int) -> None:
    with pytest.raises(MetaoptError, match="--slots"):
        detect_slots("auto", slots, environ={}, probe=_no_nvml)


def test_the_real_probe_runs_on_this_machine() -> None:
    assert len(detect_slots("auto", 1)) >= 1


def test_slots_given_beside_gpus_are_said_to_be_ignored(caplog: pytest.LogCaptureFixture) -> None:
    # CUDA_VISIBLE_DEVICES=0 and --slots 2: the log said "1 slot(s)", nothing of the 2 asked.
    with caplog.at_level("WARNING", logger="metaopt"):
        slots = detect_slots("auto", 2, environ={"CUDA_VISIBLE_DEVICES": "0"}, probe=_no_nvml)
    assert [s.gpu for s in slots] == ["0"]
    assert "--slots 2 is the number of slots without a GPU" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="metaopt"):
        detect_slots("auto", 1, environ={"CUDA_VISIBLE_DEVICES": "0"}, probe=_no_nvml)
    assert "--slots" not in caplog.text
