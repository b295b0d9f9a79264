//! `bench proxy --baseline <ref>`: the `moat` of a git ref (e.g. the landed release), built with
//! the release profile in a git worktree and a target directory of its own under
//! `target/bench-baseline/`, so that it runs in the same rounds as the current build.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Result, host, sh};

pub struct Baseline {
    /// As given, e.g. `main`.
    pub reference: String,
    pub commit: String,
    pub moat: PathBuf,
}

/// Checks `reference` out (detached) in the baseline worktree, creating it on first use, and
/// builds its `moat`.
pub fn build(reference: &str) -> Result<Baseline> {
    let workspace = host::workspace();
    let dir = workspace.join("target/bench-baseline");
    let src = dir.join("src");
    let commit = git(
        &workspace,
        &["rev-parse", "--verify", &format!("{reference}^{{commit}}")],
    )?;
    if src.join(".git").exists() {
        sh(Command::new("git")
            .arg("-C")
            .arg(&src)
            .args(["checkout", "--quiet", "--detach", "--force", &commit]))?;
    } else {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // A worktree of an earlier run whose directory is gone.
        git(&workspace, &["worktree", "prune"])?;
        sh(Command::new("git")
            .arg("-C")
            .arg(&workspace)
            .args(["worktree", "add", "--quiet", "--detach", "--force"])
            .arg(&src)
            .arg(&commit))?;
    }
    eprintln!(
        "xtask bench proxy: building the baseline moat ({reference}, {}) in {}",
        &commit[..12],
        src.display()
    );
    let target = dir.join("target");
    sh(Command::new(env!("CARGO"))
        .current_dir(&src)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "moat",
            "--target-dir",
        ])
        .arg(&target))?;
    Ok(Baseline {
        reference: reference.into(),
        commit,
        moat: target.join("release/moat"),
    })
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
