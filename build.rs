//! Release builds of the `nvbind` binary lay out their machine code in the order of
//! build/symbol-order.txt: the functions a container's lifecycle runs (`scripts/symbol-order`
//! records them from a real run), first and together at the start of .text. Every nvbind
//! process faults its code in by 64 KiB windows (the kernel's fault-around); scattered over
//! the 7.5 MB of .text, a `run` touched 4.2 MB of it, laid out so 1.2 MB (bench/analysis.md,
//! session 10: peak RSS 7.4 -> 4.5 MB, 137 fewer page faults, about 1.1 ms less CPU a run).
//!
//! Only where the linker is LLD, which takes `--symbol-ordering-file`: rustc 1.90+ links
//! x86_64-unknown-linux-gnu with it by default (GNU ld would refuse the option). A symbol of
//! the file that the binary no longer has is skipped silently; `NVBIND_NO_SYMBOL_ORDER=1`
//! leaves the option out (a build with another linker).

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("build/symbol-order.txt");
    println!("cargo::rerun-if-changed={}", order.display());
    println!("cargo::rerun-if-env-changed=NVBIND_NO_SYMBOL_ORDER");
    let var = |k: &str| env::var(k).unwrap_or_default();
    if var("PROFILE") != "release"
        || env::var_os("NVBIND_NO_SYMBOL_ORDER").is_some_and(|v| v == "1")
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || !order.is_file()
        || !rustc_links_with_lld()
    {
        return;
    }
    println!(
        "cargo::rustc-link-arg-bin=nvbind=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo::rustc-link-arg-bin=nvbind=-Wl,--no-warn-symbol-ordering");
}

/// rustc 1.90 and later (`rustc -vV`'s "release:" line): LLD is their default linker here.
fn rustc_links_with_lld() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(release) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
