//! WebSocket routes (issue 14): the handshake needs this site's Origin and the route's
//! session, the upstream gets the token, messages cross both ways, and gatehouse closes the
//! socket itself when the session ends (1008) or the socket idles (1001).

mod limits;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::echo::{echoed_header, spawn_echo, status_of};
use crate::helpers::processes::RedisServer;
use crate::helpers::scrape::{scrape, value};
use crate::helpers::websocket_echo::{
    close_code, open, spawn_websocket_echo, Socket, WebSocketEcho,
};
use crate::helpers::{spawn_app_with, AppOptions, Browser, RedisKeys, Route, SessionKeys, TestApp};

/// `/ws`: WebSockets to the echo (user token).
fn socket_route(ws: &WebSocketEcho) -> Route {
    Route::new("/ws", &format!("{}/socket", ws.base)).websocket()
}

/// `/ws` tunnels WebSockets to the echo (user token); `/api` is the HTTP echo.
async fn app_with_socket_route(ws: &WebSocketEcho) -> TestApp {
    app_with_socket_route_and(socket_route(ws), AppOptions::default()).await
}

/// `socket` (`/ws`), the routes of `options`, then `/api` on the HTTP echo.
async fn app_with_socket_route_and(socket: Route, options: AppOptions<'_>) -> TestApp {
    let http_echo = spawn_echo().await;
    let mut routes = vec![socket];
    routes.extend(options.routes.iter().cloned());
    routes.push(Route::new("/api", &http_echo.base));
    spawn_app_with(AppOptions { routes, ..options }).await
}

/// alice's browser, logged in, and her session cookie.
async fn alice(app: &TestApp) -> (Browser<'_>, String) {
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("session");
    (browser, cookie)
}

/// A logout in another request (another tab of the same browser).
async fn log_out(browser: &mut Browser<'_>) {
    let logout = browser
        .request(
            reqwest::Method::POST,
            "/auth/logout",
            &[("x-csrf", "1")],
            None,
        )
        .await;
    assert_eq!(logout.status, 200, "{}", logout.body);
}

async fn next_message(socket: &mut Socket) -> Message {
    tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a message in time")
        .expect("the socket is open")
        .expect("a valid frame")
}

#[tokio::test]
async fn messages_cross_both_ways_and_the_upstream_gets_the_token() {
    let ws = spawn_websocket_echo().await;
    let app = app_with_socket_route(&ws).await;
    let (mut browser, cookie) = alice(&app).await;

    let mut socket = open(&app, "/ws/live?room=7", Some(&cookie))
        .await
        .expect("the handshake succeeds");
    socket
        .send(Message::Text("hello".into()))
        .await
        .expect("send");
    assert_eq!(
        next_message(&mut socket).await,
        Message::Text("hello".into())
    );
    let megabyte: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    socket
        .send(Message::Binary(megabyte.clone()))
        .await
        .expect("send");
    assert_eq!(
        next_message(&mut socket).await,
        Message::Binary(megabyte),
        "a 1 MB binary message crosses both ways intact"
    );
    let long_text = "ü".repeat(300_000);
    socket
        .send(Message::Text(long_text.clone()))
        .await
        .expect("send");
    assert_eq!(next_message(&mut socket).await, Message::Text(long_text));

    // The same bearer token a proxied HTTP call carries.
    let echoed = browser.api_get("/api/whoami").await;
    assert_eq!(echoed.status, 200, "{}", echoed.body);
    let bearer = echoed_header(&echoed.json(), "authorization")[0].to_owned();
    assert!(bearer.starts_with("Bearer "), "{bearer}");
    let handshake = ws
        .handshakes()
        .pop()
        .expect("the upstream saw the handshake");
    assert_eq!(handshake.path, "/socket/live?room=7");
    assert_eq!(handshake.header("authorization"), Some(bearer.as_str()));
    assert_eq!(handshake.header("cookie"), None, "no cookie upstream");
    assert_eq!(
        handshake.header("sec-websocket-extensions"),
        None,
        "no extension is offered upstream"
    );

    // The browser's close, with its code, reaches the upstream.
    socket
        .close(Some(CloseFrame {
            code: CloseCode::Library(4001),
            reason: "done".into(),
        }))
        .await
        .expect("close");
    wait_for(|| ws.closes().contains(&Some(4001))).await;
}

