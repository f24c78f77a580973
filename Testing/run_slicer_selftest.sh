#!/usr/bin/env bash
# Run the module's self-test (RevGANSlicerTest) inside a real 3D Slicer.
#
#   SLICER_EXECUTABLE=/path/to/Slicer Testing/run_slicer_selftest.sh
#
# Without SLICER_EXECUTABLE it prints that it SKIPPED and exits 0 (there is no Slicer on
# the build machines; pytest covers what runs without one). Exit status: 0 passed or
# skipped, 1 failed, 2 SLICER_EXECUTABLE is not an executable.
#
# Options through the environment:
#   SLICER_SELFTEST_ARGS   extra Slicer arguments, e.g. "--no-main-window" on a headless
#                          machine (the layout check then runs on MRML nodes only)
#   SLICER_SELFTEST_NAME   a single test, e.g. "RevGANSlicer.RevGANSlicerTest.test_SuperResolution"
#   REVGAN_SELFTEST_SKIP_INFERENCE=1   no PyTorch install, no inference (what the ctest on the
#                          extension build machines sets); the panel, model cards and layout still run
#   REVGAN_SELFTEST_INSTALL_TORCH=1    let a Slicer without PyTorch download it (otherwise
#                          the tests that run models are skipped there)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
module_dir="$root/RevGANSlicer"
test_name="${SLICER_SELFTEST_NAME:-RevGANSlicer}"

if [ -z "${SLICER_EXECUTABLE:-}" ]; then
    echo "run_slicer_selftest: SKIPPED: SLICER_EXECUTABLE is not set, so RevGANSlicerTest did not run."
    echo "run_slicer_selftest: set it to a Slicer executable (5.8 or newer) to run the self-test."
    exit 0
fi
if [ ! -x "$SLICER_EXECUTABLE" ]; then
    echo "run_slicer_selftest: ERROR: SLICER_EXECUTABLE=$SLICER_EXECUTABLE is not an executable file" >&2
    exit 2
fi

echo "run_slicer_selftest: running $test_name with $SLICER_EXECUTABLE"
# --testing: Slicer's test mode (dialogs auto-answered, pip installs skipped by pip_ensure);
# the module is found through --additional-module-paths, RevGANCore one folder up.
set +e
# shellcheck disable=SC2086
"$SLICER_EXECUTABLE" --no-splash --testing --disable-settings \
    --additional-module-paths "$module_dir" ${SLICER_SELFTEST_ARGS:-} \
    --python-code "import slicer.testing; slicer.testing.runUnitTest(['$module_dir'], '$test_name')"
status=$?
set -e
if [ "$status" -eq 0 ]; then
    echo "run_slicer_selftest: PASSED"
else
    echo "run_slicer_selftest: FAILED (exit status $status)" >&2
    status=1
fi
exit "$status"
