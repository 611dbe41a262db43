"""Issue 19, section 3 and the saved model's files: every output of a long command is checked before the work
starts (``eval --json``, ``export -o``, ``export --hub-folder``), a late failure keeps the figures, and
``save_pretrained`` raises our typed error and writes its files with the permissions the umask gives."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import stat
from pathlib import Path

import pytest
import torch

from resnest_zoo.cli import main
from resnest_zoo.cli.exit_codes import ExitCode
from resnest_zoo.errors import OutputWriteError
from resnest_zoo.formats.saved_model import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from resnest_zoo.models.segmentor import build_segmentor

from finetune_helpers import small_config
from synthetic_data import write_voc

UNWRITABLE = ["a folder below a file", "a read-only folder", "/proc"]


def cli(*args: str) -> tuple[int, str, str]:
    """``resnest-zoo ARGS`` in this process: exit code, standard output and standard error."""
    output, error = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(error):
        code = main(list(args))
    return code, output.getvalue(), error.getvalue()


_MOUNTS: list[Path] = []


@pytest.fixture(autouse=True)
def _unmount():
    """Unmount the read-only folders a test mounted."""
    yield
    while _MOUNTS:
        subprocess.run(["umount", str(_MOUNTS.pop())], check=True)


def unwritable(tmp_path: Path, kind: str, name: str) -> Path:
    """A path named ``name`` that cannot be written, of the ``kind`` asked for."""
    if kind == "a folder below a file":
        (tmp_path / "a-file").write_text("a file, not a folder")
        return tmp_path / "a-file" / name
    if kind == "a read-only folder":
        folder = tmp_path / "read-only"
        folder.mkdir()
        if os.geteuid() != 0:
            folder.chmod(0o555)
            return folder / name
        # root writes into any folder whose permissions forbid it: a read-only mount binds root too
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"running as root, and no read-only folder can be made here: {mounted.stderr.strip()}")
        _MOUNTS.append(folder)
        return folder / name
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc (a folder not even root can write)")
    return Path("/proc") / name


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """Offline with an empty cache: a download attempt fails with exit code 3, so exit code 2 means 'refused first'."""
    for name in [name for name in os.environ if name.startswith("RESNEST_ZOO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RESNEST_ZOO_OFFLINE", "1")
    monkeypatch.setenv("RESNEST_ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _one_line(error: str) -> str:
    assert "Traceback" not in error and error.count("\n") == 1 and error.startswith("error: "), error
    return error


@pytest.mark.parametrize("kind", [*UNWRITABLE, "a folder"])
def test_eval_json_that_cannot_be_written_is_refused_before_any_work(offline, kind):
    data = write_voc(offline / "data", count=1)
    if kind == "a folder":
        target = offline / "results"
        target.mkdir()
    else:
        target = unwritable(offline, kind, "result.json")
    absent = offline / "absent.pth"  # loading it would fail with another message: the check comes first
    code, output, error = cli("eval", "-m", "fcn/voc", "--data", str(data), "--weights", str(absent), "--json",
                              str(target), "-q")
    assert code == ExitCode.USAGE and output == ""
    assert "cannot write" in _one_line(error) and f"--json file {target}" in error and "absent" not in error


@pytest.mark.parametrize("kind", UNWRITABLE)
@pytest.mark.parametrize("option", ["-o", "--hub-folder"])
def test_export_destinations_that_cannot_be_written_are_refused_before_any_download(offline, kind, option):
    target = unwritable(offline, kind, "exported")
    code, output, error = cli("export", "-m", "fcn/voc", option, str(target), "-q")
    assert code == ExitCode.USAGE and output == ""  # not 3: nothing was downloaded (offline, empty cache)
    assert f"cannot write into {target}" in _one_line(error)
    target = offline / "a-plain-file"
    target.write_text("")
    code, _, error = cli("export", "-m", "fcn/voc", option, str(target), "-q")
    assert code == ExitCode.USAGE and "it is a file, not a folder" in _one_line(error)


def test_eval_keeps_the_figures_when_the_json_cannot_be_written_at_the_end(offline, monkeypatch):
    """The --json file was writable when checked and is not at the end: the table is printed, then one line."""
    import dataclasses

    import resnest_zoo.files
    from resnest_zoo.catalogue import get_entry

    config = get_entry("fcn", "voc").config
    config = dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, arch="resnest50", output_stride=32),
                                 preprocessing=dataclasses.replace(config.preprocessing, resize=(64, 64)))
    torch.manual_seed(0)
    folder = build_segmentor(config).eval().save_pretrained(offline / "voc-model")
    data = write_voc(offline / "data", count=1)

    @contextlib.contextmanager
    def disk_full(path, **options):
        raise OSError(28, "No space left on device")
        yield  # pragma: no cover

    monkeypatch.setattr(resnest_zoo.files, "atomic_write", disk_full)
    code, output, error = cli("eval", "-m", str(folder), "--data", str(data), "--device", "cpu", "--workers", "0",
                              "-q", "--json", str(offline / "result.json"))
    assert code == ExitCode.USAGE
    assert output.splitlines()[0].split() == ["class", "IoU", "Acc", "pixels"] and "mIoU " in output.splitlines()[-1]
    assert "the results above could not be written to" in _one_line(error) and "No space left" in error


# ------------------------------------------------------------------------------------------- save_pretrained

@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmentor(small_config()).eval()


@pytest.mark.parametrize("kind", [*UNWRITABLE, "a file"])
def test_save_pretrained_where_it_cannot_write_raises_output_write_error(small_model, tmp_path, kind):
    if kind == "a file":
        target = tmp_path / "saved"
        target.write_text("a file where the folder would be")
    else:
        target = unwritable(tmp_path, kind, "saved")
    with pytest.raises(OutputWriteError, match=rf"cannot write the saved model into {target}: .*choose a folder"):
        small_model.save_pretrained(target)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["a-file"], ["read-only"], ["saved"])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_get_the_permissions_the_umask_gives(small_model, tmp_path, umask):
    previous = os.umask(umask)
    try:
        folder = small_model.save_pretrained(tmp_path / "saved")
        (tmp_path / "plain").write_text("")  # what any other program writing here gets
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~umask
    assert {name: oct(stat.S_IMODE((folder / name).stat().st_mode)) for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)} \
        == {name: oct(expected) for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)}
