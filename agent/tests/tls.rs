//! TLS tests: SNI picks among a server's certificates, certificates reload when their files
//! change without dropping open connections, and a broken file keeps the old one (on a plain
//! host, no root); a certificate that does not load stops the agent before anything is
//! attached (privileged).
mod common;

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use common::*;

/// curl on the host: POSTs a ping to https://NAME:PORT/mcp (NAME resolved to 127.0.0.1, PORT
/// the host's), trusting only `ca`. Ok(body) or Err(curl's error).
fn curl(host: &Host, name: &str, ca: &Path) -> Result<String, String> {
    let port = host.port();
    let url = format!("https://{name}:{port}/mcp");
    let out = host
        .command(
            "curl",
            &[
                "-sS",
                "-m",
                "10",
                "--resolve",
                &format!("{name}:{port}:127.0.0.1"),
                "--cacert",
                ca.to_str().unwrap(),
            ],
        )
        .args([
            "-X",
            "POST",
            &url,
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn sni_picks_the_certificate_for_the_name_the_client_asks_for() {
    let mut host = Host::plain();
    let dir = host.dir.join("certs");
    let (a_crt, a_key, a_ca) = cert(&dir, "alpha.test");
    let (b_crt, b_key, b_ca) = cert(&dir, "beta.test");
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {}\n    upstream: {}\n    allowed_hosts: [alpha.test, beta.test]\n    tls:\n      \
         - {{cert: {}, key: {}}}\n      - {{cert: {}, key: {}}}\n    dangerous: {{unauthenticated: true}}\n",
        host.port(),
        host.upstream(),
        a_crt.display(),
        a_key.display(),
        b_crt.display(),
        b_key.display()
    ));
    host.start_server(host.upstream_port());
    host.start_agent();
    assert!(curl(&host, "alpha.test", &a_ca).unwrap().contains("peer"));
    assert!(curl(&host, "beta.test", &b_ca).unwrap().contains("peer"));
    // Each name gets its own certificate: the other CA does not verify it.
    assert!(curl(&host, "beta.test", &a_ca).is_err());
    assert!(curl(&host, "alpha.test", &b_ca).is_err());
}

#[test]
fn certificates_reload_without_a_restart_and_open_streams_survive() {
    let mut host = Host::plain();
    let (old_dir, new_dir) = (host.dir.join("old"), host.dir.join("new"));
    let (crt, key, old_ca) = cert(&old_dir, "localhost");
    let (new_crt, new_key, new_ca) = cert(&new_dir, "localhost");
    host.write_config(&format!(
        "servers:\n  - name: files\n    port: {}\n    upstream: {}\n    tls: {{cert: {}, key: {}}}\n    dangerous: {{unauthenticated: true}}\n",
        host.port(),
        host.upstream(),
        crt.display(),
        key.display()
    ));
    let upstream = host.start_server(host.upstream_port());
    host.start_agent();
    assert!(curl(&host, "localhost", &old_ca).is_ok());

    // A long response stream, open across the reload.
    let stream_out = host.dir.join("stream.out");
    let mut stream = host
        .command(
            "curl",
            &[
                "-sS",
                "-N",
                "-m",
                "30",
                "--cacert",
                old_ca.to_str().unwrap(),
                "-X",
                "POST",
            ],
        )
        .args([
            &format!("https://localhost:{}/mcp", host.port()),
            "-H",
            "content-type: application/json",
        ])
        .args([
            "-d",
            r#"{"jsonrpc":"2.0","id":5,"method":"stream"}"#,
            "-o",
            stream_out.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the stream to start", || {
        std::fs::metadata(&stream_out).is_ok_and(|m| m.len() > 0)
    });

    std::fs::copy(&new_crt, &crt).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    wait_until("the new certificate", || {
        curl(&host, "localhost", &new_ca).is_ok()
    });
    assert!(
        curl(&host, "localhost", &old_ca).is_err(),
        "the old certificate is no longer served"
    );
    host.wait_audit("the reload", |r| r["event"] == "tls_reloaded");

    let before = std::fs::metadata(&stream_out).unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        stream.try_wait().unwrap().is_none(),
        "the open stream was dropped by the reload"
    );
    assert!(
        std::fs::metadata(&stream_out).unwrap().len() > before,
        "the open stream still flows"
    );
    let _ = stream.kill();
    let _ = stream.wait();

    // A broken file keeps the working certificate, and says so.
    std::fs::write(
        &crt,
        "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    host.wait_audit("the failed reload", |r| {
        r["event"] == "tls_reload_failed" && r["error"].is_string()
    });
    assert!(
        curl(&host, "localhost", &new_ca).is_ok(),
        "still served with the last good certificate"
    );
    assert!(upstream.count() >= 3);
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_certificate_that_does_not_load_is_a_config_error_naming_the_file() {
    if !privileged() {
        return;
    }
    let host = Host::new();
    let dir = host.dir.join("certs");
    let (crt, _key, _ca) = cert(&dir, "localhost");
    let (_other_crt, other_key, _) = cert(&host.dir.join("other"), "localhost");
    let missing = dir.join("missing.key");
    for (key, expect) in [
        (missing.clone(), missing.display().to_string()),
        (other_key, "does not match".to_string()),
    ] {
        host.write_config(&format!(
            "servers:\n  - name: files\n    port: {PORT}\n    tls: {{cert: {}, key: {}}}\n    dangerous: {{unauthenticated: true}}\n",
            crt.display(),
            key.display()
        ));
        host.assert_config_refused(&["server `files`", &expect]);
    }
    assert!(
        !host.bpffs.exists(),
        "nothing is attached when a certificate does not load"
    );
}
