"""Hostile volume files, output names, full disks, signals and terminals against the real
``revgan`` command (issue 10): every case checks the exit code, one clear line without a
traceback, inputs byte-identical, and nothing left behind but the requested output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hostile_helpers import (assert_refused, digest_tree, hidden_leftovers, run_revgan, run_revgan_in_terminal,
                             start_revgan)
from model_helpers import metadata_for, random_generator, random_volume, save_tiny_model

from RevGANCore.errors import OutputError
from RevGANCore.modelfile import save_model
from RevGANCore.volume import volume_to_image
from RevGANCore.volume_io import read_volume, verify_volume_file, write_volume



@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A small CT scan in NIfTI and tiny kernel and super-resolution models."""
    root = tmp_path_factory.mktemp("kit")
    return {
        "scan": write_volume(random_volume((8, 24, 24), seed=1), root / "scan.nii.gz"),
        "kernel": save_tiny_model(root / "kernel.safetensors", "kernel", ngf=2, depth=1),
        "sr": save_tiny_model(root / "sr.safetensors", "super_resolution", ngf=2, depth=1),
        # seconds per scan rather than a fraction: a signal sent mid-run lands mid-run
        "slow": save_tiny_model(root / "slow.safetensors", "kernel", ngf=16, depth=4),
        "root": root,
    }


@pytest.fixture
def work(tmp_path, kit):
    """A fresh folder holding a copy of the scan; returns (folder, scan path)."""
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(Path(kit["scan"]).read_bytes())
    return tmp_path, scan


def _translate(kit, source, output, *extra, model="kernel", **options):
    return run_revgan(["translate", source, output, "--model", kit[model], "--device", "cpu", *extra], **options)


def _assert_only(folder: Path, expected_names) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected_names)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["scan.nii.nii.gz", "scan.nii.gz.nii.gz", "UPPER.NII.GZ", "g.MHA", "x.nii.nrrd"])
def test_odd_output_names_write_exactly_the_requested_file(kit, work, name):
    folder, scan = work
    before = digest_tree(scan)
    run = _translate(kit, scan, folder / name, "--quiet")
    assert run.returncode == 0, run.stderr
    assert digest_tree(scan) == before  # 'scan.nii.nii.gz' once replaced the input
    _assert_only(folder, ["scan.nii.gz", name])
    assert read_volume(folder / name).shape == read_volume(scan).shape


def test_mhd_output_writes_its_header_and_data_file_under_the_requested_name(kit, work):
    folder, scan = work
    run = _translate(kit, scan, folder / "E.MHD", "--quiet")
    assert run.returncode == 0, run.stderr
    _assert_only(folder, ["scan.nii.gz", "E.MHD", "E.zraw"])
    assert read_volume(folder / "E.MHD").same_geometry(read_volume(scan), tolerance=1e-4)


def test_mhd_output_whose_data_file_is_the_inputs_data_file_is_refused(kit, work):
    folder, _ = work
    # a.mhd is a header whose voxels live in b.zraw; writing b.mhd would replace b.zraw.
    write_volume(read_volume(kit["scan"]), folder / "b.mhd")
    (folder / "b.mhd").rename(folder / "a.mhd")
    before = digest_tree(folder)
    line = assert_refused(_translate(kit, folder / "a.mhd", folder / "b.mhd"), "input of this command", "b.zraw")
    assert "a.mhd" in line or "b.zraw" in line
    assert digest_tree(folder) == before


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_output_naming_the_input_in_any_spelling_is_refused(kit, work, spelling):
    folder, scan = work
    if spelling == "same":
        output = scan
    elif spelling == "dotted":
        (folder / "sub").mkdir()
        output = folder / "sub" / ".." / "scan.nii.gz"
    elif spelling == "symlink":
        output = folder / "link.nii.gz"
        output.symlink_to(scan)
    else:
        output = folder / "hard.nii.gz"
        os.link(scan, output)
    before = digest_tree(folder)
    assert_refused(_translate(kit, scan, output), "input of this command")
    assert digest_tree(folder) == before


