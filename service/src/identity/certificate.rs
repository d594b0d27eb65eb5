//! The owner a client certificate names: its first URI subject alternative name (for
//! example a SPIFFE id, `spiffe://example.org/billing`), or, without one, its subject's
//! common name. The TLS handshake has already checked the chain against
//! `--tls-client-ca`; this only reads the name.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::owner::{Owner, OwnerError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateOwnerError {
    #[error("the client certificate could not be read")]
    Unreadable,
    #[error("the client certificate has neither a URI subject alternative name nor a common name")]
    NoName,
    #[error("the owner the client certificate names {0}")]
    BadName(OwnerError),
}

/// The owner named by a DER-encoded certificate.
pub fn owner_of_certificate(der: &[u8]) -> Result<Owner, CertificateOwnerError> {
    let (_, certificate) =
        X509Certificate::from_der(der).map_err(|_| CertificateOwnerError::Unreadable)?;
    // A subject alternative name that cannot be read is refused, not skipped: the
    // common name must not stand in for a URI the certificate may carry.
    let uri = certificate
        .subject_alternative_name()
        .map_err(|_| CertificateOwnerError::Unreadable)?
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
        });
    let name = match uri {
        Some(uri) => uri.to_owned(),
        None => certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or(CertificateOwnerError::NoName)?
            .to_owned(),
    };
    Owner::parse(name.as_bytes()).map_err(CertificateOwnerError::BadName)
}
