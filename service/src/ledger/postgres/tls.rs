//! PostgreSQL over TLS with rustls (ring), from the database URL as libpq reads it:
//! `sslmode=require` (or `verify-ca`, `verify-full`) turns TLS on, and `sslrootcert=PATH`
//! names the CA to trust (default: the system's roots). rustls always checks the
//! server's certificate chain and name, so every TLS mode here is `verify-full`.
//! `prefer` and `allow` connect without TLS, as `disable` does: a TLS attempt that fails
//! verification would otherwise stop the connection rather than fall back.

use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::ledger::LedgerError;

/// How connections to the database are made.
#[derive(Clone)]
pub(super) enum DatabaseTls {
    Off,
    On(MakeRustlsConnect),
}

/// The connection settings and TLS of a `postgres://` URL.
pub(super) fn parse_url(url: &str) -> Result<(tokio_postgres::Config, DatabaseTls), LedgerError> {
    let bad = |problem: String| LedgerError::Unavailable(format!("bad database URL: {problem}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut root_cert = None;
    let mut tls = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (percent_decoded(key), percent_decoded(value));
        match (key.as_str(), value.as_str()) {
            ("sslrootcert", path) => root_cert = Some(path.to_owned()),
            ("sslmode", "require" | "verify-ca" | "verify-full") => tls = true,
            ("sslmode", "disable" | "allow" | "prefer") => {}
            ("sslmode", other) => return Err(bad(format!("unknown sslmode {other:?}"))),
            _ => kept.push(pair),
        }
    }
    let rebuilt = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    };
    let mut config = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| bad(e.to_string()))?;
    // Never weaker than what the URL asks for, however it was spelled.
    tls |= config.get_ssl_mode() == SslMode::Require;
    if !tls {
        config.ssl_mode(SslMode::Disable);
        if !only_local_hosts(&config) {
            tracing::warn!(
                "the ledger database is not on this machine and its URL does not ask for TLS: \
                 add sslmode=require (and sslrootcert=PATH for a private CA)"
            );
        }
        return Ok((config, DatabaseTls::Off));
    }
    config.ssl_mode(SslMode::Require);
    let roots = trusted_roots(root_cert.as_deref()).map_err(bad)?;
    // The crate's one crypto provider: ring (the workspace builds rustls without aws-lc).
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((config, DatabaseTls::On(MakeRustlsConnect::new(client))))
}

/// Whether every host the configuration names is a socket or a loopback address.
fn only_local_hosts(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    })
}

/// `text` with its `%XX` escapes decoded, as a URL's query values are.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The CA certificates in `path`, or the system's roots without one.
fn trusted_roots(path: Option<&str>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match path {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| format!("reading sslrootcert {path}: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path} holds no certificate"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "sslmode asks for TLS, but the system has no trusted roots: set sslrootcert"
                        .into(),
                );
            }
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_sslmode_asking_for_it_there_is_no_tls() {
        for url in [
            "postgres://u@h/db",
            "postgres://u@h/db?sslmode=prefer",
            "postgres://u@h/db?sslmode=disable&connect_timeout=5",
        ] {
            let (config, tls) = parse_url(url).unwrap();
            assert!(matches!(tls, DatabaseTls::Off), "{url}");
            assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        }
    }

    #[test]
    fn libpq_ssl_options_are_understood_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let url = format!(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert={}",
            missing.display()
        );
        let error = parse_url(&url).err().unwrap().to_string();
        assert!(error.contains("sslrootcert"), "{error}");
        assert!(parse_url("postgres://u@h/db?sslmode=bogus").is_err());
        let (_, tls) = parse_url("postgres://u@h/db?ssl%6Dode=require").unwrap();
        assert!(
            matches!(tls, DatabaseTls::On(_)),
            "an escaped key is understood"
        );
        let (config, _) = parse_url("postgres://u@h/db?connect_timeout=7").unwrap();
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
    }
}
