//! Request bodies under deadlines and caps (issue 23): a body trickled a byte at a time is
//! cut off, whatever endpoint it is sent to; hundreds of them under a 1024-descriptor limit
//! leave a logged-in user served; out of descriptors, gatehouse keeps serving what it has.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::echo::{spawn_echo, status_of};
use crate::helpers::processes::{free_port, serve_command, spawn_in_nursery};
use crate::helpers::{config_dir, spawn_app_with, AppOptions, Route, ServerKeys, TestApp};

/// What a client trickling its body saw: when the first bytes of an answer came, when
/// the server closed the connection (both from the end of the head), and the answer.
struct Trickled {
    answered: Option<Duration>,
    closed: Duration,
    answer: String,
}

/// Sends `head`, then one byte of the body every `every` until the server closes.
async fn trickle_body(port: u16, head: &str, every: Duration, give_up: Duration) -> Trickled {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let started = Instant::now();
    let mut answered = None;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if started.elapsed() > give_up {
            received.extend_from_slice(b" (never closed)");
            break;
        }
        let _ = stream.write_all(b"a").await;
        match tokio::time::timeout(every, stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answered.get_or_insert(started.elapsed());
                received.extend_from_slice(&buf[..n]);
            }
        }
    }
    Trickled {
        answered,
        closed: started.elapsed(),
        answer: String::from_utf8_lossy(&received).into_owned(),
    }
}

fn post_head(path: &str, length: u64, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {length}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_at_its_deadline_on_every_kind_of_endpoint() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        server: ServerKeys::new()
            .body_timeout_ms(1000)
            .body_min_bytes_per_sec(500),
        routes: vec![Route::new("/api", &format!("{}/", echo.base)).token("none")],
        ..AppOptions::default()
    })
    .await;
    let every = Duration::from_millis(200);
    let give_up = Duration::from_secs(10);
    for (what, head) in [
        ("back-channel logout", post_head("/auth/backchannel-logout", 10_000, "")),
        (
            "back-channel logout, chunked",
            "POST /auth/backchannel-logout HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n"
                .to_owned(),
        ),
        ("an API route", post_head("/api/upload", 100_000, "X-CSRF: 1\r\n")),
    ] {
        let Trickled {
            closed: took,
            answer,
            ..
        } = trickle_body(app.port, &head, every, give_up).await;
        assert_eq!(status_of(&answer), 408, "{what}: {answer}");
        assert!(
            answer.contains("urn:gatehouse:problem:request-body-timeout"),
            "{what}: {answer}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{what}: closed after {took:?}"
        );
    }
    assert!(echo.seen().is_empty() || echo.seen() == vec!["/upload".to_owned()]);

    // Declared bodies over an endpoint's cap are refused before a byte is read.
    for (path, length) in [
        ("/auth/backchannel-logout", 100_000),
        ("/auth/logout", 10_000),
    ] {
        let trickled = trickle_body(app.port, &post_head(path, length, ""), every, give_up).await;
        let answer = &trickled.answer;
        assert_eq!(status_of(answer), 413, "{path}: {answer}");
        let answered = trickled.answered.expect("an answer");
        assert!(
            answered < Duration::from_millis(500),
            "{path}: {answered:?}"
        );
        let closed = trickled.closed;
        assert!(closed < Duration::from_secs(4), "{path}: {closed:?}");
    }

    // A streamed upload slower than the deadline but above the minimum rate goes through:
    // 6,000 bytes over about 3 s at 2,000 bytes/s.
    let mut stream = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    stream
        .write_all(post_head("/api/upload", 6000, "X-CSRF: 1\r\nConnection: close\r\n").as_bytes())
        .await
        .expect("head");
    let started = Instant::now();
    for _ in 0..30 {
        stream.write_all(&[b'x'; 200]).await.expect("body");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(started.elapsed() > Duration::from_millis(2500));
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("\"body_len\":6000"), "{answer}");
}

/// gatehouse's own binary on `app`'s configuration and Redis, at another port, under a
/// descriptor limit of `soft`:`hard`.
struct LimitedGatehouse {
    port: u16,
    pid: u32,
    stderr: std::path::PathBuf,
    _child: std::process::Child,
}

