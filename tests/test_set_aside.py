"""The clean-build fixture keeps a jupyter cache instead of deleting it."""

from conftest import set_aside


def test_a_build_with_a_jupyter_cache_is_moved_aside(tmp_path):
    build = tmp_path / "_build"
    (build / ".jupyter_cache").mkdir(parents=True)
    (build / ".jupyter_cache" / "global.db").write_text("cache")
    old = tmp_path / "_build.previous"
    old.mkdir()
    (old / "stale").write_text("older")
    set_aside(build)
    assert not build.exists()
    assert (old / ".jupyter_cache" / "global.db").read_text() == "cache"
    assert not (old / "stale").exists()  # the older copy is replaced


def test_a_build_without_a_cache_is_deleted(tmp_path):
    build = tmp_path / "_build"
    (build / "html").mkdir(parents=True)
    set_aside(build)
    assert not build.exists()
    assert not (tmp_path / "_build.previous").exists()
