//! The HTTP client Moat fetches keys and token information with: rustls (ring), the system's
//! roots plus an optional CA file, no redirects, no proxy from the environment, short timeouts.
use std::{path::Path, sync::Arc, time::Duration};

use rustls::pki_types::{CertificateDer, pem::PemObject as _};

/// How long one fetch (connect, send, read) may take.
const TIMEOUT: Duration = Duration::from_secs(5);

pub fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "{}: no PEM certificate in the file",
                path.display()
            ));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .user_agent(concat!("moat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}
