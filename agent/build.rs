//! Builds the kernel programs (agent-ebpf) for the bpf target and embeds them in the agent.
use aya_build::{Package, Toolchain};

fn main() {
    // The kernel programs need `-Z build-std=core`; allow it on the stable toolchain so one
    // toolchain (with rust-src) builds everything.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf");
    // The kernel programs also change when the types they share with the agent do.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-common")
    );
    aya_build::build_ebpf(
        [Package { name: "agent-ebpf", root_dir: root, ..Default::default() }],
        Toolchain::Custom("stable"),
    )
    .expect("building the kernel programs (agent-ebpf) failed; `cargo xtask setup` installs what they need");
}
