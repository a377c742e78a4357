# shellcheck shell=bash
# cross/common.sh: helpers that cross/build, cross/test and cross/package
# source: reading the target list (cross/targets), installing what a target
# needs (Debian packages, rustup targets and components, only when missing),
# building one target and reading .cargo/config.toml's runner. It runs
# nothing by itself.

cross_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$cross_dir/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
# Where cross/build puts the stripped binaries and the packages.
out_dir=$target_dir/cross

section() { printf '\n==== %s ====\n' "$*"; }
die() {
  printf 'cross: %s\n' "$*" >&2
  exit 1
}

# Every target row of cross/targets as "target std debian test budget openwrt
# enigma2", comments and blank lines left out.
target_rows() {
  awk '!/^[[:space:]]*#/ && NF { print $1, $2, $3, $4, $5, $6, $7 }' "$cross_dir/targets"
}

# Field NAME of target TARGET (columns as in cross/targets).
target_field() {
  local target=$1 name=$2 index
  case $name in
    std) index=2 ;; debian) index=3 ;; test) index=4 ;; budget) index=5 ;;
    openwrt) index=6 ;; enigma2) index=7 ;;
    *) die "unknown column $name" ;;
  esac
  awk -v t="$target" -v i="$index" '!/^[[:space:]]*#/ && $1 == t { print $i; found = 1 } END { exit !found }' \
    "$cross_dir/targets" || die "target $target is not in cross/targets"
}

all_targets() { target_rows | cut -d' ' -f1; }

# The version of the workspace (Cargo.toml [workspace.package]).
workspace_version() {
  awk -F'"' '/^\[workspace.package\]/ { in_section = 1; next }
             /^\[/ { in_section = 0 }
             in_section && /^version/ { print $2; exit }' "$root/Cargo.toml"
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages given (comma or space separated, `name:arch`
# allowed) that are not installed yet. Foreign architectures (armhf, armel)
# are added to dpkg first when a package asks for one.
ensure_debian_packages() {
  local wanted=() missing=() package arch
  read -r -a wanted <<<"${*//,/ }"
  for package in "${wanted[@]}"; do
    [[ $package == - || -z $package ]] && continue
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$package")
    fi
  done
  ((${#missing[@]})) || return 0
  for package in "${missing[@]}"; do
    if [[ $package == *:* ]]; then
      arch=${package#*:}
      if [[ $arch != "$(dpkg --print-architecture)" ]] &&
        ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        echo "adding dpkg architecture $arch"
        as_root dpkg --add-architecture "$arch"
      fi
    fi
  done
  echo "installing Debian packages: ${missing[*]}"
  # A mirror that is mid-sync can fail one index (seen with the armhf
  # security list); the main lists are enough for these packages.
  as_root apt-get update -qq || echo "apt-get update reported errors; trying the install anyway"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Installs what building TARGET needs: its Debian packages, and its rustup
# std (std=rustup) or rust-src (std=build-std).
ensure_target() {
  local target=$1
  ensure_debian_packages "$(target_field "$target" debian)"
  case $(target_field "$target" std) in
    rustup)
      if ! rustup target list --installed | grep -qx "$target"; then
        echo "rustup target add $target"
        rustup target add "$target"
      fi
      ;;
    build-std)
      if ! rustup component list --installed | grep -q '^rust-src'; then
        echo "rustup component add rust-src"
        rustup component add rust-src
      fi
      ;;
  esac
}

# Extra cargo arguments for TARGET: -Zbuild-std where rustup has no std.
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept -Z flags; it is set only
# for those builds (see cross/README.md).
cargo_for() {
  local target=$1
  shift
  if [[ $(target_field "$target" std) == build-std ]]; then
    # Release builds abort on panic (workspace profile); test binaries
    # unwind, and cargo's default crate set for -Zbuild-std covers that.
    local build_std=-Zbuild-std=std,panic_abort
    [[ ${1:-} == test ]] && build_std=-Zbuild-std
    RUSTC_BOOTSTRAP=1 cargo "$@" --target "$target" "$build_std"
  else
    cargo "$@" --target "$target"
  fi
}

# The runner of TARGET in .cargo/config.toml as words ("" when none: native).
runner_of() {
  local target=$1
  awk -v section="[target.$target]" '
    $0 == section { in_section = 1; next }
    /^\[/ { in_section = 0 }
    in_section && /^runner *=/ {
      sub(/^runner *= *\[/, ""); sub(/\].*$/, "")
      gsub(/"/, ""); gsub(/, */, " "); print; exit
    }' "$root/.cargo/config.toml"
}

# Path of the release binary cargo leaves for TARGET.
cargo_binary() { echo "$target_dir/$1/release/ringcast"; }

# Path of the stripped copy cross/build keeps for TARGET.
stripped_binary() { echo "$out_dir/bin/$1/ringcast"; }

# The ELF machine (e_machine) of FILE as a number: 183 aarch64, 40 arm,
# 62 x86_64.
elf_machine() {
  od -An -t u2 -j 18 -N 2 "$1" | tr -d ' '
}

# Expected e_machine for TARGET.
expected_machine() {
  case $1 in
    aarch64-*) echo 183 ;; arm*) echo 40 ;; x86_64-*) echo 62 ;;
    *) die "no ELF machine known for $1" ;;
  esac
}
