//! The generator is meant to run at every boot and driver change: discovery + generation for
//! the 8-GPU fake host must stay cheap. `build_bench_tree` (ignored) keeps such a tree at
//! $NVBIND_BENCH_TREE for whole-process benchmarks:
//!   NVBIND_BENCH_TREE=/tmp/h100x8 cargo test -p nvbind-cdi --test generate_bench -- --ignored
//!   nvbind cdi generate --driver-root T --proc-root T --sys-root T --hook-path /usr/bin/nvbind-hook

mod generate_common;

use std::path::Path;
use std::time::{Duration, Instant};

use generate_common::*;
use nvbind_cdi::discover::amd::AmdDiscoverer;
use nvbind_cdi::discover::intel::IntelDiscoverer;
use nvbind_cdi::discover::nvidia::{NvidiaDiscoverer, NvmlSource};
use nvbind_cdi::discover::Inventory;
use nvbind_cdi::generate::{render_all, specs_for, NameStrategy};
use nvbind_cdi::spec::Format;

#[test]
#[ignore = "builds a kept tree for scripts/bench; needs NVBIND_BENCH_TREE"]
fn build_bench_tree() {
    let dir = std::env::var_os("NVBIND_BENCH_TREE").expect("set NVBIND_BENCH_TREE");
    let host = FakeHost::at(Path::new(&dir)).h100x8_in();
    println!("8 x H100 fake host at {}", host.root().display());
}

#[test]
fn generate_for_8_gpus_is_fast() {
    let host = FakeHost::h100x8();
    let roots = host.roots();
    let opts = options(NameStrategy::Index);
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..15 {
        let start = Instant::now();
        // What `nvbind cdi generate` does, NVML load attempt included.
        let nvidia = NvidiaDiscoverer {
            nvml: NvmlSource::Load,
        };
        let inv = Inventory::collect(&roots, &[&nvidia, &AmdDiscoverer, &IntelDiscoverer]);
        let specs = specs_for(&inv, &opts, &mut Vec::new());
        bytes = render_all(&specs, Format::Yaml).unwrap().len();
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    println!("discover + generate + render, 8 GPUs: median {median:?} ({bytes} bytes)");
    // Generous for unoptimized builds on a loaded 2-core machine; catches accidental
    // quadratic work (re-reading the ld.so.cache per GPU and the like), not noise.
    assert!(median < Duration::from_millis(100), "median {median:?}");
}
