# Sourced by scripts/bench-gpu and scripts/symbol-order: the 8-GPU fixture both run containers
# against.
# shellcheck shell=bash

# gpu_fixture WORK NVBIND HOOK: in WORK, `bundle` (busybox, /bin/true), the 8 x H100 fake host
# of cdi/tests/generate_common as `tree`, its spec from `nvbind cdi generate` in `cdi`, an empty
# spec dir `cdi-empty` (the spec made at create time), `gpu` (the bundle asking for
# NVIDIA_VISIBLE_DEVICES=all) and a state root `root`. Sets `tree` and `gen` (the generate
# command line, for timing it again).
gpu_fixture() {
  local work=$1 nvbind=$2 hook=$3
  NVBIND="$nvbind" "$repo/scripts/mkbundle" "$work/bundle" /bin/true >/dev/null
  say "building the 8-GPU fake host tree"
  tree=$work/tree
  NVBIND_BENCH_TREE="$tree" cargo test --release -q -p nvbind-cdi --test generate_bench -- --ignored build_bench_tree >/dev/null
  mkdir -p "$work/cdi" "$work/cdi-empty" "$work/root" "$work/gpu"
  gen="$nvbind cdi generate --vendor nvidia --no-nvml --driver-root $tree --proc-root $tree --sys-root $tree --hook-path $hook --format json"
  $gen >"$work/cdi/nvidia.json"
  chmod 644 "$work/cdi/nvidia.json"
  cp -a "$work/bundle/." "$work/gpu/"
  jq '.process.env += ["NVIDIA_VISIBLE_DEVICES=all"]' "$work/bundle/config.json" >"$work/gpu/config.json"
}
