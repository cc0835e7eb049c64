"""Property tests of the pure planner (the skip rule every tree-walking backend uses)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xfer_core.sync.plan import Entry, Plan, needs_send, plan_sync

NAMES = st.sampled_from(["a", "b", "c d", "é"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
FILE = st.builds(
    lambda size, mtime, mode: Entry("file", size, mtime, mode),
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from([0o644, 0o600, 0o755]),
)
LEAF = st.one_of(FILE, st.builds(lambda t: Entry("link", target=t), st.sampled_from(["x", "../y"])))


@st.composite
def trees(draw: st.DrawFn) -> dict[str, Entry]:
    """A consistent tree: every parent of an entry is a directory."""
    tree: dict[str, Entry] = {"": Entry("dir", mode=0o755)}
    for path, leaf in draw(st.lists(st.tuples(PATHS, LEAF), max_size=12)):
        parts = path.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if any(tree.get(p, Entry("dir")).kind != "dir" for p in parents) or path in tree:
            continue
        for p in parents:
            tree.setdefault(p, Entry("dir", mode=draw(st.sampled_from([0o755, 0o700]))))
        tree[path] = leaf
    return tree


def apply(plan: Plan, src: dict[str, Entry], dst: dict[str, Entry]) -> dict[str, Entry]:
    """What the destination holds after a backend carried out ``plan``."""
    out = dict(dst)
    for path in plan.delete:  # content of a replaced directory goes before the swap
        del out[path]
    for path in plan.replace:
        assert not any(p.startswith(path + "/") for p in out), "replaced a non-empty directory"
    for path in plan.mkdirs + plan.send + plan.links + plan.dir_attrs + plan.file_attrs:
        out[path] = src[path]
    return out


@settings(max_examples=300)
@given(trees(), trees(), st.booleans(), st.booleans())
def test_plan_then_replan_is_a_no_op(
    src: dict[str, Entry], dst: dict[str, Entry], delete: bool, checksum: bool
) -> None:
    plan = plan_sync(src, dst, delete=delete)
    after = apply(plan, src, dst)
    again = plan_sync(src, after, delete=delete, checksum=checksum)
    assert (again.send, again.links, again.mkdirs, again.replace, again.delete) == (
        [],
        [],
        [],
        [],
        [],
    )
    assert again.compare == [] or checksum
    assert again.blocked == plan.blocked


@settings(max_examples=300)
@given(trees(), trees(), st.booleans())
def test_type_changes_replace_only_what_is_safe(
    src: dict[str, Entry], dst: dict[str, Entry], delete: bool
) -> None:
    """A kind change is planned as a replacement; a non-empty directory is replaced only
    with ``delete`` (its content deleted first), else left alone as blocked (rsync's rule)."""
    plan = plan_sync(src, dst, delete=delete)
    changed = {p for p in src if p in dst and src[p].kind != dst[p].kind}
    assert set(plan.replace) | set(plan.blocked) == changed
    assert not set(plan.replace) & set(plan.blocked)
    made = set(plan.mkdirs + plan.send + plan.compare + plan.links)
    for path in plan.replace:
        assert path in made
        inside = {p for p in dst if p.startswith(path + "/")}
        assert inside <= set(plan.delete)
    for path in plan.blocked:
        assert not delete and dst[path].kind == "dir" and path not in made
        assert any(p.startswith(path + "/") for p in dst)
        assert not any(p.startswith(path + "/") for p in plan.delete)


def test_file_replacing_a_link_is_a_replacement() -> None:
    """Issue 16: the link's replacement by a file on the cluster is undone by a link, and back."""
    src = {"": Entry("dir"), "link_to_readme": Entry("link", target="README")}
    dst = {"": Entry("dir"), "link_to_readme": Entry("file", 5, 1)}
    plan = plan_sync(src, dst)
    assert (plan.replace, plan.links, plan.send) == (["link_to_readme"], ["link_to_readme"], [])
    back = plan_sync(dst, src)
    assert (back.replace, back.send, back.links) == (["link_to_readme"], ["link_to_readme"], [])


@given(trees(), trees(), st.booleans())
def test_every_source_file_and_link_is_accounted_for_once(
    src: dict[str, Entry], dst: dict[str, Entry], checksum: bool
) -> None:
    plan = plan_sync(src, dst, checksum=checksum)
    files = [p for p, e in src.items() if e.kind in ("file", "link")]
    decided = plan.send + plan.compare + plan.links
    assert len(decided) == len(set(decided))
    blocked = [p for p in plan.blocked if src[p].kind in ("file", "link")]
    assert len(decided) + plan.skipped + len(blocked) == len(files)
    assert plan.delete == []


@given(trees(), trees(), st.booleans())
def test_newer_destination_files_are_never_sent(
    src: dict[str, Entry], dst: dict[str, Entry], checksum: bool
) -> None:
    plan = plan_sync(src, dst, checksum=checksum)
    for path in plan.send + plan.compare:
        d = dst.get(path)
        assert d is None or d.kind != "file" or d.mtime <= src[path].mtime


@given(trees(), trees())
def test_order_parents_before_children_and_deletes_children_first(
    src: dict[str, Entry], dst: dict[str, Entry]
) -> None:
    plan = plan_sync(src, dst, delete=True)
    for i, path in enumerate(plan.mkdirs):
        assert all(not path.startswith(p + "/") for p in plan.mkdirs[i + 1 :])
    for i, path in enumerate(plan.delete):
        assert all(not p.startswith(path + "/") for p in plan.delete[i + 1 :])
    # the content of a replaced directory is deleted too, before the swap
    assert set(plan.delete) == {p for p in dst if p and p not in src}
    assert plan.blocked == []  # with --delete nothing is in the way


@given(trees(), trees(), st.booleans())
def test_without_delete_only_empty_directories_are_replaced(
    src: dict[str, Entry], dst: dict[str, Entry], checksum: bool
) -> None:
    """rsync without --delete: "cannot delete non-empty directory" (the pair fails)."""
    plan = plan_sync(src, dst, checksum=checksum)
    for path in plan.replace:
        assert dst[path].kind != "dir" or not any(p.startswith(path + "/") for p in dst)
    for path in plan.blocked:
        assert dst[path].kind == "dir" and src[path].kind != "dir"
        assert any(p.startswith(path + "/") for p in dst)
        assert path not in plan.send + plan.links


def test_up_to_date_files_get_mode_and_mtime_unless_the_destination_is_newer() -> None:
    src = {"": Entry("dir", mode=0o755), "m": Entry("file", 3, 10, 0o755)}
    src |= {"n": Entry("file", 3, 10, 0o755), "same": Entry("file", 3, 10, 0o644)}
    dst = {"": Entry("dir", mode=0o755), "m": Entry("file", 3, 10, 0o600)}
    dst |= {"n": Entry("file", 3, 11, 0o600), "same": Entry("file", 3, 10, 0o644)}
    plan = plan_sync(src, dst)
    assert plan.send == [] and plan.skipped == 3
    assert plan.file_attrs == ["m"]  # "n" is newer at the destination: left alone


def test_skip_rule_matches_rsync_update() -> None:
    src = Entry("file", 10, 100)
    assert needs_send(src, None, checksum=False) is True
    assert needs_send(src, Entry("dir"), checksum=False) is True
    assert needs_send(src, Entry("file", 10, 100), checksum=False) is False
    assert needs_send(src, Entry("file", 11, 100), checksum=False) is True
    assert needs_send(src, Entry("file", 10, 99), checksum=False) is True
    assert needs_send(src, Entry("file", 99, 101), checksum=False) is False  # newer: kept
    assert needs_send(src, Entry("file", 10, 100), checksum=True) is None  # compare content
    assert needs_send(src, Entry("file", 11, 100), checksum=True) is True
