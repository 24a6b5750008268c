//! Certificate and key files: read, parsed and checked (for `check-config` and before they
//! are served). Key files are secret: errors name the file and what is wrong with it,
//! never its contents. Below config and tls, which both use it.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path}: certificate {index} cannot be parsed")]
    BadCertificate { path: String, index: usize },
    // No detail from the parser: it could quote the file, and this one is secret.
    #[error("{path} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    BadKey { path: String },
    #[error("{key} is not the private key of the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error("{path}: certificate {index} ({subject}) expired at {not_after}")]
    Expired {
        path: String,
        index: usize,
        subject: String,
        not_after: String,
    },
    #[error("{path}: certificate {index} ({subject}) is not valid before {not_before}")]
    NotYetValid {
        path: String,
        index: usize,
        subject: String,
        not_before: String,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// rustls with ring, whatever else the dependency tree brings in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in a PEM file, in order (the leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(path)?;
    let mut certs = Vec::new();
    for (index, cert) in CertificateDer::pem_slice_iter(&text).enumerate() {
        certs.push(cert.map_err(|_| TlsError::BadCertificate {
            path: path.display().to_string(),
            index,
        })?);
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|_| TlsError::BadKey {
        path: path.display().to_string(),
    })
}

/// The chain and key, ready to serve, or why not: unreadable, unparsable, or a key that is
/// not the leaf certificate's.
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let signing_key =
        provider()
            .key_provider
            .load_private_key(key)
            .map_err(|_| TlsError::BadKey {
                path: key_file.display().to_string(),
            })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        // A key type whose public half rustls cannot derive: the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(_) => Err(TlsError::KeyMismatch {
            cert: cert_file.display().to_string(),
            key: key_file.display().to_string(),
        }),
    }
}

pub struct Validity {
    pub subject: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

pub fn validity(cert: &CertificateDer<'_>) -> Option<Validity> {
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    let tbs = parsed.tbs_certificate;
    Some(Validity {
        subject: tbs.subject.to_string(),
        not_before: SystemTime::UNIX_EPOCH + tbs.validity.not_before.to_unix_duration(),
        not_after: SystemTime::UNIX_EPOCH + tbs.validity.not_after.to_unix_duration(),
    })
}

pub fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Problems with the validity periods of a file's certificates at `now`.
fn check_validity(path: &Path, certs: &[CertificateDer<'_>], now: SystemTime) -> Vec<TlsError> {
    let mut problems = Vec::new();
    for (index, cert) in certs.iter().enumerate() {
        let Some(validity) = validity(cert) else {
            problems.push(TlsError::BadCertificate {
                path: path.display().to_string(),
                index,
            });
            continue;
        };
        if validity.not_after < now {
            problems.push(TlsError::Expired {
                path: path.display().to_string(),
                index,
                subject: validity.subject,
                not_after: rfc3339(validity.not_after),
            });
        } else if validity.not_before > now {
            problems.push(TlsError::NotYetValid {
                path: path.display().to_string(),
                index,
                subject: validity.subject,
                not_before: rfc3339(validity.not_before),
            });
        }
    }
    problems
}

/// For `check-config`: every problem with a certificate chain and its key.
pub fn check_cert_and_key(cert_file: &Path, key_file: &Path, now: SystemTime) -> Vec<TlsError> {
    let mut problems = Vec::new();
    let certs = load_certs(cert_file).map_err(|e| problems.push(e)).ok();
    let key = load_key(key_file).map_err(|e| problems.push(e)).ok();
    if let Some(certs) = &certs {
        problems.extend(check_validity(cert_file, certs, now));
    }
    if certs.is_some() && key.is_some() {
        if let Err(e) = load_certified_key(cert_file, key_file) {
            problems.push(e);
        }
    }
    problems
}

/// For `check-config`: a CA file holds certificates and none has expired.
pub fn check_ca_file(path: &Path, now: SystemTime) -> Vec<TlsError> {
    match load_certs(path) {
        Ok(certs) => check_validity(path, &certs, now),
        Err(e) => vec![e],
    }
}