#[tokio::test]
async fn a_handshake_without_this_sites_origin_or_a_session_is_refused() {
    let ws = spawn_websocket_echo().await;
    let app = app_with_socket_route(&ws).await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = format!(
        "{}={}",
        app.cookie_name(),
        browser.session_cookie().expect("session")
    );
    let port = app.port;
    let own = app.base.clone();
    let origins: Vec<Vec<String>> = vec![
        vec![],
        vec!["null".into()],
        vec![format!("http://127.0.0.1:{}", port + 1)],
        vec![format!("http://localhost:{port}")],
        vec![format!("HTTP://127.0.0.1:{port}")],
        vec![format!("{own}/")],
        vec![format!("https://127.0.0.1:{port}")],
        vec![format!("{own}.evil.example")],
        vec![format!("{own}@evil.example")],
        vec![format!("http://evil.example#{own}")],
        vec![own.replace("127.0.0.1", "127.000.000.001")],
        vec![own.replace("127.0.0.1", "%31%32%37.0.0.1")],
        vec![own.clone(), "http://evil.example".into()],
        vec!["http://evil.example".into(), own.clone()],
    ];
    for origin in &origins {
        let (status, head) = handshake(port, origin, Some(&cookie), VALID_KEY).await;
        assert_eq!(status, 403, "Origin {origin:?}: {head}");
        assert!(head.contains("origin-rejected"), "{head}");
    }
    // Origin spelled as an old draft's header is not Origin.
    let (status, _) = raw(
        port,
        &upgrade_request(
            &format!("Sec-WebSocket-Origin: {own}\r\nCookie: {cookie}\r\n"),
            VALID_KEY,
        ),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        ws.handshakes().is_empty(),
        "no refused handshake reached the upstream"
    );

    // This site's Origin, but no session: 401, as for any user-token route.
    let (status, head) = handshake(port, std::slice::from_ref(&own), None, VALID_KEY).await;
    assert_eq!(status, 401, "{head}");
    let (status, _) = handshake(
        port,
        std::slice::from_ref(&own),
        Some(&format!("{}=forged.value", app.cookie_name())),
        VALID_KEY,
    )
    .await;
    assert_eq!(status, 401);
    // A handshake that is not one: a key of the wrong length.
    let (status, head) =
        handshake(port, std::slice::from_ref(&own), Some(&cookie), "c2hvcnQ=").await;
    assert_eq!(status, 400, "{head}");
    assert!(ws.handshakes().is_empty());

    // With both, the upgrade happens.
    let (status, head) =
        handshake(port, std::slice::from_ref(&own), Some(&cookie), VALID_KEY).await;
    assert_eq!(status, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "the upstream's answer to the browser's key: {head}"
    );

    // A plain request to the same route still needs the anti-forgery header.
    let plain = browser
        .request(reqwest::Method::GET, "/ws/live", &[], None)
        .await;
    assert_eq!(plain.status, 401, "{}", plain.body);
}

#[tokio::test]
async fn an_upstream_refusing_the_handshake_is_passed_on() {
    let ws = spawn_websocket_echo().await;
    let refusing = AppOptions {
        routes: vec![Route::new("/refused", &format!("{}/refuse", ws.base)).websocket()],
        ..AppOptions::default()
    };
    let app = app_with_socket_route_and(socket_route(&ws), refusing).await;
    let (_browser, cookie) = alice(&app).await;
    match open(&app, "/refused/x", Some(&cookie)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected the upstream's 403, got {other:?}"),
    }
    assert_eq!(ws.handshakes().len(), 1, "the upstream was asked");
}

