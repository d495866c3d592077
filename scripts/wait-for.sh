# shellcheck shell=bash
# wait_for SECONDS DESCRIPTION COMMAND...: runs COMMAND (quietly) every 0.2 s until it
# succeeds; after SECONDS, dies naming DESCRIPTION (with the die of the script sourcing this:
# scripts/demo.sh, packaging/test.sh).
wait_for() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what"
        sleep 0.2
    done
}
