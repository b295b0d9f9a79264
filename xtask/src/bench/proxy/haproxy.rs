//! HAProxy, the in-run reference of `bench proxy`: a plain reverse proxy to the same upstream
//! (its own port there), as HTTP on HAPROXY_PLAIN and as HTTPS with Moat's certificate on
//! HAPROXY_TLS, keeping its upstream connections alive and reusing them (`http-reuse
//! always`), with no logging; run in the lab's namespace as one process (its default
//! threads), installed from Debian on first use.
use std::{
    net::{Ipv4Addr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{HAPROXY_PLAIN, HAPROXY_TLS, HAPROXY_UP, load::ensure_apt};
use crate::{Result, host::Lab};

pub struct Haproxy {
    child: Child,
    pub pid: u32,
    /// `HAProxy version ...`.
    pub version: String,
}

impl Haproxy {
    /// Starts HAProxy in `lab` with the certificate `cert` and its key `key`.
    pub fn start(lab: &Lab, cert: &Path, key: &Path) -> Result<Self> {
        let bin = ensure_apt("haproxy", "haproxy")?;
        let pem = lab.dir.join("haproxy.pem");
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        std::fs::write(&pem, [read(cert)?, read(key)?].concat()).map_err(|e| e.to_string())?;
        let config = lab.dir.join("haproxy.cfg");
        std::fs::write(&config, config_text(&pem)).map_err(|e| e.to_string())?;
        let version = version(&bin);
        let log = std::fs::File::create(lab.dir.join("haproxy.log")).map_err(|e| e.to_string())?;
        // `-db`: in the foreground, one process (no master); `lab.command` execs, so the child
        // is HAProxy itself.
        let child = lab
            .command(&bin)
            .args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut h = Self {
            pid: child.id(),
            child,
            version,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = || {
            [HAPROXY_PLAIN, HAPROXY_TLS]
                .iter()
                .all(|&p| TcpStream::connect((Ipv4Addr::LOCALHOST, p)).is_ok())
        };
        while !lab.in_ns(ready) {
            if Instant::now() > deadline || matches!(h.child.try_wait(), Ok(Some(_))) {
                return Err(format!(
                    "haproxy did not start; see {}",
                    lab.dir.join("haproxy.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(h)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(pem: &Path) -> String {
    format!(
        "global
    maxconn 4096
    tune.ssl.default-dh-param 2048

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend plain
    bind 127.0.0.1:{HAPROXY_PLAIN}
    default_backend upstream

frontend tls
    bind 127.0.0.1:{HAPROXY_TLS} ssl crt {} alpn http/1.1
    default_backend upstream

backend upstream
    http-reuse always
    server up 127.0.0.1:{HAPROXY_UP}
",
        pem.display()
    )
}

/// `HAProxy version 2.6.12-1+deb12u4 2025/...` (the first line of `haproxy -v`).
fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.split(" - ").next().unwrap_or(l).trim().to_owned())
        })
        .unwrap_or_else(|| "haproxy".into())
}