#[tokio::test]
async fn a_logout_elsewhere_closes_the_socket_with_1008_within_5_seconds() {
    let ws = spawn_websocket_echo().await;
    let with_admin = AppOptions {
        admin: true,
        ..AppOptions::default()
    };
    let app = app_with_socket_route_and(socket_route(&ws), with_admin).await;
    let open_sockets = |scrape| value(&scrape, "gatehouse_websockets_open", &[("route", "/ws")]);
    let (mut browser, cookie) = alice(&app).await;
    let mut socket = open(&app, "/ws/live", Some(&cookie)).await.expect("open");
    socket.send(Message::Text("hi".into())).await.expect("send");
    assert_eq!(next_message(&mut socket).await, Message::Text("hi".into()));
    assert_eq!(open_sockets(scrape(&app).await), 1.0);

    log_out(&mut browser).await;
    let (code, after) = close_code(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(code, Some(CloseCode::Policy), "closed with 1008");
    assert!(
        after < Duration::from_secs(5),
        "closed {after:?} after the logout"
    );
    // The upstream is told too.
    wait_for(|| ws.closes().contains(&Some(1008))).await;
    let after = scrape(&app).await;
    assert_eq!(open_sockets(after.clone()), 0.0);
    let closed = [("route", "/ws"), ("reason", "session_ended")];
    assert_eq!(
        value(&after, "gatehouse_websockets_closed_total", &closed),
        1.0
    );
}

#[tokio::test]
async fn an_idle_socket_is_closed_and_a_busy_one_is_not() {
    let ws = spawn_websocket_echo().await;
    let app = app_with_socket_route_and(
        socket_route(&ws).websocket_idle_secs(2),
        AppOptions::default(),
    )
    .await;
    let (_browser, cookie) = alice(&app).await;

    let mut busy = open(&app, "/ws/busy", Some(&cookie)).await.expect("open");
    let mut idle = open(&app, "/ws/idle", Some(&cookie)).await.expect("open");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        busy.send(Message::Text("tick".into())).await.expect("send");
        assert_eq!(next_message(&mut busy).await, Message::Text("tick".into()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = close_code(&mut idle, Duration::from_secs(2)).await;
    assert_eq!(
        code,
        Some(CloseCode::Away),
        "the idle socket closed with 1001"
    );
    busy.send(Message::Text("still here".into()))
        .await
        .expect("the busy socket is open");
    assert_eq!(
        next_message(&mut busy).await,
        Message::Text("still here".into())
    );
}

async fn wait_for(condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The example key of RFC 6455 (its accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`).
const VALID_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(extra_headers: &str, key: &str) -> String {
    format!(
        "GET /ws/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extra_headers}\r\n"
    )
}

/// An upgrade request over raw TCP, with exactly these Origin headers (none for `[]`).
async fn handshake(
    port: u16,
    origins: &[String],
    cookie: Option<&str>,
    key: &str,
) -> (u16, String) {
    let mut extra = String::new();
    for origin in origins {
        extra.push_str(&format!("Origin: {origin}\r\n"));
    }
    if let Some(cookie) = cookie {
        extra.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    raw(port, &upgrade_request(&extra, key)).await
}

/// Sends `request` and reads the answer's head (and what came with it).
async fn raw(port: u16, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&received).contains("\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    // A little more for the body of a problem answer.
    if let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await
    {
        received.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    (status_of(&text), text)
}

#[tokio::test]
async fn a_redis_outage_leaves_open_sockets_open() {
    let ws = spawn_websocket_echo().await;
    let redis = RedisServer::start();
    let app = spawn_app_with(AppOptions {
        redis_url: Some(redis.url()),
        redis: RedisKeys::new()
            .connect_timeout_ms(300)
            .response_timeout_ms(300),
        routes: vec![socket_route(&ws)],
        ..AppOptions::default()
    })
    .await;
    let (mut browser, cookie) = alice(&app).await;
    let mut socket = open(&app, "/ws/live", Some(&cookie)).await.expect("open");

    // Several session checks fail to reach Redis: none of them ends the socket.
    redis.pause();
    tokio::time::sleep(Duration::from_secs(5)).await;
    socket
        .send(Message::Text("during".into()))
        .await
        .expect("send");
    assert_eq!(
        next_message(&mut socket).await,
        Message::Text("during".into())
    );
    redis.resume();

    // And the checks still work afterwards.
    log_out(&mut browser).await;
    let (code, _) = close_code(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(code, Some(CloseCode::Policy));
}

#[tokio::test]
async fn a_browser_that_stops_reading_stops_the_upstream_not_gatehouses_memory() {
    let ws = spawn_websocket_echo().await;
    let app = app_with_socket_route(&ws).await;
    let (_browser, cookie) = alice(&app).await;
    let mut socket = open(&app, "/ws/flood", Some(&cookie)).await.expect("open");

    // The page reads one message, then nothing for two seconds: the upstream can only get
    // as far as the sockets' buffers and the relay's window take it.
    assert!(matches!(
        next_message(&mut socket).await,
        Message::Binary(_)
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = ws.flooded_bytes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = ws.flooded_bytes();
    assert!(
        later - stalled < 1 << 20,
        "the upstream is held back while the browser does not read: {stalled} then {later}"
    );
    assert!(
        stalled < 64 << 20,
        "at most the buffers on the way, not the {} MiB a relay without backpressure takes",
        stalled >> 20
    );

    // Reading again lets it go on.
    for _ in 0..(stalled / (64 * 1024) + 50) {
        assert!(matches!(
            next_message(&mut socket).await,
            Message::Binary(_)
        ));
    }
    assert!(ws.flooded_bytes() > stalled, "the upstream sends again");
}

#[tokio::test]
async fn ending_a_session_from_another_device_closes_its_sockets() {
    let ws = spawn_websocket_echo().await;
    let app = app_with_socket_route(&ws).await;
    let (_laptop, laptop_cookie) = alice(&app).await;
    let (mut phone, phone_cookie) = alice(&app).await;
    let mut laptop_socket = open(&app, "/ws/live", Some(&laptop_cookie))
        .await
        .expect("open");
    let mut phone_socket = open(&app, "/ws/live", Some(&phone_cookie))
        .await
        .expect("open");

    // From the phone, alice signs the laptop out ("your sessions").
    let listed = phone.api_get("/auth/sessions").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let sessions = listed.json()["sessions"]
        .as_array()
        .expect("sessions")
        .clone();
    let laptop = sessions
        .iter()
        .find(|s| s["current"] == false)
        .expect("the laptop's session");
    let ended = phone
        .request(
            reqwest::Method::DELETE,
            &format!("/auth/sessions/{}", laptop["id"].as_str().expect("id")),
            &[("x-csrf", "1")],
            None,
        )
        .await;
    assert_eq!(ended.status, 204, "{}", ended.body);

    let (code, after) = close_code(&mut laptop_socket, Duration::from_secs(10)).await;
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(after < Duration::from_secs(5), "closed {after:?} later");
    // The phone's own socket stays.
    phone_socket
        .send(Message::Text("still mine".into()))
        .await
        .expect("send");
    assert_eq!(
        next_message(&mut phone_socket).await,
        Message::Text("still mine".into())
    );
}

#[tokio::test]
async fn a_handshake_with_a_token_due_for_refresh_carries_the_refreshed_one() {
    let ws = spawn_websocket_echo().await;
    let long_sessions = AppOptions {
        session: SessionKeys::long(),
        ..AppOptions::default()
    };
    let app = app_with_socket_route_and(socket_route(&ws), long_sessions).await;
    let (browser, cookie) = alice(&app).await;
    let before = browser.tokens().await;

    // Past the access token's lifetime (an hour at the test provider).
    app.clock.advance(Duration::from_secs(3601));
    let mut socket = open(&app, "/ws/live", Some(&cookie)).await.expect("open");
    socket
        .send(Message::Text("fresh".into()))
        .await
        .expect("send");
    assert_eq!(
        next_message(&mut socket).await,
        Message::Text("fresh".into())
    );

    let after = browser.tokens().await;
    assert_ne!(
        after.access_token.expose_secret(),
        before.access_token.expose_secret(),
        "the session was refreshed before the handshake"
    );
    let handshake = ws
        .handshakes()
        .pop()
        .expect("the upstream saw the handshake");
    assert_eq!(
        handshake.header("authorization"),
        Some(format!("Bearer {}", after.access_token.expose_secret()).as_str()),
        "the upstream got the refreshed token, not the expired one"
    );
}

#[tokio::test]
async fn a_session_that_idles_out_closes_its_socket_with_1008() {
    let ws = spawn_websocket_echo().await;
    let short_idle = AppOptions {
        session: SessionKeys::new()
            .idle_timeout_secs(600)
            .touch_interval_secs(60),
        ..AppOptions::default()
    };
    let app = app_with_socket_route_and(socket_route(&ws), short_idle).await;
    let (_browser, cookie) = alice(&app).await;
    let mut socket = open(&app, "/ws/live", Some(&cookie)).await.expect("open");
    socket.send(Message::Text("hi".into())).await.expect("send");
    assert_eq!(next_message(&mut socket).await, Message::Text("hi".into()));

    // The session's idle timeout passes (the injected clock): the next check finds it gone.
    app.clock.advance(Duration::from_secs(601));
    let (code, after) = close_code(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(after < Duration::from_secs(5), "closed {after:?} later");
}
