//! Privileged end-to-end test of the Debian package (cargo-deb) in a throwaway root: dpkg
//! installs it (its maintainer scripts run with `DPKG_ROOT`), the installed agent runs as the
//! unit starts it and protects the port, an upgrade keeps the edited config and the pins, and
//! purging detaches the programs and removes everything.
mod common;

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use common::*;

/// Builds the package of the agent under test, as version `version`.
fn build_deb(out: &Path, version: &str) -> std::path::PathBuf {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let o = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "deb",
            "-p",
            "moat",
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "--fast",
        ])
        .args(["--deb-version", version, "-o"])
        .arg(out)
        .output()
        .expect("cargo deb (cargo xtask setup installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let path = String::from_utf8_lossy(&o.stdout).trim().to_string();
    path.lines().last().unwrap().into()
}

fn dpkg(host: &Host, root: &Path, args: &[&str]) -> String {
    let root_arg = format!("--root={}", root.display());
    let o = host
        .command(
            "dpkg",
            &[
                &[
                    root_arg.as_str(),
                    "--force-script-chrootless",
                    "--force-depends",
                ],
                args,
            ]
            .concat(),
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "dpkg {args:?}: {text}");
    text
}

#[test]
fn the_package_installs_runs_upgrades_and_purges_detaching() {
    if !privileged() {
        return;
    }
    let mut host = Host::new();
    let server = host.start_server(PORT);
    let debs = host.dir.join("debs");
    let (v1, v2) = (
        build_deb(&debs.join("1"), "0.1.0-1"),
        build_deb(&debs.join("2"), "0.1.0-2"),
    );
    let root = host.dir.join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(f), "").unwrap();
    }

    dpkg(&host, &root, &["-i", v1.to_str().unwrap()]);
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("usr/bin/moat"), 0o755);
    assert_eq!(
        mode("etc/moat/moat.yaml"),
        0o600,
        "the config may hold secrets"
    );
    assert_eq!(mode("var/lib/moat"), 0o700);
    assert!(root.join("usr/share/moat/policies/rate-cap.cedar").exists());
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/moat.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/moat run -c /etc/moat/moat.yaml"));

    // Started as the unit starts it (the installed binary, the installed config), after the
    // operator wrote the config.
    let config = root.join("etc/moat/moat.yaml");
    std::fs::copy(&host.config, &config).unwrap();
    host.config = config.clone();
    let installed = root.join("usr/bin/moat");
    let exec = format!("shift; exec {} \"$@\"", installed.display());
    let wrapper = ["sh", "-c", exec.as_str(), "sh"];
    host.start_agent_under(&wrapper, &[]);
    assert!(in_reserved(host.ping_local().unwrap()));

    // An upgrade while the agent runs: the edited config stays, the ports stay protected.
    let edited = std::fs::read_to_string(&config).unwrap();
    dpkg(&host, &root, &["-i", v2.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(in_reserved(host.ping_local().unwrap()));
    // What `systemctl try-restart` does: the agent drains, the new binary adopts the pins.
    host.stop_agent();
    host.start_agent_under(&wrapper, &[]);
    assert!(in_reserved(host.ping_local().unwrap()));
    let answered = server.count();

    // Purge (after `systemctl stop`): the programs are detached and everything is gone.
    host.stop_agent();
    let said = dpkg(&host, &root, &["--purge", "moat"]);
    assert!(
        said.contains("the protected ports are open again"),
        "{said}"
    );
    assert!(!host.bpffs.exists(), "the pins are gone");
    let direct = host.ping_local().unwrap();
    assert!(
        !in_reserved(direct),
        "the server is reached directly: {direct}"
    );
    assert_eq!(server.count(), answered + 1);
    for gone in [
        "usr/bin/moat",
        "etc/moat/moat.yaml",
        "var/lib/moat",
        "usr/lib/systemd/system/moat.service",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is left after purge");
    }
}
