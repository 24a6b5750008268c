//! TLS at both ends, with certificates made here (rcgen): gatehouse serving TLS 1.2/1.3 with
//! h2 and http/1.1, refusing TLS 1.1, swapping its certificate without dropping connections,
//! redirecting plain http; and routes that pin their upstream's CA and present a client
//! certificate (mutual TLS).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use gatehouse::clock::SystemClock;
use gatehouse::startup::Application;
use reqwest::tls::Version;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::certs::{leaf_with, new_ca, server_leaf, Ca, Leaf, Usage};
use crate::helpers::echo::hex;
use crate::helpers::processes::{free_port, spawn_in_nursery};
use crate::helpers::{self, shared_provider, AppOptions, Route, RouteTls, StoreKind};

// ---------------------------------------------------------------------------------------
// Certificate files (the certificates themselves: helpers::certs)
// ---------------------------------------------------------------------------------------

/// A scratch directory for one test's certificate files (never committed: under target/).
fn scratch() -> PathBuf {
    helpers::config_dir("")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// A client that trusts only `ca`, speaks exactly `version`, and h2 or http/1.1 only.
fn client(ca: &Ca, version: Version, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).expect("ca"))
        .tls_built_in_root_certs(false)
        .min_tls_version(version)
        .max_tls_version(version)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("client")
}

/// The certificate the server presented on this response's connection.
fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info with the peer certificate")
        .to_vec()
}

/// A fresh connection (new client, no pool): the certificate it is shown.
async fn certificate_seen(ca: &Ca, port: u16) -> Result<Vec<u8>, reqwest::Error> {
    let response = client(ca, Version::TLS_1_3, false)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await?;
    Ok(peer_certificate(&response))
}

// ---------------------------------------------------------------------------------------
// gatehouse with TLS, in process
// ---------------------------------------------------------------------------------------

struct TlsApp {
    port: u16,
    redirect_port: Option<u16>,
}

fn provider_table() -> String {
    format!(
        "[providers.main]\nissuer = \"{}\"\nclient_id = \"tls-tests\"\n",
        shared_provider().issuer
    )
}

async fn spawn_tls_app(dir: &Path, leaf: &Leaf, server_keys: &str) -> TlsApp {
    helpers::init_logs();
    let cert = write(dir, "server.crt", &leaf.cert_pem);
    let key = write(dir, "server.key", &leaf.key_pem);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let toml = format!(
        "[server]\npublic_url = \"https://127.0.0.1:{port}\"\nworkers = 1\n\
         shutdown_timeout_secs = 1\n{server_keys}\n\
         [server.tls]\ncert_file = {}\nkey_file = {}\n\n{}",
        toml_path(&cert),
        toml_path(&key),
        provider_table()
    );
    let env = vec![(
        "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET".to_owned(),
        "not-used".to_owned(),
    )];
    let settings = gatehouse::config::load(Some(&toml), env)
        .unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let app = Application::build_with_listener(settings, listener, Arc::new(SystemClock))
        .await
        .expect("application builds");
    let redirect_port = app.redirect_port();
    tokio::spawn(app.run_until_stopped());
    TlsApp {
        port,
        redirect_port,
    }
}

#[tokio::test]
async fn tls_13_and_12_with_h2_and_http11_by_alpn() {
    let dir = scratch();
    let ca = new_ca("gatehouse test CA");
    let leaf = server_leaf(&ca, "gatehouse");
    let app = spawn_tls_app(&dir, &leaf, "").await;

    for version in [Version::TLS_1_3, Version::TLS_1_2] {
        for (http1_only, expected) in [
            (false, reqwest::Version::HTTP_2),
            (true, reqwest::Version::HTTP_11),
        ] {
            let response = client(&ca, version, http1_only)
                .get(format!("https://127.0.0.1:{}/healthz", app.port))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{version:?} http1_only={http1_only}: {e:?}"));
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), expected, "{version:?}");
            assert_eq!(peer_certificate(&response), leaf.der);
            assert!(
                response
                    .headers()
                    .get("strict-transport-security")
                    .is_some(),
                "HSTS on an https public URL"
            );
        }
    }

    // A client that does not trust the test CA gets no connection at all.
    let stranger = new_ca("some other CA");
    let refused = client(&stranger, Version::TLS_1_3, false)
        .get(format!("https://127.0.0.1:{}/healthz", app.port))
        .send()
        .await;
    assert!(refused.is_err(), "an untrusted certificate must fail");
}