@pytest.mark.parametrize("output, message", [
    ("out.png", "unknown output file type"),
    ("folder.nii.gz", "is a folder"),
    ("afile/out.nii.gz", "not a folder"),
])
def test_bad_output_locations_are_refused_before_any_work(kit, work, output, message):
    folder, scan = work
    (folder / "folder.nii.gz").mkdir()
    (folder / "afile").write_text("not a folder")
    before = digest_tree(folder)
    assert_refused(_translate(kit, scan, folder / output), message)
    assert digest_tree(folder) == before


def test_a_failing_run_creates_no_output_folder_and_a_good_one_does(kit, work):
    folder, scan = work
    nested = folder / "new" / "deeper" / "out.nii.gz"
    broken = folder / "broken.nii.gz"
    broken.write_bytes(Path(scan).read_bytes()[:200])  # truncated: fails after the name checks
    assert_refused(_translate(kit, broken, nested), "truncated")
    assert not (folder / "new").exists()
    assert _translate(kit, scan, nested, "--quiet").returncode == 0
    assert nested.is_file() and not hidden_leftovers(folder)


# --------------------------------------------------------------------------- hostile voxels


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_in_nifti_are_refused(kit, tmp_path, suffix, bad):
    array = random_volume((6, 16, 16)).array
    array[3, 5, 7] = bad
    source = tmp_path / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(source))  # SimpleITK reads these as 0 HU
    before = digest_tree(tmp_path)
    assert_refused(_translate(kit, source, tmp_path / "out.nii.gz"), "non-finite", str(source))
    assert digest_tree(tmp_path) == before


@pytest.mark.parametrize("value, pixel", [(2e9, "int32"), (-2e9, "int32"), (3e38, "float32"), (-3e38, "float32")])
def test_values_far_beyond_any_ct_scale_are_refused(kit, tmp_path, value, pixel):
    array = random_volume((6, 16, 16)).array.astype(pixel)
    array[2, 2, 2] = value
    source = tmp_path / "huge.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(source))
    assert_refused(_translate(kit, source, tmp_path / "out.nii.gz"), "outside any CT scale")
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_model_with_enormous_weights_writes_nothing(kit, tmp_path):
    generator = random_generator(ngf=2, depth=1, residual=True)
    for parameter in generator.parameters():
        parameter.data.fill_(1e30)
    model = save_model(tmp_path / "huge.safetensors", generator, metadata_for("kernel"))
    run = run_revgan(["translate", kit["scan"], tmp_path / "out.nii.gz", "--model", model, "--device", "cpu"])
    assert_refused(run, "model")
    assert not (tmp_path / "out.nii.gz").exists() and not hidden_leftovers(tmp_path)


def test_super_resolution_of_a_two_slice_volume_is_sane_and_repeatable(kit, tmp_path):
    source = write_volume(random_volume((2, 16, 16), seed=3), tmp_path / "two.nii.gz")
    outputs = [tmp_path / f"sr{i}.nii.gz" for i in range(2)]
    for output in outputs:
        run = run_revgan(["super-resolve", source, output, "--model", kit["sr"], "--device", "cpu", "--quiet"])
        assert run.returncode == 0, run.stderr
    first, second = (read_volume(o).array for o in outputs)
    assert first.shape == (8, 32, 32)
    assert np.array_equal(first, second)  # B-spline on 2 slices gave different garbage each run
    assert -2000 < first.min() and first.max() < 2000  # was 95-100% of voxels at +-32767


def test_a_tile_that_recomputes_the_volume_many_times_over_is_refused_with_a_suggestion(kit, tmp_path):
    source = write_volume(random_volume((64, 128, 128), seed=2), tmp_path / "big.nii.gz")
    started = time.monotonic()
    line = assert_refused(_translate(kit, source, tmp_path / "out.nii.gz", "--tile", "30"), "times over",
                          "use a larger tile")
    assert time.monotonic() - started < 60 and "e.g." in line
    assert not (tmp_path / "out.nii.gz").exists()


def test_an_input_that_is_a_pipe_is_refused_without_blocking(kit, tmp_path):
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    assert_refused(_translate(kit, fifo, tmp_path / "out.nii.gz", timeout=60), "not a regular file")


