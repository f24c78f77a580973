#!/usr/bin/env bash
# Create (or update) the project's virtual environment: bash tools/bootstrap.sh [VENV_DIR]
#
# PyTorch is installed explicitly as a CPU build when no torch is importable, because a
# plain `pip install torch` (or any loose range) on Linux pulls a multi-GB CUDA build.
# The package itself only asks for `torch>=2.1`, so an existing torch (Slicer's PyTorch
# extension, a CUDA build you installed yourself) is kept as it is.
set -euo pipefail

venv="${1:-.venv}"
python="${PYTHON:-python3}"
torch_version="${REVGAN_TORCH_VERSION:-2.13.0}"
extras="${REVGAN_EXTRAS:-test}"

if [ ! -x "$venv/bin/python" ]; then
    echo "bootstrap: creating $venv with $($python --version)"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "bootstrap: installing the CPU build of torch $torch_version"
    # 1) a local CPU wheel (these build machines keep one on disk);
    # 2) PyTorch's CPU index (ordinary Linux and Windows machines);
    # 3) plain PyPI, which is a CPU build on macOS.
    "${pip[@]}" install "torch==${torch_version}+cpu" 2>/dev/null \
      || "${pip[@]}" install "torch==${torch_version}+cpu" \
           --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple 2>/dev/null \
      || { [ "$(uname -s)" = "Darwin" ] && "${pip[@]}" install "torch==${torch_version}"; } \
      || { echo "bootstrap: could not install a CPU build of torch; install torch>=2.1 into $venv yourself" >&2; exit 1; }
fi

echo "bootstrap: installing RevGANCore (editable) with extras [$extras]"
"${pip[@]}" install -e ".[${extras}]"
"$venv/bin/python" -c "import torch, RevGANCore; print('bootstrap: torch', torch.__version__, '| RevGANCore', RevGANCore.__version__)"
