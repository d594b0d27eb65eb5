//! Test certificates made on the fly with rcgen: a CA, a server certificate for
//! `localhost` and `127.0.0.1`, and client certificates naming an owner. Nothing is
//! committed; each [`TestPki`] writes its PEM files to a temporary directory.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use tempfile::TempDir;

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Pem {
    pub certificate: String,
    pub key: String,
}

/// A CA of the test's own, and the files a server needs.
pub struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: TempDir,
}

impl TestPki {
    pub fn new() -> Self {
        Self::named("Transfer test CA")
    }

    /// A CA with its own name (a second, unrelated CA for "wrong CA" tests).
    pub fn named(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        Self {
            ca,
            dir: tempfile::tempdir().expect("a directory for certificates"),
        }
    }

    /// The CA's certificate, PEM: what clients trust.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn server(&self) -> Pem {
        let params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .expect("server parameters");
        self.sign(params)
    }

    /// A client certificate with `cn` as its common name and, when given, `uri` as its
    /// URI subject alternative name.
    pub fn client(&self, cn: &str, uri: Option<&str>) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().expect("an ASCII URI")));
        }
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pem {
        let key = KeyPair::generate().expect("a key");
        let certificate = params.signed_by(&key, &self.ca).expect("signing");
        Pem {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes `contents` to a file of this PKI's directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("writing a PEM file");
        path
    }

    /// Sets `settings` up to serve TLS with a server certificate of this CA, and, when
    /// `client_certificates`, to accept client certificates it signed.
    pub fn configure_server(
        &self,
        settings: &mut transfer_service::Settings,
        client_certificates: bool,
    ) {
        let server = self.server();
        settings.tls_cert = Some(self.write("server.pem", &server.certificate));
        settings.tls_key = Some(self.write("server.key", &server.key));
        if client_certificates {
            settings.tls_client_ca = Some(self.write("ca.pem", &self.ca_pem()));
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