/// A ClientHello as a TLS 1.1 client (or, for the control case, a TLS 1.2 one) sends it:
/// `version` in the record and in client_version, no supported_versions extension.
fn client_hello(version: u16) -> Vec<u8> {
    fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }
    let mut extensions = Vec::new();
    // supported_groups: x25519, secp256r1
    extensions.extend(extension(0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]));
    // ec_point_formats: uncompressed
    extensions.extend(extension(0x000b, &[0x01, 0x00]));
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    extensions.extend(extension(
        0x000d,
        &[0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    ));
    // extended_master_secret
    extensions.extend(extension(0x0017, &[]));

    let mut body = version.to_be_bytes().to_vec();
    body.extend((0..32).map(|_| rand::random::<u8>())); // random
    body.push(0); // no session id
    let suites: &[u16] = &[
        0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc009, 0xc013,
    ];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[0x01, 0x00]); // compression: null only
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend(extensions);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16]; // handshake
    record.extend_from_slice(&version.to_be_bytes());
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// What the server sends back to a raw ClientHello: the first record's type and its first
/// bytes, or nothing when it closes.
async fn answer_to_hello(port: u16, version: u16) -> Option<(u8, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(&client_hello(version))
        .await
        .expect("send hello");
    let read = async {
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.ok()?;
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.min(64)];
        stream.read_exact(&mut body).await.ok()?;
        Some((header[0], body))
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answers or closes in time")
}

#[tokio::test]
async fn tls_11_is_refused_by_the_handshake() {
    let dir = scratch();
    let ca = new_ca("gatehouse test CA");
    let app = spawn_tls_app(&dir, &server_leaf(&ca, "gatehouse"), "").await;

    // Control: the same hand-built hello as TLS 1.2 gets a ServerHello for TLS 1.2.
    let (kind, body) = answer_to_hello(app.port, 0x0303)
        .await
        .expect("a TLS 1.2 hello is answered");
    assert_eq!(kind, 0x16, "a handshake record");
    assert_eq!(body[0], 0x02, "ServerHello");
    assert_eq!(&body[4..6], &[0x03, 0x03], "TLS 1.2 chosen");

    match answer_to_hello(app.port, 0x0302).await {
        None => {} // closed without a word: refused
        Some((kind, body)) => {
            assert_eq!(kind, 0x15, "an alert, not a handshake: {body:?}");
            assert_eq!(body[0], 2, "fatal");
            assert_eq!(body[1], 70, "protocol_version");
        }
    }
}

#[tokio::test]
async fn tls_plain_http_listener_redirects_to_the_https_public_url() {
    let dir = scratch();
    let ca = new_ca("gatehouse test CA");
    let app = spawn_tls_app(
        &dir,
        &server_leaf(&ca, "gatehouse"),
        "http_redirect_bind = \"127.0.0.1:0\"",
    )
    .await;
    let redirect_port = app.redirect_port.expect("a redirect listener");
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let response = plain
            .request(
                method.clone(),
                format!("http://127.0.0.1:{redirect_port}/app/orders/7?tab=items&q=a%20b"),
            )
            .header("host", "evil.example")
            .send()
            .await
            .expect("redirect listener answers");
        assert_eq!(response.status(), 308, "{method}");
        assert_eq!(
            response.headers()["location"],
            format!(
                "https://127.0.0.1:{}/app/orders/7?tab=items&q=a%20b",
                app.port
            )
            .as_str(),
            "the configured public URL, never the request's Host"
        );
    }
    // And the target answers over TLS.
    let response = client(&ca, Version::TLS_1_3, false)
        .get(format!("https://127.0.0.1:{}/healthz", app.port))
        .send()
        .await
        .expect("https");
    assert_eq!(response.status(), 200);
}

// ---------------------------------------------------------------------------------------
// Certificate reload in the real binary
// ---------------------------------------------------------------------------------------

/// Writes a certificate or key file padded to a fixed length and with a fixed modification
/// time: a swap done this way is invisible to the change poller, so only SIGHUP can load it.
fn write_unchanged_stamp(path: &Path, text: &str, len: usize) {
    assert!(text.len() <= len, "pad length too small");
    let mut padded = text.to_owned();
    padded.push_str(&"\n".repeat(len - text.len()));
    std::fs::write(path, padded).expect("write");
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .expect("set mtime");
}

