import pytest


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


def test_time_budget_callback_stops_and_asks_for_eval_and_save():
    import time
    from types import SimpleNamespace

    from transformers import TrainerControl

    from hf_persona.training.common import time_budget_callback

    never = time_budget_callback(None)
    control = TrainerControl()
    never.on_train_begin(None, None, control)
    assert not never.on_step_end(None, SimpleNamespace(global_step=3), control).should_training_stop
    spent = time_budget_callback(0.0)
    spent.on_train_begin(None, None, control)
    time.sleep(0.01)
    out = spent.on_step_end(None, SimpleNamespace(global_step=5), control)
    assert out.should_training_stop and out.should_evaluate and out.should_save and spent.stopped_at == 5


def test_machine_description_is_measured(monkeypatch):
    import os

    import torch

    from hf_persona.utils import machine_description

    monkeypatch.setattr(os, "getloadavg", lambda: (3.25, 0.0, 0.0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = machine_description()
    assert text.startswith(f"cpu: {os.cpu_count()} cores, load average 3.2")
    assert f"torch threads {torch.get_num_threads()}" in text and text.endswith("gpu: none")


def test_command_line_quotes_arguments_and_records_threads(monkeypatch):
    from hf_persona.utils import command_line

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert command_line("benchmarks/x.py", ["--variants", "", "--out", "a b.json"]) == \
        "OMP_NUM_THREADS=1 python benchmarks/x.py --variants '' --out 'a b.json'"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert command_line("benchmarks/x.py", []) == "python benchmarks/x.py"


def test_parse_floats():
    from hf_persona.utils import parse_floats

    assert parse_floats("0,0,2") == [0.0, 0.0, 2.0] and parse_floats("-1.5") == [-1.5]
    with pytest.raises(ValueError, match="comma-separated numbers such as 0,0,2, got '0,x'"):
        parse_floats("0,x")


def test_parse_named_folders():
    from hf_persona.utils import parse_named_folders

    assert parse_named_folders(["pal=runs/a", "base=runs/b"]) == [("pal", ["runs/a"]), ("base", ["runs/b"])]
    assert parse_named_folders(["a=x,y,"], several=True) == [("a", ["x", "y"])]
    for bad in ("runs/a", "=runs/a", "a=", "a=x,y"):
        with pytest.raises(ValueError, match="expected NAME=FOLDER"):
            parse_named_folders([bad])
    with pytest.raises(ValueError, match="given twice"):
        parse_named_folders(["a=x", "a=y"])
