//! Limits on WebSockets (issue 23, part 6): how many one session may hold open, and what the
//! side that sends a message over `max_body_bytes` is told.

use super::*;
use crate::helpers::{captured_logs, random_name};

async fn refused_with_429(app: &TestApp, cookie: &str) -> bool {
    match open(app, "/ws/live", Some(cookie)).await {
        Ok(_) => false,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429, "{response:?}");
            true
        }
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn the_socket_one_over_the_sessions_cap_is_refused_until_one_closes() {
    let ws = spawn_websocket_echo().await;
    let cap = AppOptions {
        session: SessionKeys::new().websocket_max_per_session(3),
        ..AppOptions::default()
    };
    let app = app_with_socket_route_and(socket_route(&ws), cap).await;
    let (_laptop, cookie) = alice(&app).await;
    let mut sockets = Vec::new();
    for i in 0..3 {
        let mut socket = open(&app, "/ws/live", Some(&cookie))
            .await
            .expect("a socket under the cap");
        socket
            .send(Message::Text(format!("hello {i}")))
            .await
            .expect("send");
        assert_eq!(
            next_message(&mut socket).await,
            Message::Text(format!("hello {i}"))
        );
        sockets.push(socket);
    }

    // The fourth: a problem answer, a security event, and the upstream is not asked.
    let request_id = random_name("ws-cap-");
    let headers = format!(
        "Origin: {}\r\nCookie: {}={cookie}\r\nX-Request-Id: {request_id}\r\n",
        app.base,
        app.cookie_name()
    );
    let (status, answer) = raw(app.port, &upgrade_request(&headers, VALID_KEY)).await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer.contains("application/problem+json")
            && answer.contains("urn:gatehouse:problem:too-many-websockets"),
        "{answer}"
    );
    assert_eq!(ws.handshakes().len(), 3, "the upstream never saw it");
    assert!(
        captured_logs()
            .lines()
            .any(|line| line.contains(&request_id)
                && line.contains("event=\"rate_limit.hit\"")
                && line.contains("websocket_max_per_session")),
        "the refusal is a security event"
    );

    // Another session (the same user's phone) counts apart.
    let (_phone, phone_cookie) = alice(&app).await;
    let mut phone_socket = open(&app, "/ws/live", Some(&phone_cookie))
        .await
        .expect("another session's socket");
    phone_socket
        .send(Message::Text("phone".into()))
        .await
        .expect("send");
    assert_eq!(
        next_message(&mut phone_socket).await,
        Message::Text("phone".into())
    );

    // A socket closed gives its place back (once the relay has ended it), and only one.
    let mut closing = sockets.remove(0);
    closing.close(None).await.expect("close");
    let started = Instant::now();
    let mut reopened = loop {
        match open(&app, "/ws/live", Some(&cookie)).await {
            Ok(socket) => break socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == 429 =>
            {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the closed socket's place never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other}"),
        }
    };
    reopened
        .send(Message::Text("again".into()))
        .await
        .expect("send");
    assert_eq!(
        next_message(&mut reopened).await,
        Message::Text("again".into())
    );
    assert!(refused_with_429(&app, &cookie).await, "the cap holds again");
}

#[tokio::test]
async fn a_message_over_the_limit_is_closed_with_1009_to_its_sender() {
    let ws = spawn_websocket_echo().await;
    let app = app_with_socket_route_and(
        socket_route(&ws).max_body_bytes(65536),
        AppOptions::default(),
    )
    .await;
    let (_browser, cookie) = alice(&app).await;

    // The browser sends one: the browser gets 1009, the upstream 1001.
    let mut socket = open(&app, "/ws/live", Some(&cookie)).await.expect("open");
    let limit = vec![7u8; 65_536];
    socket
        .send(Message::Binary(limit.clone()))
        .await
        .expect("send");
    assert_eq!(
        next_message(&mut socket).await,
        Message::Binary(limit),
        "a message of exactly the limit crosses both ways"
    );
    socket
        .send(Message::Binary(vec![7u8; 65_537]))
        .await
        .expect("send");
    let (code, _) = close_code(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(code, Some(CloseCode::Size), "the sender gets 1009");
    wait_for(|| ws.closes().contains(&Some(1001))).await;
    assert_eq!(
        ws.closes(),
        vec![Some(1001)],
        "the upstream is told it went away"
    );

    // The upstream sends one: the upstream gets 1009, the browser 1001.
    let mut socket = open(&app, "/ws/live", Some(&cookie)).await.expect("open");
    socket
        .send(Message::Text("shout 65537".into()))
        .await
        .expect("send");
    let (code, _) = close_code(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(code, Some(CloseCode::Away), "the browser gets 1001");
    wait_for(|| ws.closes().contains(&Some(1009))).await;
    assert_eq!(ws.closes(), vec![Some(1001), Some(1009)]);
}