async fn wait_for_certificate(ca: &Ca, port: u16, expected: &[u8], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if certificate_seen(ca, port).await.ok().as_deref() == Some(expected) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn sighup(pid: u32) {
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP");
}

#[tokio::test]
async fn tls_certificate_swaps_on_sighup_and_on_change_without_dropping_connections() {
    let dir = scratch();
    let ca = new_ca("gatehouse test CA");
    let first = server_leaf(&ca, "first");
    let second = server_leaf(&ca, "second");
    let third = server_leaf(&ca, "third");
    let stray = server_leaf(&ca, "stray");
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    write_unchanged_stamp(&cert, &first.cert_pem, 4096);
    write_unchanged_stamp(&key, &first.key_pem, 1024);

    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "<!doctype html><title>t</title>").expect("index");
    let big: Vec<u8> = (0..16u64 * 1024 * 1024)
        .map(crate::helpers::echo::pattern_byte)
        .collect();
    std::fs::write(www.join("big.bin"), &big).expect("big file");
    let big_sha = hex(&Sha256::digest(&big));

    let port = free_port();
    let config = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"https://127.0.0.1:{port}\"\n\
         workers = 1\nshutdown_timeout_secs = 1\n\
         [server.tls]\ncert_file = {}\nkey_file = {}\n\
         [frontend]\ndir = {}\n\n{}",
        toml_path(&cert),
        toml_path(&key),
        toml_path(&www),
        provider_table()
    );
    std::fs::write(dir.join("gatehouse.toml"), config).expect("config");
    let log = dir.join("gatehouse.stderr");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .args(["serve", "--config", "gatehouse.toml"])
        .current_dir(&dir)
        .env_remove("GATEHOUSE_CONFIG")
        .env("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "not-used")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut child = spawn_in_nursery(command);
    let pid = child.id();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    assert!(
        wait_for_certificate(&ca, port, &first.der, Duration::from_secs(20)).await,
        "gatehouse did not come up with the first certificate: {}",
        logs()
    );

    // An old connection: a large download, started and then left unread while the
    // certificate changes under it.
    let old = client(&ca, Version::TLS_1_3, false);
    let download = old
        .get(format!("https://127.0.0.1:{port}/big.bin"))
        .send()
        .await
        .expect("download starts");
    assert_eq!(download.status(), 200);
    assert_eq!(peer_certificate(&download), first.der);
    let mut body = download.bytes_stream();
    let mut received = Vec::with_capacity(big.len());
    while received.len() < 1024 * 1024 {
        received.extend_from_slice(&body.next().await.expect("more").expect("chunk"));
    }

    // Swapped on disk in a way the poller cannot see: nothing changes without SIGHUP.
    write_unchanged_stamp(&cert, &second.cert_pem, 4096);
    write_unchanged_stamp(&key, &second.key_pem, 1024);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        certificate_seen(&ca, port).await.expect("connects"),
        first.der,
        "no reload before SIGHUP"
    );
    sighup(pid);
    assert!(
        wait_for_certificate(&ca, port, &second.der, Duration::from_secs(5)).await,
        "SIGHUP loads the new certificate: {}",
        logs()
    );

    // Changed on disk (a new modification time), no signal: picked up by the poller.
    std::fs::write(&key, &third.key_pem).expect("key");
    std::fs::write(&cert, &third.cert_pem).expect("cert");
    assert!(
        wait_for_certificate(&ca, port, &third.der, Duration::from_secs(5)).await,
        "a change on disk is picked up: {}",
        logs()
    );

    // A bad pair (the key is another certificate's) keeps the current certificate.
    std::fs::write(&cert, &stray.cert_pem).expect("cert");
    sighup(pid);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        certificate_seen(&ca, port).await.expect("still serving"),
        third.der,
        "a mismatched pair is not loaded"
    );
    assert!(child.try_wait().expect("status").is_none(), "still running");

    // The old connection finishes its download, intact.
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(received.len(), big.len());
    assert_eq!(hex(&Sha256::digest(&received)), big_sha);

    let text = logs();
    assert!(
        text.contains("TLS certificate reloaded"),
        "reloads are logged: {text}"
    );
    assert!(
        text.contains("not reloaded"),
        "the bad pair is logged: {text}"
    );
    for leaf in [&first, &second, &third, &stray] {
        let key_body = leaf.key_pem.lines().nth(1).expect("a base64 line");
        assert!(!text.contains(key_body), "key material in the log");
    }
    let _ = child.kill();
}

