//! TLS at both ends: the certificate gatehouse serves (swapped in place when its files change,
//! so open connections keep theirs), the checks `check-config` runs on certificate files, and
//! the client configuration for routes that pin their upstream's CA or present a certificate.
//!
//! Key files are secret: errors name the file and what is wrong with it, never its contents.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{CertKeyFiles, RouteTlsSettings};
pub use crate::tls_files::{
    check_ca_file, check_cert_and_key, load_certs, load_key, provider, rfc3339, validity, TlsError,
};

/// The chain and key of `files`, ready to serve (see `tls_files::load_certified_key`).
pub fn load_certified_key(files: &CertKeyFiles) -> Result<CertifiedKey, TlsError> {
    crate::tls_files::load_certified_key(&files.cert_file, &files.key_file)
}

/// How often the certificate files' modification times are compared.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// TLS 1.2 and 1.3 only: older versions are refused in the handshake.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

/// Hands every new handshake the current certificate. Replacing it affects only handshakes
/// that start afterwards: a connection keeps the key it was established with.
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(key)),
        }
    }

    fn replace(&self, key: CertifiedKey) {
        // A poisoned lock still holds a whole Arc: nothing can be half-written.
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server side: TLS 1.2 and 1.3, the certificate from `resolver`. actix adds the ALPN
/// protocols (h2, http/1.1) itself.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<rustls::ServerConfig, TlsError> {
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(resolver))
}

/// A short description of the serving certificate for the log: subject and expiry.
fn describe(key: &CertifiedKey) -> String {
    key.end_entity_cert()
        .ok()
        .and_then(validity)
        .map(|v| format!("{} (valid until {})", v.subject, rfc3339(v.not_after)))
        .unwrap_or_else(|| "unparsed certificate".into())
}

/// Reloads the certificate on SIGHUP and when either file changes (polled, so it works
/// wherever a secret mount or an ACME client writes it). A pair that fails to load leaves
/// the current one serving. Ends when the server that uses `resolver` is gone.
///
/// Must be called inside the runtime; the SIGHUP handler is in place when this returns, so
/// a SIGHUP no longer terminates the process.
pub fn spawn_reloader(resolver: &Arc<CertResolver>, files: CertKeyFiles) -> std::io::Result<()> {
    let paths = vec![files.cert_file.clone(), files.key_file.clone()];
    crate::file_watch::spawn(resolver, paths, POLL_INTERVAL, move |resolver, reason| {
        reload(resolver, &files, reason)
    })
}

/// One reload attempt: a pair that fails to load leaves the current one serving.
fn reload(resolver: &CertResolver, files: &CertKeyFiles, reason: &str) {
    match load_certified_key(files) {
        Ok(key) => {
            let certificate = describe(&key);
            resolver.replace(key);
            tracing::info!(reason, %certificate, "TLS certificate reloaded");
        }
        Err(error) => {
            tracing::error!(
                reason,
                %error,
                "TLS certificate not reloaded; still serving the previous one"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Upstream clients
// ---------------------------------------------------------------------------------------

/// Verifies the upstream's certificate against a configured name rather than the URL's host
/// (an upstream reached by IP or an internal alias, whose certificate names the service).
#[derive(Debug)]
struct ExpectedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for ExpectedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client side for one route: its CA only (else the web roots), its client certificate
/// when it has one, its name override; TLS 1.2 and 1.3; HTTP/1.1 (see below).
pub fn upstream_client_config(tls: &RouteTlsSettings) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let verifier: Arc<dyn ServerCertVerifier> = match &tls.server_name {
        Some(name) => Arc::new(ExpectedServerName {
            inner: verifier,
            name: ServerName::try_from(name.clone()).map_err(|_| {
                rustls::Error::General(format!("`{name}` is not a DNS name or IP address"))
            })?,
        }),
        None => verifier,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &tls.client_identity {
        Some(files) => {
            // Loaded here first so that a mismatched key is named as such.
            load_certified_key(files)?;
            builder
                .with_client_auth_cert(load_certs(&files.cert_file)?, load_key(&files.key_file)?)?
        }
        None => builder.with_no_client_auth(),
    };
    // HTTP/1.1 only. In TLS 1.3 an upstream refuses a missing or untrusted client
    // certificate only after the client has finished its handshake: the alert arrives with
    // the first read. Over HTTP/1.1 that read is the request's, and its error carries the
    // alert; over h2 it belongs to hyper's connection task, and the request only learns that
    // the connection closed, so a refused certificate would look like a crashed upstream.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS failure behind a transport error, if that is what it was. rustls errors reach
/// reqwest wrapped in `std::io::Error`, whose `source()` skips the wrapped error, and h2's
/// error has no `source()` at all: both are opened by hand.
pub fn tls_failure<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut depth = 0;
    while let Some(current) = next {
        depth += 1;
        if depth > 32 {
            return None;
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let io = current.downcast_ref::<std::io::Error>().or_else(|| {
            current
                .downcast_ref::<h2::Error>()
                .and_then(h2::Error::get_io)
        });
        if let Some(inner) = io.and_then(std::io::Error::get_ref) {
            if let Some(tls) = tls_failure(inner) {
                return Some(tls);
            }
        }
        next = current.source();
    }
    None
}

// ---------------------------------------------------------------------------------------
// The plain-http redirect listener
// ---------------------------------------------------------------------------------------

/// The https URL for a plain-http request: the public URL (which ends with `/`) followed by
/// the request's path and query. The authority always comes from the configuration, never
/// from the request's Host header.
pub fn https_location(public_url: &url::Url, path: &str, query: &str) -> String {
    let mut location = public_url.as_str().to_owned();
    location.push_str(path.strip_prefix('/').unwrap_or(path));
    if !query.is_empty() {
        location.push('?');
        location.push_str(query);
    }
    location
}

/// 308 keeps the method and body, so a form POST to http:// is not silently turned into a GET.
pub async fn redirect_to_https(
    req: actix_web::HttpRequest,
    public_url: actix_web::web::Data<url::Url>,
) -> actix_web::HttpResponse {
    let location = https_location(&public_url, req.path(), req.query_string());
    match actix_web::http::header::HeaderValue::try_from(location) {
        Ok(location) => actix_web::HttpResponse::PermanentRedirect()
            .insert_header((actix_web::http::header::LOCATION, location))
            .finish(),
        Err(_) => actix_web::HttpResponse::BadRequest().finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_path_and_query_under_the_public_url() {
        let public = url::Url::parse("https://app.example.com/").expect("url");
        assert_eq!(
            https_location(&public, "/a/b", "x=1&y=%2F"),
            "https://app.example.com/a/b?x=1&y=%2F"
        );
        assert_eq!(https_location(&public, "/", ""), "https://app.example.com/");
        let nested = url::Url::parse("https://example.com/app/").expect("url");
        assert_eq!(
            https_location(&nested, "//evil.example/x", ""),
            "https://example.com/app//evil.example/x",
            "the authority never comes from the path"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn finds_a_rustls_error_wrapped_in_io_errors() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let wrapped = Outer(std::io::Error::new(std::io::ErrorKind::InvalidData, alert));
        assert!(matches!(
            tls_failure(&wrapped),
            Some(rustls::Error::AlertReceived(_))
        ));
        let plain = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(tls_failure(&plain).is_none());
    }
}
