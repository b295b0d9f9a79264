//! `bench proxy --profile`: where the agent's time goes. The current `moat` is built with frame
//! pointers (release profile, `-C force-frame-pointers=yes`, in `target/bench-profile/` so that
//! the normal build stays as it is) and runs the whole bench; after the measured rounds, `perf
//! record` (Debian's `linux-perf`, installed on first use; the `cpu-clock` event, which VMs
//! without a PMU have too) samples the agent's stacks during an extra wrk run on a target. The
//! stacks become a flame graph (inferno) at `target/bench/flame-<target>.svg`, and the report
//! gives each stage's share of the samples (inclusive: somewhere on the stack; leaf: the
//! sampled frame itself) and the top functions.
use std::{
    collections::HashMap,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use inferno::collapse::{Collapse as _, perf::Folder};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::load::ensure_apt;
use crate::{Result, bench::stats::round3, host, sh};

/// Samples per second and thread.
const FREQUENCY: u32 = 1999;
/// Functions listed per table.
const TOP: usize = 15;
/// Frames on more stacks than this share are the common trunk (thread start, the runtime, the
/// connection's loop): not listed among the top functions by inclusive share.
const TRUNK: f64 = 0.75;

/// The stages of a request, by the functions on the stack (the first pattern that matches a
/// frame names its stage). `_[k]` marks the kernel's frames.
const STAGES: &[(&str, &[&str])] = &[
    ("kernel", &["_[k]"]),
    ("admit", &["moat::http::admit"]),
    (
        "authenticate",
        &["moat::http::authenticate", "moat::auth::", "jsonwebtoken::"],
    ),
    ("session", &["moat::http::session"]),
    ("decode (JSON-RPC)", &["moat::http::decode", "moat::mcp::"]),
    (
        "authorize (Cedar)",
        &["moat::http::authorize", "moat::policy::", "cedar_policy"],
    ),
    ("forward", &["moat::http::forward", "moat::upstream::"]),
    ("respond", &["moat::http::respond", "moat::http::filter"]),
    ("audit", &["moat::audit::"]),
    ("TLS (rustls, ring)", &["rustls::", "ring::", "ring_core_"]),
    (
        "HTTP (hyper)",
        &["hyper::", "hyper_util::", "httparse::", "h2::"],
    ),
    ("JSON (serde_json)", &["serde_json::"]),
    ("hashing, hash maps", &["core::hash::", "hashbrown::"]),
    (
        "memory copies (libc)",
        &["memmove", "memcpy", "memset", "memcmp"],
    ),
    ("runtime (tokio)", &["tokio::"]),
    (
        "allocation",
        &[
            "mi_",
            "mimalloc",
            "__rust_alloc",
            "__rust_dealloc",
            "malloc",
            "free",
            "alloc::",
        ],
    ),
];

/// Builds `moat` with frame pointers; returns its path.
pub fn build_moat() -> Result<PathBuf> {
    let target = host::workspace().join("target/bench-profile");
    eprintln!(
        "xtask bench proxy: building moat with frame pointers in {}",
        target.display()
    );
    sh(Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "moat",
            "--target-dir",
        ])
        .arg(&target)
        .env("RUSTFLAGS", "-C force-frame-pointers=yes"))?;
    Ok(target.join("release/moat"))
}

/// `perf record` of process `pid`, running until `stop`.
pub struct Recording {
    child: Child,
    data: PathBuf,
}

impl Recording {
    pub fn start(pid: u32, data: &Path) -> Result<Self> {
        let perf = ensure_apt("perf", "linux-perf")?;
        if let Some(dir) = data.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let child = Command::new(perf)
            .args(["record", "-q", "-e", "cpu-clock", "-g", "-F"])
            .arg(FREQUENCY.to_string())
            .args(["-p", &pid.to_string(), "-o"])
            .arg(data)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("perf record: {e}"))?;
        // perf attaches to the threads before it samples.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(Self {
            child,
            data: data.to_owned(),
        })
    }

    /// Stops the recording (SIGINT: perf writes its data and exits).
    pub fn stop(mut self) -> Result<PathBuf> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let status = self.child.wait().map_err(|e| format!("perf record: {e}"))?;
        if !self.data.is_file() {
            return Err(format!(
                "perf record ({status}) wrote no {}",
                self.data.display()
            ));
        }
        Ok(self.data.clone())
    }
}

/// One frame's or stage's share of the samples.
pub struct Share {
    pub name: String,
    pub inclusive: f64,
    pub leaf: f64,
}

/// What a recording shows.
pub struct Profile {
    /// The CPU time sampled, seconds (cpu-clock weighs each sample by its period, in ns).
    pub cpu_s: f64,
    pub flame: PathBuf,
    pub stages: Vec<Share>,
    /// The top functions by inclusive share, and by leaf share.
    pub inclusive: Vec<Share>,
    pub leaf: Vec<Share>,
}

/// Folds the stacks of `data` (perf script, inferno), writes the flame graph `flame`, and
/// computes the shares.
pub fn analyse(data: &Path, title: &str, flame: &Path) -> Result<Profile> {
    let perf = ensure_apt("perf", "linux-perf")?;
    let script = Command::new(perf)
        .args(["script", "-i"])
        .arg(data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("perf script: {e}"))?;
    if !script.status.success() {
        return Err(format!(
            "perf script -i {}: {}",
            data.display(),
            script.status
        ));
    }
    let mut options = inferno::collapse::perf::Options::default();
    options.annotate_kernel = true;
    let mut folded = Vec::new();
    Folder::from(options)
        .collapse(BufReader::new(&script.stdout[..]), &mut folded)
        .map_err(|e| format!("folding the stacks: {e}"))?;
    let folded = String::from_utf8_lossy(&folded);
    // Rust's legacy symbols end in a hash (`::h0123456789abcdef`): without it, one name per
    // function.
    let lines: Vec<String> = folded
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').unwrap_or((l, "0"));
            let frames: Vec<&str> = stack.split(';').map(without_hash).collect();
            format!("{} {n}", frames.join(";"))
        })
        .collect();
    if let Some(dir) = flame.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let svg = std::fs::File::create(flame).map_err(|e| format!("{}: {e}", flame.display()))?;
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.into();
    inferno::flamegraph::from_lines(
        &mut options,
        lines.iter().map(String::as_str),
        std::io::BufWriter::new(svg),
    )
    .map_err(|e| format!("{}: {e}", flame.display()))?;
    Ok(shares(&lines, flame))
}