impl LimitedGatehouse {
    async fn start(app: &TestApp, soft: u64, hard: u64) -> Self {
        let port = free_port();
        let config = app.config_toml.replacen(
            "[server]\n",
            &format!("[server]\nbind = \"127.0.0.1:{port}\"\n"),
            1,
        );
        let dir = config_dir(&config);
        let (mut command, stderr) = serve_command(&dir, &app.client_secret);
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_in_nursery(command);
        let started = Self {
            port,
            pid: child.id(),
            stderr,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _) = started.user_call("").await;
            if status != 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "did not start: {}",
                started.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// `/auth/user` on a new connection: the status (0 when nothing answered).
    async fn user_call(&self, cookie: &str) -> (u16, Duration) {
        let started = Instant::now();
        let request = format!(
            "GET /auth/user HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        );
        let answer = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.ok()?;
            Some(status_of(&String::from_utf8_lossy(&response)))
        };
        let status = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        (status, started.elapsed())
    }
}

#[tokio::test]
async fn three_hundred_slow_bodies_under_1024_descriptors_leave_a_user_served() {
    let app = spawn_app_with(AppOptions {
        server: ServerKeys::new().body_timeout_ms(3000),
        ..AppOptions::default()
    })
    .await;
    let mut alice = app.browser();
    alice.login("alice").await;
    let cookie = format!(
        "{}={}",
        app.cookie_name(),
        alice.session_cookie().expect("session")
    );
    let gatehouse = LimitedGatehouse::start(&app, 1024, 1024).await;
    assert!(
        gatehouse.logs().contains("open descriptor limit"),
        "{}",
        gatehouse.logs()
    );
    let (status, _) = gatehouse.user_call(&cookie).await;
    assert_eq!(status, 200, "alice's session at the second instance");
    let baseline = gatehouse.open_descriptors();

    let head = post_head("/auth/backchannel-logout", 10_000, "");
    let slow: Vec<_> = (0..300)
        .map(|_| {
            let head = head.clone();
            let port = gatehouse.port;
            tokio::spawn(async move {
                trickle_body(port, &head, Duration::from_secs(1), Duration::from_secs(20)).await
            })
        })
        .collect();
    // While they trickle, and until they are all cut off, alice keeps being answered.
    let watch_until = Instant::now() + Duration::from_secs(5);
    let mut calls = 0;
    let mut peak = 0;
    while Instant::now() < watch_until {
        let (status, took) = gatehouse.user_call(&cookie).await;
        assert_eq!(status, 200, "call {calls}: {}", gatehouse.logs());
        assert!(took < Duration::from_secs(1), "call {calls} took {took:?}");
        calls += 1;
        peak = peak.max(gatehouse.open_descriptors());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        peak >= baseline + 250,
        "the slow connections were open: {peak} vs {baseline}"
    );
    for task in slow {
        let Trickled {
            closed: took,
            answer,
            ..
        } = task.await.expect("task");
        assert_eq!(status_of(&answer), 408, "{answer}");
        assert!(
            took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
            "cut off after {took:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while gatehouse.open_descriptors() > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "descriptors {} after, {baseline} before",
            gatehouse.open_descriptors()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU ticks (user + system) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[tokio::test]
async fn out_of_descriptors_it_keeps_serving_its_connections_without_spinning() {
    let app = spawn_app_with(AppOptions {
        server: ServerKeys::new().body_timeout_ms(4000),
        ..AppOptions::default()
    })
    .await;
    // A soft limit below the hard one: raised at start.
    let gatehouse = LimitedGatehouse::start(&app, 96, 192).await;
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", gatehouse.pid)).expect("limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("limit line");
    assert!(
        open_files
            .split_whitespace()
            .filter(|w| *w == "192")
            .count()
            == 2,
        "{open_files}"
    );

    // One kept-alive connection from before the flood.
    let mut kept = TcpStream::connect(("127.0.0.1", gatehouse.port))
        .await
        .expect("connect");
    let mut keep_alive_call = async || {
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(1), kept.read(&mut buf))
            .await
            .expect("answered within 1 s")
            .expect("read");
        status_of(&String::from_utf8_lossy(&buf[..n]))
    };
    assert_eq!(keep_alive_call().await, 200);

    let head = post_head("/auth/backchannel-logout", 10_000, "");
    let slow: Vec<_> = (0..250)
        .map(|_| {
            let head = head.clone();
            let port = gatehouse.port;
            tokio::spawn(async move {
                trickle_body(port, &head, Duration::from_secs(1), Duration::from_secs(30)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ticks_before = cpu_ticks(gatehouse.pid);
    let window = Instant::now();
    for _ in 0..8 {
        assert_eq!(keep_alive_call().await, 200, "{}", gatehouse.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ticks = cpu_ticks(gatehouse.pid) - ticks_before;
    let hz = 100.0; // USER_HZ on Linux
    let busy = ticks as f64 / hz / window.elapsed().as_secs_f64();
    assert!(
        busy < 0.5,
        "gatehouse used {busy:.2} of a CPU while out of descriptors"
    );
    assert!(
        gatehouse.logs().contains("Too many open files"),
        "the flood did exhaust the descriptors: {}",
        gatehouse.logs()
    );
    for task in slow {
        let _ = task.await;
    }
    // Once the slow ones are cut off, new connections are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = gatehouse.user_call("").await;
        if status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new connection served: {}",
            gatehouse.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
