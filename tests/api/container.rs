//! The container image (issue 30): deploy/container/Containerfile's runtime stage, built
//! with podman from the binary cargo built (laid out by the same deploy/container/
//! assemble-rootfs its build stage runs), holds no shell and no compiler, runs as a non-root
//! uid on a read-only root, and logs a user in against the test provider and Redis on the
//! host. Skipped, saying why, only where podman cannot run at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::helpers::processes::{artifacts_dir, free_port, repo_root, shared_provider};
use crate::helpers::{
    config_dir, random_name, register_client, spawn_app_with, AppOptions, Preset, TestApp,
};

/// What `podman run` needs on these machines (see STACK-NOTES / docs/decisions.md).
const RUN_FLAGS: &[&str] = &[
    "--network",
    "host",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(args)
        .output()
        .expect("podman runs")
}

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Why podman cannot run here, if it cannot.
fn podman_missing() -> Option<String> {
    match Command::new("podman").arg("--version").output() {
        Err(error) => Some(format!(
            "podman is not installed ({error}); scripts/ensure-deps installs it"
        )),
        Ok(_) => {
            let info = podman(&["info", "--format", "{{.Host.OCIRuntime.Name}}"]);
            (!info.status.success()).then(|| {
                format!(
                    "podman cannot run containers here: {}",
                    String::from_utf8_lossy(&info.stderr).trim()
                )
            })
        }
    }
}

/// The shipped Containerfile's runtime stage, verbatim, after a `build` stage that holds
/// the rootfs assembled here instead of compiling it (labelled `stage`, to remove it after).
fn test_containerfile(stage: &str) -> String {
    let shipped = std::fs::read_to_string(repo_root().join("deploy/container/Containerfile"))
        .expect("deploy/container/Containerfile");
    let runtime = &shipped[shipped
        .find("FROM scratch AS runtime")
        .expect("a runtime stage")..];
    assert!(
        runtime.contains("COPY --from=build /rootfs/ /"),
        "the runtime stage takes the build stage's rootfs"
    );
    format!("FROM scratch AS build\nLABEL gatehouse.test.stage={stage}\nCOPY rootfs/ /rootfs/\n\n{runtime}")
}

/// A build context: the stripped binary's rootfs (by assemble-rootfs) and the Containerfile.
fn build_context(stage: &str) -> PathBuf {
    let context = artifacts_dir().join(stage);
    std::fs::create_dir_all(&context).expect("context");
    let binary = context.join("gatehouse");
    std::fs::copy(env!("CARGO_BIN_EXE_gatehouse"), &binary).expect("copy binary");
    // The debug build's symbols are most of its size; a release image strips them too.
    ok(
        &Command::new("strip").arg(&binary).output().expect("strip"),
        "strip",
    );
    ok(
        &Command::new(repo_root().join("deploy/container/assemble-rootfs"))
            .arg(&binary)
            .arg(repo_root().join("static"))
            .arg(context.join("rootfs"))
            .output()
            .expect("assemble-rootfs"),
        "assemble-rootfs",
    );
    std::fs::remove_file(&binary).expect("remove binary");
    std::fs::write(context.join("Containerfile"), test_containerfile(stage))
        .expect("Containerfile");
    context
}

/// Every path in the image's file system.
fn image_files(image: &str) -> Vec<String> {
    let container = ok(&podman(&["create", image]), "create");
    let tar = artifacts_dir().join(format!("{}.tar", random_name("export")));
    let exported = podman(&["export", "-o", &tar.display().to_string(), &container]);
    let _ = podman(&["rm", &container]);
    ok(&exported, "export");
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .expect("tar");
    let _ = std::fs::remove_file(&tar);
    ok(&listing, "tar -t")
        .lines()
        .map(|line| {
            line.trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned()
        })
        .collect()
}

/// The config and secret files the container gets mounted, for an app whose public URL is
/// the container's listener.
fn mounts(app: &TestApp, port: u16) -> (PathBuf, PathBuf) {
    let secrets = config_dir("");
    let secret = secrets.join("client-secret");
    std::fs::write(&secret, &app.client_secret).expect("secret");
    // Readable by the image's user (65532), which does not own it.
    set_mode(&secret, 0o644);
    let config = app
        .config_toml
        .replacen(
            "[server]\n",
            &format!("[server]\nbind = \"127.0.0.1:{port}\"\n"),
            1,
        )
        .replacen(
            &format!("client_id = \"{}\"\n", app.client_id),
            &format!(
                "client_id = \"{}\"\nclient_secret_file = \"/run/secrets/gatehouse/client-secret\"\n",
                app.client_id
            ),
            1,
        );
    let config_dir = config_dir(&config);
    set_mode(&config_dir.join("gatehouse.toml"), 0o644);
    (config_dir, secrets)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Stops and removes the container when the test ends, however it ends.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "2", &self.0]);
    }
}

