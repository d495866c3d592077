# StratusLab: the README contract.
#   make demo   - set up this host, build, start an all-in-one cloud and run one VM
#   make stop   - stop the demo cloud and remove what it made
#   make test   - set up, then unit and end-to-end tests (real libvirt guests)
#   make bench  - benchmarks, printing figures against the goals

CARGO ?= cargo
APPLIANCE := build/appliance
BINDIR ?= /usr/local/bin
CLI_NAMES := run-instance describe-instance kill-instance stop-instance start-instance reboot-instance \
	console-instance events create-group describe-groups delete-group \
	copy-config build-metadata sign-metadata \
	upload-metadata describe-images policy-image deprecate-metadata describe-endorsers register-endorser \
	create-volume describe-volumes update-volume delete-volume attach-volume detach-volume \
	delete-image create-user describe-users update-user delete-user create-join-token revoke-host \
	describe-hosts update-host remove-host fence-host

.PHONY: deps check-tools build release appliance demo stop test unit e2e libcloud bench install packages fmt clippy

deps:
	./scripts/install-deps.sh

# Every program the code, tests and scripts run comes from a package the set-up step installs
# (scripts/tools.sh), so a fresh machine runs what this one runs.
check-tools: deps
	./scripts/check-tools.py --self-test
	./scripts/check-tools.py

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release --workspace --bins

appliance: deps
	./appliance/build.sh $(APPLIANCE)

demo: deps release appliance
	./scripts/demo.sh start

stop:
	./scripts/demo.sh stop

test: deps check-tools appliance
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --exclude stratus-e2e
	./scripts/schemathesis.sh venv
	$(CARGO) test -p stratus-e2e --tests -- --test-threads=2
	./scripts/libcloud.sh test
	./packaging/build.sh --test-build
	./packaging/test.sh

# .deb and .rpm packages of the controller, the agent and the CLI, and the Libcloud driver's
# wheel, into build/packages/ (packaging/README.md).
packages: deps
	./packaging/build.sh

unit:
	$(CARGO) test --workspace --exclude stratus-e2e

# The Libcloud driver's unit and live tests (needs the binaries and the appliance).
libcloud: deps appliance
	$(CARGO) build --workspace --bins
	./scripts/libcloud.sh test

bench: deps release appliance
	./target/release/stratus-bench --appliance $(APPLIANCE)

install: release
	install -m 0755 target/release/stratus-controller target/release/stratus-agent target/release/stratus $(BINDIR)/
	for n in $(CLI_NAMES); do ln -sf stratus $(BINDIR)/stratus-$$n; done

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets
