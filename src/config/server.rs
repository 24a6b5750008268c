//! `[server]`: where gatehouse listens and how it meets clients: its public URL, TLS, the
//! trusted proxies and the bounds on a request head.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawServer {
    pub(super) bind: Option<String>,
    pub(super) public_url: Option<String>,
    pub(super) insecure_http: Option<bool>,
    pub(super) shutdown_timeout_secs: Option<u64>,
    pub(super) workers: Option<usize>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) max_header_bytes: Option<i64>,
    pub(super) header_timeout_ms: Option<i64>,
    pub(super) body_timeout_ms: Option<i64>,
    pub(super) body_min_bytes_per_sec: Option<i64>,
    pub(super) tls: Option<RawServerTls>,
    pub(super) http_redirect_bind: Option<String>,
    pub(super) pid_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawServerTls {
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
}

/// A PEM certificate chain (leaf first) and its PEM private key. The key file's contents are
/// secret: only its path is ever shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// Where browsers reach gatehouse; the redirect URI and cookie security derive from it.
    pub public_url: Url,
    /// Dangerous development mode: plain-http cookies (no `Secure`, no `__Host-` prefix).
    pub insecure_http: bool,
    pub shutdown_timeout: Duration,
    pub workers: Option<usize>,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies, load balancers).
    pub trusted_proxies: Vec<IpNet>,
    /// All header lines of a request together; more is refused with 431.
    pub max_header_bytes: usize,
    /// A client that has not sent its whole request head by then is disconnected.
    pub header_timeout: Duration,
    /// A body gatehouse reads itself must have arrived whole by then; a streamed one must
    /// have started, and then keep `body_min_bytes_per_sec` (src/request_body.rs).
    pub body_timeout: Duration,
    pub body_min_bytes_per_sec: u64,
    /// Serve HTTPS with this certificate and key (reloaded on SIGHUP and when they change).
    pub tls: Option<CertKeyFiles>,
    /// A plain-http listener that answers everything with 308 to the https public URL.
    pub http_redirect_bind: Option<SocketAddr>,
    /// Where `gatehouse serve` writes its process id, for `gatehouse reload`.
    pub pid_file: Option<PathBuf>,
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host).
pub(super) fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// `[server.tls]`: both files readable, the key the certificate's, no certificate expired.
/// gatehouse serving TLS itself means browsers reach it over https, so the public URL must say
/// so: an http one would put plain-http URLs in redirects and turn Secure cookies off.
pub(super) fn validate_server_tls(
    raw: Option<RawServerTls>,
    public_url: Option<&Url>,
    insecure_http: bool,
    now: SystemTime,
    problems: &mut Vec<String>,
) -> Option<CertKeyFiles> {
    let raw = raw?;
    let (Some(cert_file), Some(key_file)) = (raw.cert_file, raw.key_file) else {
        problems.push("server.tls needs both cert_file and key_file".into());
        return None;
    };
    if public_url.is_some_and(|url| url.scheme() != "https") {
        problems.push(
            "server.tls: server.public_url must be https when gatehouse serves TLS itself".into(),
        );
    }
    if insecure_http {
        problems.push(
            "server.tls and server.insecure_http are both set: TLS serving needs Secure cookies"
                .into(),
        );
    }
    let files = CertKeyFiles {
        cert_file,
        key_file,
    };
    for problem in crate::tls_files::check_cert_and_key(&files.cert_file, &files.key_file, now) {
        problems.push(format!("server.tls: {problem}"));
    }
    Some(files)
}

/// The redirect listener sends browsers to the https public URL, so there must be one.
pub(super) fn validate_http_redirect_bind(
    raw: Option<String>,
    bind: Option<SocketAddr>,
    public_url: Option<&Url>,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    let text = raw?;
    let address = text
        .parse::<SocketAddr>()
        .map_err(|e| problems.push(format!("server.http_redirect_bind: `{text}`: {e}")))
        .ok()?;
    if public_url.is_some_and(|url| url.scheme() != "https") {
        problems.push(
            "server.http_redirect_bind needs an https server.public_url to redirect to".into(),
        );
    }
    if bind == Some(address) && address.port() != 0 {
        problems.push("server.http_redirect_bind must differ from server.bind".into());
    }
    Some(address)
}

/// `[server]`: the settings, and the public URL on its own (the providers' redirect URIs
/// derive from it even when another server key is wrong).
pub(super) fn validate_server(
    raw: RawServer,
    problems: &mut Vec<String>,
) -> (Option<ServerSettings>, Option<Url>) {
    let start = problems.len();
    let bind = raw
        .bind
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse::<SocketAddr>()
        .map_err(|e| problems.push(format!("server.bind: {e}")))
        .ok();
    let insecure_http = raw.insecure_http.unwrap_or(false);
    let public_url = match raw.public_url.as_deref() {
        None => {
            problems
                .push("server.public_url is required (the URL browsers reach gatehouse at)".into());
            None
        }
        Some(text) => match Url::parse(text) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                problems.push(format!("server.public_url: `{text}` is not http(s)"));
                None
            }
            Ok(url) if url.scheme() == "http" && !insecure_http && !is_loopback(&url) => {
                problems.push(format!(
                    "server.public_url: `{text}` is plain http; use https, or set \
                     server.insecure_http = true for local development only"
                ));
                None
            }
            Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                problems.push("server.public_url must not have a query or fragment".into());
                None
            }
            Ok(mut url) => {
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                Some(url)
            }
            Err(e) => {
                problems.push(format!("server.public_url: {e}"));
                None
            }
        },
    };

    let server_tls = validate_server_tls(
        raw.tls,
        public_url.as_ref(),
        insecure_http,
        SystemTime::now(),
        problems,
    );
    let http_redirect_bind =
        validate_http_redirect_bind(raw.http_redirect_bind, bind, public_url.as_ref(), problems);

    let trusted_proxies = raw
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .filter_map(|text| match parse_net(text) {
            Some(net) => Some(net),
            None => {
                problems.push(format!(
                    "server.trusted_proxies: `{text}` is not an IP address or CIDR block"
                ));
                None
            }
        })
        .collect();
    let mut positive = |value: Option<i64>, default: i64, key: &str| -> u64 {
        match value.unwrap_or(default) {
            n if n > 0 => n as u64,
            n => {
                problems.push(format!("server.{key} must be greater than zero (got {n})"));
                0
            }
        }
    };
    let max_header_bytes = positive(raw.max_header_bytes, 16 * 1024, "max_header_bytes") as usize;
    let header_timeout =
        Duration::from_millis(positive(raw.header_timeout_ms, 5000, "header_timeout_ms"));
    let body_timeout =
        Duration::from_millis(positive(raw.body_timeout_ms, 10_000, "body_timeout_ms"));
    let body_min_bytes_per_sec =
        positive(raw.body_min_bytes_per_sec, 500, "body_min_bytes_per_sec");
    if problems.len() > start {
        return (None, public_url);
    }
    let (Some(bind), Some(url)) = (bind, public_url.clone()) else {
        return (None, public_url);
    };
    let settings = ServerSettings {
        bind,
        public_url: url,
        insecure_http,
        shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs.unwrap_or(10)),
        workers: raw.workers,
        trusted_proxies,
        max_header_bytes,
        header_timeout,
        body_timeout,
        body_min_bytes_per_sec,
        tls: server_tls,
        http_redirect_bind,
        pid_file: raw.pid_file,
    };
    (Some(settings), public_url)
}
