#!/usr/bin/env bash
# `make packages`: the .deb and .rpm packages of the controller, the agent and the CLI, built
# from the workspace version into build/packages/ (see packaging/README.md).
#
#   packaging/build.sh [--out DIR] [--version VERSION] [--deb-only] [--test-build]
#
#   1. cargo-deb and cargo-generate-rpm, installed from crates.io into build/tools/ at the
#      versions below with a cheap profile (skipped when those versions are already there);
#   2. the binaries with the `packages` profile (Cargo.toml), and packaging/docgen;
#   3. docgen writes the man pages, shell completions and stratus-* links into
#      build/packages/gen/<part>/ (the packages' metadata in agent/, controller/ and cli/Cargo.toml
#      takes them from there);
#   4. one .deb (and .rpm) per daemon and the CLI into DIR (default build/packages/), and the
#      Libcloud driver's wheel (scripts/libcloud.sh wheel).
#
# --version overrides the package version (the upgrade test builds a second, higher one);
# --deb-only skips the .rpm files; --test-build packages the binaries of the everyday dev build
# (`cargo build --workspace --bins`, which make test has just made), stripped, instead of
# building optimised ones: packaging/test.sh tests the packages, not the compiler, and this
# saves make test a second build of the workspace. Sites use `make packages`.
set -euo pipefail

readonly ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly TOOLS=$ROOT/build/tools
readonly GEN=$ROOT/build/packages/gen
readonly CARGO_DEB_VERSION=3.8.0
readonly CARGO_GENERATE_RPM_VERSION=0.21.1
readonly PACKAGES=(controller agent cli)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$ROOT/build/packages
VERSION=
DEB_ONLY=0
PROFILE=packages

log() { printf 'packages: %s\n' "$*"; }
die() { printf 'packages: ERROR: %s\n' "$*" >&2; exit 1; }

while (($#)); do
    case $1 in
    --out) OUT=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --deb-only) DEB_ONLY=1; shift ;;
    --test-build) PROFILE=packages-test; shift ;;
    *) die "usage: $0 [--out DIR] [--version VERSION] [--deb-only] [--test-build]" ;;
    esac
done

# install_tool CRATE VERSION: into build/tools, unless that version is already there. The tools
# only package files: they are built to compile fast, not to run fast.
install_tool() {
    local crate=$1 version=$2
    if [[ -x $TOOLS/bin/$crate ]] && cargo install --list --root "$TOOLS" | grep -qxF "$crate v$version:"; then
        return
    fi
    log "installing $crate $version into build/tools"
    (
        # Built in a directory of their own that cargo install removes, not the workspace's.
        unset CARGO_TARGET_DIR
        export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
            CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
            CARGO_PROFILE_RELEASE_STRIP=true
        nice -n 10 cargo install --quiet --locked --root "$TOOLS" --version "$version" "$crate"
    )
}

# The RPM scriptlets of the CLI make the stratus-* links (cargo-generate-rpm cannot package
# symbolic links); the names are those docgen linked.
write_cli_scriptlets() {
    local names=() link
    for link in "$GEN"/cli/links/stratus-*; do names+=("${link##*/}"); done
    mkdir -p "$GEN/cli/rpm"
    {
        echo '# stratuslab-cli: the classic stratus-* names, links to stratus.'
        echo 'for name in' "${names[@]}" '; do ln -sfn stratus "/usr/bin/$name"; done'
        echo 'exit 0'
    } >"$GEN/cli/rpm/post_install.sh"
    {
        echo '# stratuslab-cli: on removal (not upgrade), the classic stratus-* links go too.'
        echo 'if [ "$1" -eq 0 ]; then'
        echo '    for name in' "${names[@]}" '; do rm -f "/usr/bin/$name"; done'
        echo 'fi'
        echo 'exit 0'
    } >"$GEN/cli/rpm/post_uninstall.sh"
}

main() {
    cd "$ROOT"
    install_tool cargo-deb "$CARGO_DEB_VERSION"
    [[ $DEB_ONLY == 1 ]] || install_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
    export PATH=$TOOLS/bin:$PATH

    local binary
    if [[ $PROFILE == packages-test ]]; then
        log "packaging the dev build's binaries, stripped (--test-build)"
        nice -n 10 cargo build --quiet --locked --bins \
            -p stratus-controller -p stratus-agent -p stratus-cli -p stratus-docgen
        mkdir -p "$TARGET/$PROFILE"
        for binary in stratus-controller stratus-agent stratus stratus-docgen; do
            strip -o "$TARGET/$PROFILE/$binary" "$TARGET/debug/$binary"
        done
    else
        log "building the binaries (profile packages)"
        nice -n 10 cargo build --quiet --locked --profile packages --bins \
            -p stratus-controller -p stratus-agent -p stratus-cli -p stratus-docgen
    fi

    rm -rf "$GEN"
    "$TARGET/$PROFILE/stratus-docgen" "$GEN"
    gzip -9n "$GEN"/*/man/*
    write_cli_scriptlets

    mkdir -p "$OUT"
    local package deb_version=() rpm_version=()
    if [[ -n $VERSION ]]; then
        deb_version=(--deb-version "$VERSION-1")
        rpm_version=(--set-metadata "version = \"$VERSION\"")
    fi
    for package in "${PACKAGES[@]}"; do
        cargo deb --quiet --no-build --no-strip --profile "$PROFILE" -p "stratus-$package" \
            "${deb_version[@]}" --output "$OUT/" >/dev/null
        [[ $DEB_ONLY == 1 ]] && continue
        cargo generate-rpm --profile "$PROFILE" -p "$package" "${rpm_version[@]}" --output "$OUT/"
    done
    # The Libcloud driver, as a Python wheel (its virtualenv has the build tools, from PyPI).
    "$ROOT/scripts/libcloud.sh" wheel "$OUT" >/dev/null
    log "built into ${OUT#"$ROOT"/}:"
    local file
    for file in "$OUT"/*.deb "$OUT"/*.rpm "$OUT"/*.whl; do
        [[ -e $file ]] && printf '  %s\n' "${file##*/}"
    done
    return 0
}

main
