"""Events as other codes write them (hpcvib.geometry.event_files): ARTn's numbered files."""

import pytest

from hpcvib.errors import InputError
from hpcvib.geometry.event_files import artn_events, is_artn_directory


def _touch(folder, *names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("x\n")
    return folder


def test_numbered_artn_files_pair_each_saddle_with_the_minimum_before_it(tmp_path):
    d = _touch(tmp_path / "a", "min1000", "sad1001", "min1001", "sad1003", "min1002", "notes.txt")
    assert is_artn_directory(d) and not is_artn_directory(_touch(tmp_path / "e", "min.xyz", "sad.xyz"))
    events = [(name, [p.rsplit("/", 1)[1] for p in paths], status) for name, paths, status in artn_events(str(d))]
    assert events == [("sad1001", ["min1000", "sad1001", "min1001"], "numbered"),
                      ("sad1003", ["min1002", "sad1003"], "numbered")]


def test_events_list_decides_and_is_checked(tmp_path):
    d = _touch(tmp_path / "a", "min0002.xyz", "min0004.xyz", "sad0005.xyz", "sad0006.xyz")
    (d / "events.list").write_text("# ARTn\n sad0005 min0002 min0004 Accepted\n sad0006 min0004 Rejected\n")
    events = [(name, [p.rsplit("/", 1)[1] for p in paths], status) for name, paths, status in artn_events(str(d))]
    assert events == [("sad0005", ["min0002.xyz", "sad0005.xyz", "min0004.xyz"], "Accepted"),
                      ("sad0006", ["min0004.xyz", "sad0006.xyz"], "Rejected")]
    (d / "events.list").write_text("sad0005 min0009 min0004\n")
    with pytest.raises(InputError, match="events.list:1: no file for min0009"):
        artn_events(str(d))
    (d / "events.list").write_text("sad0005 sad0006 min0004\n")
    with pytest.raises(InputError, match="one sad file"):
        artn_events(str(d))


def test_a_saddle_before_every_minimum_is_refused(tmp_path):
    d = _touch(tmp_path / "a", "sad0001", "min0002")
    with pytest.raises(InputError, match="sad0001 has no lower-numbered min file"):
        artn_events(str(d))