#[tokio::test]
async fn the_image_runs_gatehouse_as_non_root_without_a_shell_and_logs_a_user_in() {
    if let Some(reason) = podman_missing() {
        println!("SKIPPED: {reason}");
        return;
    }
    // The image: built from the assembled rootfs, no package download, no registry.
    let started = Instant::now();
    let stage = random_name("image");
    let context = build_context(&stage);
    let image = format!("localhost/gatehouse-test:{stage}");
    let built = podman(&[
        "build",
        "--quiet",
        "--tag",
        &image,
        "--file",
        &context.join("Containerfile").display().to_string(),
        &context.display().to_string(),
    ]);
    ok(&built, "podman build");
    // The image has it now; 40 MB a run need not stay behind.
    let _ = std::fs::remove_dir_all(context.join("rootfs"));
    let build_time = started.elapsed();
    let size: u64 = ok(
        &podman(&["image", "inspect", "--format", "{{.Size}}", &image]),
        "inspect size",
    )
    .parse()
    .expect("a size");
    let user = ok(
        &podman(&["image", "inspect", "--format", "{{.Config.User}}", &image]),
        "inspect user",
    );
    assert_eq!(user, "65532:65532", "the image's user");

    // What is in it: the binary, its libraries, the CA certificates, the demo's static dir;
    // no shell, no package manager, no compiler.
    let files = image_files(&image);
    for needed in [
        "usr/local/bin/gatehouse",
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/gatehouse/static/index.html",
    ] {
        assert!(
            files.iter().any(|f| f == needed),
            "{needed} missing: {files:?}"
        );
    }
    let forbidden = [
        "sh", "bash", "dash", "busybox", "cc", "gcc", "ld", "as", "rustc", "cargo", "apt", "dpkg",
        "python3", "perl",
    ];
    for file in &files {
        let name = file.rsplit('/').next().unwrap_or(file);
        assert!(
            !forbidden.contains(&name) && !name.starts_with("gcc-") && !name.starts_with("cc1"),
            "the image holds {file}"
        );
    }
    let no_shell = podman(
        &[
            &["run", "--rm"],
            RUN_FLAGS,
            &["--entrypoint", "/bin/sh", &image, "-c", "id"],
        ]
        .concat(),
    );
    assert!(!no_shell.status.success(), "a shell ran in the image");

    // gatehouse in the container, on the host's provider and Redis, config and secret
    // mounted read-only, root file system read-only.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let issuer = shared_provider().issuer.clone();
    let client = register_client(&issuer, &base).await;
    let template = spawn_app_with(AppOptions {
        preset: Some(Preset {
            issuer,
            client,
            listener: std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
        }),
        public_url: Some(base.clone()),
        ..AppOptions::default()
    })
    .await;
    let (config, secrets) = mounts(&template, port);
    let name = random_name("gatehouse-");
    let run = podman(
        &[
            &["run", "--detach", "--name", &name, "--read-only"],
            RUN_FLAGS,
            &[
                "--volume",
                &format!("{}:/etc/gatehouse:ro", config.display()),
                "--volume",
                &format!("{}:/run/secrets/gatehouse:ro", secrets.display()),
                &image,
            ],
        ]
        .concat(),
    );
    ok(&run, "podman run");
    let running = Running(name.clone());
    let app = TestApp {
        base,
        port,
        ..template
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = app
            .http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            ok(&podman(&["logs", &running.0]), "logs")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // It runs as uid 65532, not root.
    let pid = ok(
        &podman(&["inspect", "--format", "{{.State.Pid}}", &running.0]),
        "pid",
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uids = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .expect("Uid line");
    assert!(
        uids.split_whitespace().skip(1).all(|uid| uid == "65532"),
        "{uids}"
    );

    // A user logs in through it, and the demo SPA is served.
    let mut browser = app.browser();
    browser.login("alice").await;
    let user = browser.api_get("/auth/user").await;
    assert_eq!(user.status, 200, "{}", user.body);
    assert_eq!(user.json()["sub"], "alice");
    let page = browser.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<html") || page.body.contains("<!doctype"),
        "{}",
        page.body
    );

    // SIGTERM (podman stop) ends it cleanly.
    ok(&podman(&["stop", "-t", "10", &running.0]), "stop");
    let exit = ok(
        &podman(&["inspect", "--format", "{{.State.ExitCode}}", &running.0]),
        "exit code",
    );
    // Its log joins the whole-run secret check (scripts/check-log-secrets).
    let logs = podman(&["logs", &running.0]);
    let mut log = logs.stdout.clone();
    log.extend_from_slice(&logs.stderr);
    std::fs::write(context.join("gatehouse.stderr"), &log).expect("log");
    assert_eq!(exit, "0", "{}", String::from_utf8_lossy(&log));
    assert!(
        String::from_utf8_lossy(&log).contains("SIGTERM: draining"),
        "{}",
        String::from_utf8_lossy(&log)
    );
    drop(running);
    let _ = podman(&["rmi", "-f", &image]);
    let build_stage = podman(&[
        "images",
        "--quiet",
        "--filter",
        &format!("label=gatehouse.test.stage={stage}"),
    ]);
    for id in String::from_utf8_lossy(&build_stage.stdout).split_whitespace() {
        let _ = podman(&["rmi", "-f", id]);
    }
    println!(
        "container image: {:.1} MB ({size} bytes, stripped debug build; {} files), built in \
         {build_time:?}",
        size as f64 / 1_000_000.0,
        files.len()
    );
}
