//! `log.audit_file`, through the real binary: the security events and nothing else, one
//! JSON object per line, mode 0600, and a new file after logrotate's rename and SIGHUP.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::processes::{free_port, serve_command, spawn_in_nursery};
use crate::helpers::{config_dir, shared_provider};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

async fn wait_for(what: &str, mut ready: impl AsyncFnMut() -> bool, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {}", logs());
}

#[tokio::test]
async fn the_audit_file_holds_only_security_events_as_json_lines_and_is_reopened_on_sighup() {
    let dir = config_dir("");
    let port = free_port();
    let audit = dir.join("audit.log");
    let config = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         workers = 1\nshutdown_timeout_secs = 1\n\
         [log]\nformat = \"json\"\nfilter = \"info\"\naudit_file = {:?}\n\
         [providers.main]\nissuer = \"{}\"\nclient_id = \"audit-tests\"\n",
        audit.display().to_string(),
        shared_provider().issuer
    );
    std::fs::write(dir.join("gatehouse.toml"), config).expect("config");
    let (command, stderr) = serve_command(&dir, "not-used");
    let mut child = spawn_in_nursery(command);
    let logs = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for(
        "gatehouse did not come up",
        async || {
            http.get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
        logs,
    )
    .await;

    // Two security events (no anti-forgery header), and ordinary requests around them.
    let user = http
        .get(format!("{base}/auth/user"))
        .header("x-request-id", "audit-test-1")
        .header("traceparent", format!("00-{TRACE_ID}-b7ad6b7169203331-01"))
        .send()
        .await
        .expect("answer");
    assert_eq!(user.status(), 401);
    let providers = http
        .get(format!("{base}/auth/providers"))
        .send()
        .await
        .expect("answer");
    assert_eq!(providers.status(), 200, "an ordinary request");
    let logout = http
        .post(format!("{base}/auth/logout"))
        .send()
        .await
        .expect("answer");
    assert_eq!(logout.status(), 401);
    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(health.status(), 200, "an ordinary request");

    let lines = audit_lines(&audit);
    assert_eq!(lines.len(), 2, "the two security events only: {lines:?}");
    for line in &lines {
        assert_eq!(line["target"], "gatehouse::security", "{line}");
        assert_eq!(line["message"], "security event", "{line}");
        assert_eq!(line["event"], "csrf.rejected", "{line}");
        assert_eq!(line["level"], "WARN", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
    assert_eq!(lines[0]["reason"], "/auth/user");
    assert_eq!(lines[0]["spans"][0]["request_id"], "audit-test-1");
    assert_eq!(lines[0]["spans"][0]["trace_id"], TRACE_ID);
    assert_eq!(lines[0]["spans"][0]["client_ip"], "127.0.0.1");
    assert_eq!(lines[1]["reason"], "/auth/logout");
    let mode = std::fs::metadata(&audit)
        .expect("audit file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    // The ordinary log still has everything, the events included, one JSON object a line.
    let text = logs();
    assert!(text.contains("gatehouse listening"), "{text}");
    let json_lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert_eq!(
        json_lines
            .iter()
            .filter(|l| l["fields"]["event"] == "csrf.rejected")
            .count(),
        2
    );

    // logrotate: rename, SIGHUP, and the next event goes to a new file.
    let rotated = dir.join("audit.log.1");
    std::fs::rename(&audit, &rotated).expect("rotate");
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP");
    wait_for(
        "no new audit file after SIGHUP",
        async || audit.exists(),
        logs,
    )
    .await;
    let again = http
        .get(format!("{base}/auth/user"))
        .header("x-request-id", "audit-test-2")
        .send()
        .await
        .expect("answer after SIGHUP");
    assert_eq!(again.status(), 401);
    let new_lines = audit_lines(&audit);
    assert_eq!(new_lines.len(), 1, "{new_lines:?}");
    assert_eq!(new_lines[0]["event"], "csrf.rejected");
    assert_eq!(new_lines[0]["spans"][0]["request_id"], "audit-test-2");
    assert_eq!(
        audit_lines(&rotated).len(),
        2,
        "the rotated file is left alone"
    );
    let mode = std::fs::metadata(&audit)
        .expect("audit file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert!(
        child.try_wait().expect("status").is_none(),
        "SIGHUP must not stop gatehouse: {}",
        logs()
    );
    assert!(logs().contains("audit file reopened"));
    let _ = child.kill();
    let _ = child.wait();
}
