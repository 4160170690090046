# `make demo` and `make test` are the two commands of the README: each installs
# what is missing (scripts/setup.sh), builds in release mode, then runs.
FER2013_DIR ?= data/fer2013
export FER2013_DIR

VENV := $(CURDIR)/.venv
# torch-sys finds libtorch through the venv's python (LIBTORCH_USE_PYTORCH).
CARGO_ENV := LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV=$(VENV) PATH="$(VENV)/bin:$$PATH"
# Debian's per-module OpenCV packages ship no opencv4.pc: name the libraries.
ifeq ($(shell uname -s),Linux)
CARGO_ENV += OPENCV_LINK_LIBS=opencv_core,opencv_imgproc,opencv_objdetect \
	OPENCV_LINK_PATHS=/usr/lib/$(shell uname -m)-linux-gnu \
	OPENCV_INCLUDE_PATHS=/usr/include/opencv4,/usr/include/$(shell uname -m)-linux-gnu/opencv4
endif
CARGO := $(CARGO_ENV) cargo
# Optional cargo features, e.g. `make build FEATURES=tls` (https tracking servers).
FEATURES ?=
CARGO_FEATURES := $(if $(FEATURES),--features $(FEATURES))
FER := ./target/release/fer

.PHONY: setup build demo demo-sweep test lint bench clean-cache mlflow-up mlflow-down

setup:
	@bash scripts/setup.sh

build: setup
	@[ -x $(FER) ] || echo "build: compiling fer in release mode for the first time (about 6 minutes on 2 cores; later runs take seconds)"
	$(CARGO) build --release $(CARGO_FEATURES)

# The whole harness in about 3 minutes: a local MLflow server, the demo sweep
# (experiments/demo.yaml) logged to it, its report in reports/demo/, then the
# webcam page with the release model; Ctrl-C stops all of it.
demo: build
	$(FER) demo --data "$(FER2013_DIR)"

# The quick sweep: MLP, CNN, ResNet18 and ViT trials on 20% of train.
demo-sweep: build
	$(FER) data stats --data "$(FER2013_DIR)"
	$(FER) sweep experiments/quick.yaml --data "$(FER2013_DIR)"

test: build
	$(CARGO) test --release $(CARGO_FEATURES) -- --test-threads=1

lint: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

bench: build
	$(FER) bench data --data "$(FER2013_DIR)"

# A local MLflow server (sqlite + artifacts under runs/mlflow, 127.0.0.1:5000).
mlflow-up: build
	VIRTUAL_ENV=$(VENV) $(FER) mlflow up

mlflow-down:
	$(FER) mlflow down

clean-cache:
	rm -rf runs/cache