/// `name` without a trailing `::h<16 hex digits>`.
fn without_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

fn stage_of(frame: &str) -> Option<&'static str> {
    STAGES
        .iter()
        .find(|(_, patterns)| patterns.iter().any(|p| frame.contains(p)))
        .map(|(name, _)| *name)
}

/// Shares of the folded `lines` (`frame;frame;... count`).
fn shares(lines: &[String], flame: &Path) -> Profile {
    let mut total = 0u64;
    // name -> (inclusive, leaf) samples.
    let mut functions: HashMap<String, (u64, u64)> = HashMap::new();
    let mut stages: HashMap<&'static str, (u64, u64)> = HashMap::new();
    for l in lines {
        let Some((stack, n)) = l.rsplit_once(' ') else {
            continue;
        };
        let n: u64 = n.parse().unwrap_or(0);
        total += n;
        let frames: Vec<&str> = stack.split(';').collect();
        let mut seen: Vec<&str> = Vec::new();
        let mut seen_stages: Vec<&'static str> = Vec::new();
        for f in &frames {
            if !seen.contains(f) {
                seen.push(f);
                functions.entry(f.to_string()).or_default().0 += n;
            }
            if let Some(s) = stage_of(f).filter(|s| !seen_stages.contains(s)) {
                seen_stages.push(s);
                stages.entry(s).or_default().0 += n;
            }
        }
        if let Some(leaf) = frames.last() {
            functions.entry(leaf.to_string()).or_default().1 += n;
            stages
                .entry(stage_of(leaf).unwrap_or("other"))
                .or_default()
                .1 += n;
        }
    }
    let share = |x: u64| x as f64 / total.max(1) as f64;
    let list = |m: &HashMap<String, (u64, u64)>, by_leaf: bool| {
        let mut v: Vec<Share> = m
            .iter()
            .map(|(name, &(i, l))| Share {
                name: name.clone(),
                inclusive: share(i),
                leaf: share(l),
            })
            .filter(|s| by_leaf || s.inclusive <= TRUNK)
            .collect();
        v.sort_by(|a, b| {
            let key = |s: &Share| if by_leaf { s.leaf } else { s.inclusive };
            key(b).total_cmp(&key(a))
        });
        v.truncate(TOP);
        v
    };
    let mut stage_list: Vec<Share> = STAGES
        .iter()
        .map(|(name, _)| *name)
        .chain(["other"])
        .map(|name| {
            let (i, l) = stages.get(name).copied().unwrap_or_default();
            Share {
                name: name.into(),
                inclusive: share(i),
                leaf: share(l),
            }
        })
        .collect();
    stage_list.sort_by(|a, b| b.leaf.total_cmp(&a.leaf));
    Profile {
        cpu_s: total as f64 / 1e9,
        flame: flame.to_owned(),
        stages: stage_list,
        inclusive: list(&functions, false),
        leaf: list(&functions, true),
    }
}

impl Profile {
    /// For the JSON line.
    pub fn json(&self) -> serde_json::Value {
        let list = |v: &[Share]| {
            v.iter()
                .map(|s| serde_json::json!({"name": s.name, "leaf": round3(s.leaf), "inclusive": round3(s.inclusive)}))
                .collect::<Vec<_>>()
        };
        serde_json::json!({
            "cpu_s": round3(self.cpu_s),
            "flame_graph": self.flame.display().to_string(),
            "stages": list(&self.stages),
            "top_leaf": list(&self.leaf),
            "top_inclusive": list(&self.inclusive),
        })
    }
}

/// Prints the profile of target `label`.
pub fn print(label: &str, p: &Profile) {
    println!();
    println!(
        "profile of the agent under the load of {label} ({:.1} s of its CPU time sampled, cpu-clock at {FREQUENCY} Hz, frame pointers): flame graph {}",
        p.cpu_s,
        p.flame.display()
    );
    println!("  {:<28} {:>7} {:>10}", "stage", "leaf %", "inclusive %");
    for s in &p.stages {
        println!(
            "  {:<28} {:>7.1} {:>10.1}",
            s.name,
            s.leaf * 100.0,
            s.inclusive * 100.0
        );
    }
    println!(
        "  (leaf: samples in the stage's own functions; inclusive: samples with the stage anywhere on the stack; the kernel's frames end in _[k]; other: the rest, libc and std included)"
    );
    for (what, list) in [
        ("leaf", &p.leaf),
        (
            "inclusive share (below the common trunk: on at most 75% of the stacks)",
            &p.inclusive,
        ),
    ] {
        println!("  top functions by {what}:");
        for s in list.iter() {
            println!(
                "    {:>5.1} % leaf {:>5.1} % inclusive  {}",
                s.leaf * 100.0,
                s.inclusive * 100.0,
                shorten(&s.name)
            );
        }
    }
}

/// A frame's name cut to 110 characters.
fn shorten(name: &str) -> String {
    if name.chars().count() <= 110 {
        name.to_string()
    } else {
        name.chars().take(107).collect::<String>() + "..."
    }
}
