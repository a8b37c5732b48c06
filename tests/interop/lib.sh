# Shared by the scripts that drive real software: installs what is missing with apt-get.
# Sourced, not run.

# install_missing LABEL "COMMAND PACKAGE..." ...: for each COMMAND not on PATH, installs
# its PACKAGEs (one apt-get update and one install for all), saying so under LABEL.
install_missing() {
    local label=$1 spec cmd pkgs need=()
    shift
    for spec in "$@"; do
        read -r cmd pkgs <<<"$spec"
        # shellcheck disable=SC2206 # the package list is meant to split
        command -v "$cmd" >/dev/null 2>&1 || need+=($pkgs)
    done
    ((${#need[@]})) || return 0
    echo "$label: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
}
