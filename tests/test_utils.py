def test_atomic_write_uses_normal_permissions(tmp_path):
    import os
    import stat

    from hf_persona.utils import atomic_write_json

    mask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