# --------------------------------------------------------------------------- full disks


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mhd"])
def test_output_beyond_the_file_size_limit_is_refused_before_any_work(kit, work, suffix):
    folder, scan = work
    before = digest_tree(folder)
    run = _translate(kit, scan, folder / f"out{suffix}", file_size_bytes=4096)
    assert_refused(run, "ulimit -f", "nothing was written")  # once: exit 0, a truncated file published
    assert digest_tree(folder) == before


def _in_small_file_system(command, size: str = "1m"):
    """``command`` (argv) run with a fresh tmpfs of ``size`` mounted at its last argument's
    folder, in a user and mount namespace (no privileges needed); None where the kernel
    does not allow that."""
    import shutil

    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size={} tmpfs "$0" && exec "$@"'.format(size),
            str(command[0]), *[str(c) for c in command[1:]]]


def test_a_full_disk_is_refused_before_any_work(kit, tmp_path):
    from hostile_helpers import revgan_command, revgan_environment

    disk = tmp_path / "disk"
    disk.mkdir()
    source = write_volume(random_volume((16, 96, 96), seed=5), tmp_path / "scan.nii.gz")
    translate = revgan_command(["translate", source, disk / "out.nii", "--model", kit["kernel"], "--device", "cpu"])
    command = _in_small_file_system([disk, *translate])
    if command is None:
        pytest.skip("this kernel does not allow an unprivileged tmpfs (unshare -rm)")
    done = subprocess.run(command, capture_output=True, text=True, env=revgan_environment(), timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no space left on the device" in done.stderr and "nothing was written" in done.stderr
    # The output's own size (well under 1 MiB) and the margin are told apart.
    assert re.search(r"the output takes about 0\.\d MiB and 16\.0 MiB more are kept free", done.stderr), done.stderr


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
@pytest.mark.parametrize("damage", ["truncated", "one voxel changed"])
def test_a_short_or_damaged_write_is_caught_by_reading_it_back(tmp_path, suffix, damage):
    """SimpleITK reports no short write; what write_volume verifies before publishing."""
    volume = random_volume((6, 16, 16), seed=4)
    expected = volume.with_array(np.rint(volume.array).astype(np.int16))
    path = tmp_path / f"staged{suffix}"
    sitk.WriteImage(volume_to_image(expected), str(path), useCompression=suffix != ".nii")
    verify_volume_file(path, expected)  # intact: no error
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:len(data) * 2 // 3]
    elif suffix == ".nii":
        data[-7] ^= 0x10
    else:  # change a voxel, then write the file the same way
        changed = expected.array.copy()
        changed[3, 3, 3] += 1
        sitk.WriteImage(volume_to_image(expected.with_array(changed)), str(path), useCompression=True)
        data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data))
    with pytest.raises(OutputError, match="incomplete or differs.*nothing was published"):
        verify_volume_file(path, expected, what="out" + suffix)


def test_scratch_that_cannot_be_reserved_is_an_error_not_a_sigbus(tmp_path):
    code = ("import sys, resource; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096));"
            "from RevGANCore.output import allocate_scratch; from RevGANCore.errors import OutputError\n"
            "try:\n"
            f"    with allocate_scratch({str(tmp_path)!r}, (64, 64, 64), 'float32', 'out.nii') as a: a[:] = 1\n"
            "except OutputError as e: print(e); sys.exit(3)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "cannot reserve 1.0 MiB of scratch space" in done.stdout
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- signals and terminals


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_removes_the_scratch_and_publishes_nothing(kit, tmp_path, signum, exit_code):
    source = write_volume(random_volume((48, 96, 96), seed=5), tmp_path / "big.nii.gz")
    output = tmp_path / "out.nii.gz"
    process = start_revgan(["translate", source, output, "--model", kit["slow"], "--device", "cpu"])
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".revgan-scratch-*")):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.01)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == exit_code, stderr
    assert f"interrupted ({signal.Signals(signum).name})" in stderr and "Traceback" not in stderr
    assert not output.exists() and not hidden_leftovers(tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="leftovers are recognised by file locks (POSIX)")