// ---------------------------------------------------------------------------------------
// Upstream mutual TLS
// ---------------------------------------------------------------------------------------

/// An upstream that demands a client certificate from `client_ca` and serves `leaf`.
async fn spawn_mtls_upstream(leaf: &Leaf, client_ca: &Ca) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.cert.der().clone()).expect("client CA");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
        )
        .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new().default_service(actix_web::web::to(
            |req: actix_web::HttpRequest| async move {
                actix_web::HttpResponse::Ok().body(format!("mtls upstream saw {}", req.path()))
            },
        ))
    })
    .workers(1)
    .disable_signals()
    .listen_rustls_0_23(listener, config)
    .expect("listen");
    tokio::spawn(server.run());
    port
}

#[tokio::test]
async fn tls_upstream_mutual_tls_pinned_ca_and_server_name() {
    let dir = scratch();
    let upstream_ca = new_ca("upstream CA");
    let client_ca = new_ca("gatehouse client CA");
    let other_ca = new_ca("unrelated CA");
    let upstream = spawn_mtls_upstream(&server_leaf(&upstream_ca, "orders"), &client_ca).await;
    let internal = leaf_with(
        &upstream_ca,
        &["orders.internal"],
        "orders",
        Usage::Server,
        |_| {},
    );
    let named_upstream = spawn_mtls_upstream(&internal, &client_ca).await;

    let upstream_ca_file = write(&dir, "upstream-ca.crt", &upstream_ca.cert.pem());
    let other_ca_file = write(&dir, "other-ca.crt", &other_ca.cert.pem());
    let client = leaf_with(&client_ca, &[], "gatehouse", Usage::Client, |_| {});
    let client_cert = write(&dir, "client.crt", &client.cert_pem);
    let client_key = write(&dir, "client.key", &client.key_pem);
    let foreign = leaf_with(&other_ca, &[], "gatehouse", Usage::Client, |_| {});
    let foreign_cert = write(&dir, "foreign.crt", &foreign.cert_pem);
    let foreign_key = write(&dir, "foreign.key", &foreign.key_pem);

    let route = |prefix: &str, port: u16, tls: RouteTls| {
        Route::new(prefix, &format!("https://127.0.0.1:{port}/v1"))
            .token("none")
            .tls(tls)
    };
    let with_identity = |ca: &Path, cert: &Path, key: &Path| {
        RouteTls::new()
            .ca_file(ca)
            .client_cert_file(cert)
            .client_key_file(key)
    };
    let routes = vec![
        route(
            "/api/mtls",
            upstream,
            with_identity(&upstream_ca_file, &client_cert, &client_key),
        ),
        route(
            "/api/no-client-cert",
            upstream,
            RouteTls::new().ca_file(&upstream_ca_file),
        ),
        route(
            "/api/foreign-client-cert",
            upstream,
            with_identity(&upstream_ca_file, &foreign_cert, &foreign_key),
        ),
        route(
            "/api/wrong-ca",
            upstream,
            with_identity(&other_ca_file, &client_cert, &client_key),
        ),
        route(
            "/api/named",
            named_upstream,
            with_identity(&upstream_ca_file, &client_cert, &client_key)
                .server_name("orders.internal"),
        ),
        route(
            "/api/unnamed",
            named_upstream,
            with_identity(&upstream_ca_file, &client_cert, &client_key),
        ),
    ];
    let app = helpers::spawn_app_with(AppOptions {
        store: StoreKind::Memory,
        routes,
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();

    for path in ["/api/mtls/orders/7", "/api/named/orders/7"] {
        let ok = browser.api_get(path).await;
        assert_eq!(ok.status, 200, "{path}: {}", ok.body);
        assert_eq!(ok.body, "mtls upstream saw /v1/orders/7");
    }
    for path in [
        // TLS 1.3: the upstream refuses the missing certificate after the client thinks the
        // handshake is done; the alert arrives on the first read.
        "/api/no-client-cert/orders/7",
        "/api/foreign-client-cert/orders/7",
        // The upstream's certificate is not from the route's CA.
        "/api/wrong-ca/orders/7",
        // Verified against the URL's host (127.0.0.1), which the certificate does not name.
        "/api/unnamed/orders/7",
    ] {
        let refused = browser.api_get(path).await;
        refused.assert_problem(502, "upstream-tls");
        assert!(
            !refused.body.contains("127.0.0.1"),
            "no upstream address in the body: {}",
            refused.body
        );
    }
}

// ---------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------

#[test]
fn tls_check_config_reports_mismatched_expired_and_unreadable_files_at_once() {
    let dir = scratch();
    let ca = new_ca("gatehouse test CA");
    let one = server_leaf(&ca, "one");
    let two = server_leaf(&ca, "two");
    let expired = leaf_with(&ca, &[], "old client", Usage::Client, |params| {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let server_cert = write(&dir, "server.crt", &one.cert_pem);
    let server_key = write(&dir, "server.key", &two.key_pem); // not the certificate's key
    let client_cert = write(&dir, "client.crt", &expired.cert_pem);
    let client_key = write(&dir, "client.key", &expired.key_pem);
    let missing_ca = dir.join("no-such-ca.crt");
    std::fs::write(dir.join("secret.txt"), "s3cret\n").expect("secret");
    let config = format!(
        "[server]\npublic_url = \"https://app.example.com\"\n\
         [server.tls]\ncert_file = {}\nkey_file = {}\n\
         [providers.main]\nissuer = \"https://id.example.com\"\nclient_id = \"spa\"\n\
         client_secret_file = \"secret.txt\"\n\
         [[routes]]\nprefix = \"/api/orders\"\nupstream = \"https://orders.internal\"\n\
         [routes.tls]\nca_file = {}\nclient_cert_file = {}\nclient_key_file = {}\n\
         server_name = \"not a name\"\n",
        toml_path(&server_cert),
        toml_path(&server_key),
        toml_path(&missing_ca),
        toml_path(&client_cert),
        toml_path(&client_key),
    );
    std::fs::write(dir.join("gatehouse.toml"), config).expect("config");
    let output = crate::helpers::check_config_in(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for needle in [
        "server.tls: ",
        "server.key is not the private key of the certificate in",
        "routes[0].tls: ",
        "client.crt: certificate 0 (CN=old client) expired at 2001-01-01T00:00:00Z",
        "routes[0].tls.ca_file: cannot read",
        "no-such-ca.crt",
        "routes[0].tls.server_name: `not a name`",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    for leaf in [&one, &two, &expired] {
        let key_body = leaf.key_pem.lines().nth(1).expect("a base64 line");
        assert!(!stderr.contains(key_body), "key material echoed");
    }

    // The same files, put right, pass.
    std::fs::write(&server_key, &one.key_pem).expect("key");
    let good = server_leaf(&ca, "client");
    std::fs::write(&client_cert, &good.cert_pem).expect("cert");
    std::fs::write(&client_key, &good.key_pem).expect("key");
    std::fs::write(&missing_ca, ca.cert.pem()).expect("ca");
    let fixed = std::fs::read_to_string(dir.join("gatehouse.toml"))
        .expect("config")
        .replace(
            "server_name = \"not a name\"",
            "server_name = \"orders.internal\"",
        );
    std::fs::write(dir.join("gatehouse.toml"), fixed).expect("config");
    let output = crate::helpers::check_config_in(&dir);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The head deadline on kept-alive connections holds over TLS too: after one answered
/// request, a second head sent a byte at a time is cut off (a blocking rustls client, so
/// nothing tidies the bytes on the wire).
#[tokio::test]
async fn tls_a_slow_second_head_on_a_kept_alive_connection_is_cut_off() {
    use std::io::{Read, Write};

    let dir = scratch();
    let ca = new_ca("gatehouse test CA");
    let leaf = server_leaf(&ca, "gatehouse");
    let app = spawn_tls_app(&dir, &leaf, "header_timeout_ms = 1000").await;
    let port = app.port;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).expect("trust the test CA");

    let (took, answer) = tokio::task::spawn_blocking(move || {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
            .expect("first request");
        let started = Instant::now();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while started.elapsed() < Duration::from_secs(15) {
            if tls.write_all(b"X").is_err() {
                break;
            }
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    })
    .await
    .expect("client thread");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "closed after {took:?}"
    );
}
