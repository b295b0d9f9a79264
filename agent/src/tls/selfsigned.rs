//! `moat cert self-signed NAME`: a development CA and a certificate for NAME signed by it.
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:?} is not a valid DNS name or IP address")]
    Name(String),
}

pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Writes `NAME.crt` (certificate and CA chain), `NAME.key` and `NAME-ca.crt` (the CA clients
/// trust) into `dir`. The certificate names NAME, localhost, 127.0.0.1 and ::1.
pub fn write(name: &str, dir: &Path) -> Result<Written, CertError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
    {
        return Err(CertError::Name(name.into()));
    }
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("Moat development CA for {name}"),
    );
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec![
        name.to_string(),
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    names.dedup();
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| CertError::Name(n.clone())),
        })
        .collect::<Result<_, _>>()?;
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let out = Written {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join(format!("{name}-ca.crt")),
    };
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|source| CertError::Write {
            path: path.to_owned(),
            source,
        })
    };
    write(&out.cert, format!("{}{}", cert.pem(), ca_cert.pem()))?;
    write(&out.key, key.serialize_pem())?;
    restrict(&out.key);
    write(&out.ca, ca_cert.pem())?;
    Ok(out)
}

fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}