def test_what_a_killed_run_left_behind_is_swept_by_the_next_and_a_live_runs_never(kit, tmp_path):
    """SIGKILL (or the out-of-memory killer) runs no cleanup: a run's hidden scratch file and
    staging folder stay. The next write into that folder removes them once nobody holds
    their locks; a live process's, however old, stays."""
    from RevGANCore.output import LEFTOVER_MIN_AGE_S, Staging, remove_dead_leftovers

    source = write_volume(random_volume((48, 96, 96), seed=5), tmp_path / "big.nii.gz")
    process = start_revgan(["translate", source, tmp_path / "out.nii.gz", "--model", kit["slow"], "--device", "cpu"])
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".revgan-scratch-*")):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        process.kill()
    left = hidden_leftovers(tmp_path)
    assert left and str(process.pid) in left[0]
    assert remove_dead_leftovers(tmp_path) == []  # too young: its owner may not have locked it yet
    with Staging(tmp_path / "other.nii") as live:  # a live owner, aged like the leftovers
        past = time.time() - 2 * LEFTOVER_MIN_AGE_S
        for path in [*left, live.folder]:
            os.utime(path, (past, past))
        done = run_revgan(["translate", source, tmp_path / "again.nii.gz", "--model", kit["kernel"],
                           "--device", "cpu"])
        assert done.returncode == 0, done.stderr
        assert hidden_leftovers(tmp_path) == [str(live.folder)]
    assert not hidden_leftovers(tmp_path)


@pytest.mark.parametrize("command, size", [("translate", (24, 80)), ("super-resolve", (24, 80)),
                                           ("translate", None)])
def test_commands_work_in_a_real_terminal(kit, work, command, size):
    """A progress bar on a terminal is drawn by tqdm, not by the plain-line fallback that
    every piped test sees; the first command typed in a terminal once crashed there. A
    terminal of unknown size (``script`` without a parent terminal) once got an empty bar."""
    pytest.importorskip("tqdm")
    folder, scan = work
    model = kit["kernel"] if command == "translate" else kit["sr"]
    run = run_revgan_in_terminal([command, scan, folder / "out.nii.gz", "--model", model, "--device", "cpu"],
                                 size=size)
    assert run.returncode == 0, run.stdout
    assert "Traceback" not in run.stdout and "translate: 100%|" in run.stdout and "tile/s" in run.stdout
    assert (folder / "out.nii.gz").is_file()


def test_batch_messages_in_a_terminal_stand_on_their_own_lines(kit, tmp_path):
    """A failed scan's line is printed above the bar, not glued onto the bar's line."""
    import re

    pytest.importorskip("tqdm")
    cohort = tmp_path / "in"
    cohort.mkdir()
    (cohort / "good.nii.gz").write_bytes(Path(kit["scan"]).read_bytes())
    (cohort / "broken.nii.gz").write_bytes(Path(kit["scan"]).read_bytes()[:300])
    run = run_revgan_in_terminal(["batch", "--model", kit["kernel"], cohort, "--out", tmp_path / "out",
                                  "--device", "cpu"])
    assert run.returncode == 1 and "Traceback" not in run.stdout, run.stdout
    lines = re.split(r"[\r\n]", run.stdout)
    assert any(line.startswith("revgan: failed: broken: ") for line in lines), run.stdout
    assert any(line.startswith("batch: 1 done, 0 skipped as already done, 1 FAILED") for line in lines)


@pytest.mark.parametrize("arguments", [["models", "list"], ["models", "show", "kernel"]])
def test_a_reader_that_leaves_early_ends_the_command_quietly(kit, arguments):
    """`revgan models list | head -1`: the pipe closes while revgan still prints. It stops
    with SIGPIPE's status (141) and no traceback, as a pipe-killed program would."""
    from hostile_helpers import revgan_command, revgan_environment

    command = revgan_command([part if part != "kernel" else str(kit["kernel"]) for part in arguments])
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the first line
    try:
        done = subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, text=True,
                              env=revgan_environment(), timeout=120)
    finally:
        os.close(writer)
    assert done.returncode == 128 + signal.SIGPIPE, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
