//! Graceful shutdown (issue 30): gatehouse's own binary gets SIGTERM while 50 slow calls
//! are in flight. Readiness fails at once, new connections are refused, the calls all finish
//! 200 within `server.shutdown_timeout_secs`, WebSockets are closed with 1001, and the
//! process exits cleanly.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::echo::{spawn_echo, EchoUpstream};
use crate::helpers::processes::{
    free_port, serve_command, spawn_in_nursery, ProviderOptions, ProviderProcess,
};
use crate::helpers::websocket_echo::{spawn_websocket_echo, WebSocketEcho};
use crate::helpers::{config_dir, spawn_app_with, AppOptions, Route, SessionKeys, TestApp};

const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const SLOW_CALL: Duration = Duration::from_secs(3);

/// gatehouse's binary on `app`'s configuration (its provider, Redis and routes), at ports of
/// its own, with a shutdown timeout of `shutdown_timeout`.
struct Served {
    port: u16,
    admin_port: u16,
    stderr: std::path::PathBuf,
    child: std::process::Child,
}

impl Served {
    async fn start(app: &TestApp, shutdown_timeout: Duration) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let config = app
            .config_toml
            .replacen(
                "[server]\n",
                &format!("[server]\nbind = \"127.0.0.1:{port}\"\n"),
                1,
            )
            .replacen(
                "shutdown_timeout_secs = 1\n",
                &format!("shutdown_timeout_secs = {}\n", shutdown_timeout.as_secs()),
                1,
            )
            .replacen(
                "bind = \"127.0.0.1:0\"",
                &format!("bind = \"127.0.0.1:{admin_port}\""),
                1,
            );
        let dir = config_dir(&config);
        let (command, stderr) = serve_command(&dir, &app.client_secret);
        let served = Self {
            port,
            admin_port,
            stderr,
            child: spawn_in_nursery(command),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while served.readiness().await != Some(200) {
            assert!(Instant::now() < deadline, "not ready: {}", served.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        served
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `/readyz` on the admin listener; `None` when it does not answer.
    async fn readiness(&self) -> Option<u16> {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/readyz", self.admin_port))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill only sends a signal to the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }
}

/// `/api` to the HTTP echo and `/ws` to the WebSocket echo, neither needing a session.
async fn bed() -> (TestApp, EchoUpstream, WebSocketEcho) {
    let echo = spawn_echo().await;
    let ws = spawn_websocket_echo().await;
    let app = spawn_app_with(AppOptions {
        admin: true,
        routes: vec![
            Route::new("/api", &echo.base)
                .token("none")
                .rate_limit_off(),
            Route::new("/ws", &format!("{}/socket", ws.base))
                .token("none")
                .websocket(),
        ],
        ..AppOptions::default()
    })
    .await;
    (app, echo, ws)
}

/// One slow call on a connection of its own: its status and body.
async fn slow_call(port: u16) -> (u16, String) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    match client
        .get(format!(
            "http://127.0.0.1:{port}/api/slow?ms={}",
            SLOW_CALL.as_millis()
        ))
        .header("x-csrf", "1")
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(error) => (0, error.to_string()),
    }
}

#[tokio::test]
async fn sigterm_lets_fifty_slow_calls_finish_refuses_new_connections_and_closes_sockets() {
    let (app, echo, _ws) = bed().await;
    let mut served = Served::start(&app, SHUTDOWN_TIMEOUT).await;

    let mut request = format!("ws://127.0.0.1:{}/ws/live", served.port)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("origin", app.base.parse().expect("origin"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a socket through gatehouse");

    let calls: Vec<_> = (0..50)
        .map(|_| tokio::spawn(slow_call(served.port)))
        .collect();
    // Every call has reached the upstream (so each is in flight at gatehouse).
    let deadline = Instant::now() + Duration::from_secs(10);
    while echo
        .seen()
        .iter()
        .filter(|p| p.starts_with("/slow"))
        .count()
        < 50
    {
        assert!(Instant::now() < deadline, "the calls did not all arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let signalled = Instant::now();
    served.terminate();

    // Readiness fails at once (the admin listener stays up to say so).
    loop {
        if served.readiness().await == Some(503) {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "readiness still not 503: {}",
            served.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let not_ready_after = signalled.elapsed();

    // New connections are refused.
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", served.port)).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => {}
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "the public listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused_after = signalled.elapsed();

    // The socket is closed with 1001, going away.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame soon after SIGTERM");
    assert_eq!(closed, Some(CloseCode::Away));

    // Every call in flight finishes, 200 with its whole answer, within the timeout.
    let results = futures_util::future::join_all(calls).await;
    let finished_after = signalled.elapsed();
    let statuses: Vec<u16> = results
        .iter()
        .map(|r| r.as_ref().expect("call task").0)
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        served.logs()
    );
    for result in &results {
        let body = &result.as_ref().expect("call task").1;
        let echoed: serde_json::Value = serde_json::from_str(body).expect("the whole JSON");
        assert_eq!(echoed["path"], "/slow");
    }
    assert!(finished_after < SHUTDOWN_TIMEOUT, "{finished_after:?}");

    // And the process ends, cleanly, once they are done.
    let exit = loop {
        if let Some(status) = served.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < SHUTDOWN_TIMEOUT + Duration::from_secs(5),
            "still running: {}",
            served.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exited_after = signalled.elapsed();
    assert!(exit.success(), "{exit:?}: {}", served.logs());
    let logs = served.logs();
    assert!(logs.contains("SIGTERM: draining"), "{logs}");
    println!(
        "shutdown: readiness 503 after {not_ready_after:?}, connections refused after \
         {refused_after:?}, 50 calls of {SLOW_CALL:?} done after {finished_after:?}, exited \
         after {exited_after:?}"
    );
}

#[tokio::test]
async fn a_refresh_lock_held_by_a_call_the_timeout_cuts_off_is_released_at_exit() {
    // Access tokens of 4 s: a refresh is due 2 s after login (the skew is capped at half the
    // lifetime). The lock's TTL is a minute, so only a release frees it soon.
    let provider = ProviderProcess::start(&ProviderOptions {
        access_token_ttl_secs: 4,
        ..ProviderOptions::default()
    });
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        routes: vec![Route::new("/api", &echo.base)],
        session: SessionKeys::long()
            .refresh_skew_secs(60)
            .refresh_lock_ttl_ms(60_000),
        admin: true,
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    let store_key = app.session_for(&cookie).await.expect("session").store_key;
    let lock = format!("{}:k:{{{store_key}}}", app.key_prefix);
    let mut served = Served::start(&app, Duration::from_secs(1)).await;

    // The token endpoint hangs; a call through the binary takes the lock and waits on it.
    provider_control(&provider.issuer, "/__test/token-delay?ms=15000").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let port = served.port;
    let cookie_header = format!("{}={cookie}", app.cookie_name());
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/api/x"))
            .header("x-csrf", "1")
            .header("cookie", cookie_header)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let mut redis = app.redis().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held: bool = redis::cmd("EXISTS")
            .arg(&lock)
            .query_async(&mut redis)
            .await
            .expect("EXISTS");
        if held {
            break;
        }
        assert!(Instant::now() < deadline, "the call took no refresh lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let signalled = Instant::now();
    served.terminate();
    let exit = loop {
        if let Some(status) = served.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running: {}",
            served.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    provider_control(&provider.issuer, "/__test/token-delay?ms=0").await;
    assert!(exit.success(), "{exit:?}: {}", served.logs());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&lock)
        .query_async(&mut redis)
        .await
        .expect("PTTL");
    assert_eq!(
        ttl,
        -2,
        "the lock is gone, not left to lapse: {}",
        served.logs()
    );
    assert!(
        served
            .logs()
            .contains("refresh locks of calls cut off by the shutdown released"),
        "{}",
        served.logs()
    );
    // The cut-off call got no answer; the session itself is intact.
    assert!(call.await.expect("task").is_err());
    assert!(app.session_for(&cookie).await.is_some());
}

async fn provider_control(issuer: &str, path: &str) {
    let response = reqwest::Client::new()
        .post(format!("{issuer}{path}"))
        .send()
        .await
        .expect("provider control");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}
