"""builder.wheelhouse.layout: folders, search order, accepted tags, scan, root, writable check."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from packaging.tags import Tag

from builder.errors import PlacementError
from builder.targets.model import resolve
from builder.wheelhouse import layout

GENERIC, V3, V4 = resolve(["gentoo2023-generic", "gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"])
STACK = V3.stack


def test_folders_of_the_stack() -> None:
    assert layout.level_folders(STACK) == ("gentoo2023/x86-64-v3", "gentoo2023/x86-64-v4")
    assert layout.stack_folders(STACK) == (
        "generic",
        "gentoo2023/generic",
        "gentoo2023/x86-64-v3",
        "gentoo2023/x86-64-v4",
    )


def test_search_order_most_specific_first() -> None:
    assert layout.search_folders(V4) == ("gentoo2023/x86-64-v4", "gentoo2023/generic", "generic")
    assert layout.search_folders(GENERIC) == ("gentoo2023/generic", "generic")
    assert layout.run_search_folders([V4, GENERIC, V3]) == (
        "gentoo2023/generic",
        "generic",
        "gentoo2023/x86-64-v3",
        "gentoo2023/x86-64-v4",
    )
    assert layout.find_links(Path("/wh"), [V3]) == (
        Path("/wh/gentoo2023/x86-64-v3"),
        Path("/wh/gentoo2023/generic"),
        Path("/wh/generic"),
    )


def test_tags_up_to_the_providers_glibc() -> None:
    assert layout.glibc_floor(V3) == "2.36"
    tags = layout.accepted_tags(V3)
    for ok in (
        "cp311-cp311-linux_x86_64",
        "cp311-cp311-manylinux_2_36_x86_64",
        "cp311-cp311-manylinux_2_17_x86_64",
        "cp311-cp311-manylinux2014_x86_64",
        "cp311-cp311-manylinux1_x86_64",
        "cp38-abi3-manylinux_2_28_x86_64",
        "py3-none-any",
    ):
        assert Tag(*ok.split("-")) in tags, ok
    for bad in (
        "cp311-cp311-manylinux_2_37_x86_64",  # newer than the provider's glibc
        "cp312-cp312-linux_x86_64",  # another Python
        "cp311-cp311d-linux_x86_64",  # the host's debug ABI is not the target's
        "cp311-cp311-linux_aarch64",
        "cp311-cp311-musllinux_1_2_x86_64",
    ):
        assert Tag(*bad.split("-")) not in tags, bad


@pytest.mark.parametrize("provider", ["standalone", "unregistered"])
def test_no_manylinux_when_the_provider_states_no_glibc(provider: str) -> None:
    # No glibc floor in the data: no manylinux wheel can be shown to load on the node.
    stack = dataclasses.replace(STACK, providers={provider: {}})
    target = dataclasses.replace(V3, stack=stack, provider=provider)
    assert layout.glibc_floor(target) is None
    tags = layout.accepted_tags(target)
    assert Tag("cp311", "cp311", "linux_x86_64") in tags
    assert not any("manylinux" in t.platform for t in tags)


def test_scan_skips_dot_files_folders_and_non_wheels(tmp_path: Path) -> None:
    lv = tmp_path / "gentoo2023/x86-64-v3"
    lv.mkdir(parents=True)
    for name in ("a-1-py3-none-any.whl", ".b-1-py3-none-any.whl.tmp-1", ".c-1.whl", "d.txt"):
        (lv / name).write_text("")
    (lv / "e-1-py3-none-any.whl").mkdir()
    index = layout.scan(tmp_path, STACK)
    assert index["gentoo2023/x86-64-v3"] == {"a-1-py3-none-any.whl"}
    assert index["gentoo2023/generic"] == set() and set(index) == set(layout.stack_folders(STACK))
    assert layout.scan_folders(tmp_path, ["nowhere"]) == {"nowhere": set()}


def test_wheelhouse_root_from_the_wheels_folder(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    assert layout.wheelhouse_root(wh / "gentoo2023/x86-64-v4/a.whl", STACK) == wh
    assert layout.wheelhouse_root(wh / "gentoo2023/generic/a.whl", STACK) == wh
    assert layout.wheelhouse_root(wh / "generic/a.whl", STACK) == wh
    assert layout.wheelhouse_root(tmp_path / "elsewhere/a.whl", STACK) is None


def test_writable_missing_under_a_writable_folder(tmp_path: Path) -> None:
    layout.check_writable(tmp_path / "a" / "b", ["gentoo2023/generic"])
    assert not (tmp_path / "a").exists()  # checking creates nothing


@pytest.mark.parametrize("where", ["", "wh", "wh/x"])
def test_writable_refuses_a_file_in_the_way(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(PlacementError, match="is a file, not a directory") as err:
        layout.check_writable(blocker / where if where else blocker)
    assert "not writable" in err.value.message and "--wheelhouse" in (err.value.fix or "")


def test_writable_refuses_a_dangling_link(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone", tmp_path / "link")
    with pytest.raises(PlacementError, match="dangling link"):
        layout.check_writable(tmp_path / "link")


def test_writable_refuses_a_file_where_a_folder_goes(tmp_path: Path) -> None:
    (tmp_path / "gentoo2023").write_text("")
    layout.check_writable(tmp_path)
    with pytest.raises(PlacementError, match="gentoo2023 is a file"):
        layout.check_writable(tmp_path, ["gentoo2023/x86-64-v3"])


def test_writable_refuses_a_read_only_folder(tmp_path: Path, monkeypatch) -> None:
    # os.access is the rule; simulated, since root may write anywhere and tests may run as root.
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(layout.os, "access", lambda p, mode: Path(p) != ro and real(p, mode))
    with pytest.raises(PlacementError, match="ro is read-only") as err:
        layout.check_writable(ro / "wheelhouse")
    assert f"chmod u+w {ro}" in (err.value.fix or "")
    with pytest.raises(PlacementError, match="it is read-only"):
        layout.check_writable(ro)
