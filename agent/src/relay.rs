//! The first data path: accept steered connections and relay their bytes to the real server.
use std::{sync::Arc, time::Instant};

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::{audit::AuditLog, config::Config, listen::canonical, upstream::Upstream};

/// Serves steered connections until the listener fails.
pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    upstream: Arc<Upstream>,
    audit: AuditLog,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (config, upstream, audit) = (config.clone(), upstream.clone(), audit.clone());
        tokio::spawn(async move { relay(stream, &config, &upstream, &audit).await });
    }
}

async fn relay(mut client: TcpStream, config: &Config, upstream: &Upstream, audit: &AuditLog) {
    let start = Instant::now();
    let (Ok(peer), Ok(dst)) = (client.peer_addr(), client.local_addr()) else {
        return;
    };
    let (peer, dst) = (canonical(peer), canonical(dst));
    // getsockname() is the original destination: it names the protected server.
    let Some(server) = config.server_by_port(dst.port()) else {
        audit
            .record(
                "connection",
                json!({
                    "server": null,
                    "conn": { "peer": peer.to_string(), "dst": dst.to_string() },
                    "error": "no protected server on this port",
                }),
            )
            .await;
        return;
    };
    let _ = client.set_nodelay(true);
    let mut record = json!({
        "server": server.name,
        "conn": { "peer": peer.to_string(), "dst": dst.to_string() },
    });
    match upstream.connect(server.upstream).await {
        Ok(mut up) => {
            let connect_ms = start.elapsed().as_secs_f64() * 1e3;
            let copied = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            record["upstream"] = json!({
                "addr": server.upstream.to_string(),
                "connect_ms": (connect_ms * 1000.0).round() / 1000.0,
            });
            match copied {
                Ok((to_server, to_client)) => {
                    record["bytes"] = json!({ "to_server": to_server, "to_client": to_client })
                }
                Err(e) => record["error"] = json!(format!("relay: {e}")),
            }
        }
        Err(e) => {
            tracing::warn!(server = %server.name, "upstream: {e}");
            record["upstream"] = json!({ "addr": server.upstream.to_string() });
            record["error"] = json!(e.to_string());
        }
    }
    record["ms"] = json!((start.elapsed().as_secs_f64() * 1e6).round() / 1e3);
    audit.record("connection", record).await;
}
