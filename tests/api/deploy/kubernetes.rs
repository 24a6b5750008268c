//! deploy/kubernetes: the manifests parsed and checked against gatehouse itself. The
//! ConfigMap's file loads with the real config loader (with the Deployment's environment and
//! the Secret's files where the Deployment mounts them); the container ports are the
//! listeners that configuration binds; the probes ask the admin listener for paths a running
//! gatehouse answers 200 on; the Service, PodDisruptionBudget and HorizontalPodAutoscaler
//! point at the Deployment. The checker is shown to fail on a changed probe path or port.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::helpers::processes::repo_root;
use crate::helpers::{config_dir, spawn_app_with, AppOptions, TestApp};

/// Every document of every YAML file in deploy/kubernetes, by kind.
fn manifests() -> BTreeMap<String, Value> {
    let dir = repo_root().join("deploy/kubernetes");
    let mut by_kind = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
            let kind = value["kind"].as_str().expect("kind").to_owned();
            assert!(by_kind.insert(kind.clone(), value).is_none(), "two {kind}s");
        }
    }
    by_kind
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// A probe's or Service's port, by name or number, as a container port number.
fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    match port {
        Value::Number(n) => n.as_u64(),
        Value::String(name) => container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    }
}

/// The container's environment, with `resourceFieldRef` values worked out from its
/// resources as the kubelet does (CPU rounded up to whole cores with divisor 1).
fn environment(container: &Value) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for var in container["env"].as_array().cloned().unwrap_or_default() {
        let name = var["name"].as_str().expect("name").to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else {
            let field = &var["valueFrom"]["resourceFieldRef"];
            assert_eq!(
                field["resource"], "limits.cpu",
                "{name}: only limits.cpu is modelled"
            );
            let cpu = container["resources"]["limits"]["cpu"]
                .as_str()
                .expect("a CPU limit");
            let cores = match cpu.strip_suffix('m') {
                Some(milli) => milli.parse::<u64>().expect("millicores").div_ceil(1000),
                None => cpu.parse::<u64>().expect("cores"),
            };
            cores.to_string()
        };
        env.push((name, value));
    }
    env
}

/// What a secret file holds, for the key that names it: enough for the loader's checks.
fn stand_in_secret(key: &str) -> String {
    let random = gatehouse::session::crypto::b64(&gatehouse::session::crypto::random_bytes());
    match key {
        "url_file" => "redis://127.0.0.1:6379".to_owned(),
        "api_token_file" => format!("oncall:{random}\n"),
        _ => random,
    }
}

/// Every `…_file` key in the TOML, with its path (dotted key → path).
fn file_keys(table: &toml::Table, at: &str, found: &mut Vec<(String, String)>) {
    for (key, value) in table {
        let dotted = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match value {
            toml::Value::Table(inner) => file_keys(inner, &dotted, found),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        file_keys(inner, &dotted, found);
                    }
                }
            }
            toml::Value::String(path) if key.ends_with("_file") => {
                found.push((dotted, path.clone()))
            }
            _ => {}
        }
    }
}

/// Every disagreement between the manifests and gatehouse: empty when they agree. `live`
/// is a running gatehouse with an admin listener: a probe path must answer 200 there.
async fn problems(manifests: &BTreeMap<String, Value>, live: &TestApp) -> Vec<String> {
    let mut problems = Vec::new();
    let deployment = &manifests["Deployment"];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = container(deployment);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];

    // The configuration file: mounted where GATEHOUSE_CONFIG says.
    let env = environment(container);
    let config_path = env
        .iter()
        .find(|(name, _)| name == "GATEHOUSE_CONFIG")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let mounts = container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let mounted_from = |path: &str| -> Option<(Value, String)> {
        mounts.iter().find_map(|mount| {
            let at = mount["mountPath"].as_str()?;
            let rest = path.strip_prefix(at)?.strip_prefix('/')?;
            Some((volume(mount["name"].as_str()?), rest.to_owned()))
        })
    };
    let item_listed = |volume: &Value, source: &str, rest: &str| {
        volume[source]["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|item| item["path"] == rest))
    };
    let Some((config_volume, config_name)) = mounted_from(&config_path) else {
        problems.push(format!(
            "GATEHOUSE_CONFIG `{config_path}` is not in any mount"
        ));
        return problems;
    };
    let configmap = &manifests["ConfigMap"];
    if config_volume["configMap"]["name"] != configmap["metadata"]["name"]
        || !item_listed(&config_volume, "configMap", &config_name)
    {
        problems.push(format!(
            "GATEHOUSE_CONFIG `{config_path}` is not the ConfigMap's file"
        ));
    }
    let Some(config_text) = configmap["data"][config_name.as_str()].as_str() else {
        problems.push(format!("the ConfigMap has no `{config_name}`"));
        return problems;
    };

    // Every *_file key names a file a Secret volume mounts; with stand-ins of those files
    // where the pod would have them, the real loader accepts the file and the environment.
    let table: toml::Table = config_text.parse().expect("the ConfigMap's TOML");
    let mut files = Vec::new();
    file_keys(&table, "", &mut files);
    let secrets = config_dir("");
    let mut local_text = config_text.to_owned();
    for (key, path) in &files {
        match mounted_from(path) {
            Some((volume, rest)) if item_listed(&volume, "secret", &rest) => {
                let local = secrets.join(rest);
                let leaf = key.rsplit('.').next().unwrap_or(key);
                std::fs::write(&local, stand_in_secret(leaf)).expect("stand-in");
                local_text = local_text.replace(path.as_str(), &local.display().to_string());
            }
            _ => problems.push(format!(
                "{key} = `{path}` is not a file of a mounted Secret's items"
            )),
        }
    }
    let settings = match gatehouse::config::load(Some(&local_text), env.clone()) {
        Ok(settings) => settings,
        Err(errors) => {
            problems.push(format!(
                "the ConfigMap with the pod's environment: {errors}"
            ));
            return problems;
        }
    };
    for (name, _) in &env {
        let known = ["GATEHOUSE_CONFIG", "GATEHOUSE_LOG"].contains(&name.as_str())
            || name.starts_with("GATEHOUSE_");
        if !known {
            problems.push(format!("environment `{name}` is nothing gatehouse reads"));
        }
    }

    // Ports: the container's are the listeners the configuration binds.
    let http_port = u64::from(settings.server.bind.port());
    let Some(admin_port) = settings.admin.bind.map(|a| u64::from(a.port())) else {
        problems.push("the ConfigMap sets no admin listener for the probes".into());
        return problems;
    };
    let declared: Vec<u64> = container["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p["containerPort"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    for port in &declared {
        if ![http_port, admin_port].contains(port) {
            problems.push(format!(
                "containerPort {port} is no listener of gatehouse's"
            ));
        }
    }
    for port in [http_port, admin_port] {
        if !declared.contains(&port) {
            problems.push(format!(
                "gatehouse listens on {port}; the container does not say so"
            ));
        }
    }

    // Probes: on the admin listener, at paths a running gatehouse answers 200 on there.
    let admin_base = live
        .admin_base
        .as_deref()
        .expect("the live app's admin listener");
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        if get.is_null() {
            if probe != "startupProbe" {
                problems.push(format!("no {probe}"));
            }
            continue;
        }
        if resolve_port(container, &get["port"]) != Some(admin_port) {
            problems.push(format!(
                "{probe} port {} is not the admin listener ({admin_port})",
                get["port"]
            ));
        }
        let path = get["path"].as_str().unwrap_or_default();
        let status = live
            .http
            .get(format!("{admin_base}{path}"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status != 200 {
            problems.push(format!(
                "{probe} path `{path}`: gatehouse's admin listener answers {status}"
            ));
        }
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    if annotations["prometheus.io/port"].as_str() != Some(&admin_port.to_string())
        || annotations["prometheus.io/path"] != "/metrics"
    {
        problems.push("the scrape annotations do not name the admin listener's /metrics".into());
    }

    // Graceful shutdown (after the preStop pause) fits in the pod's grace period.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    if grace <= pause + settings.server.shutdown_timeout.as_secs() {
        problems.push(format!(
            "terminationGracePeriodSeconds {grace} does not exceed the preStop sleep \
             ({pause}) plus shutdown_timeout_secs"
        ));
    }

    // Hardening: non-root, read-only root, no capabilities, bounded resources.
    let security = &container["securityContext"];
    for (what, holds) in [
        (
            "runAsNonRoot",
            pod["securityContext"]["runAsNonRoot"] == true || security["runAsNonRoot"] == true,
        ),
        (
            "a non-zero runAsUser",
            pod["securityContext"]["runAsUser"]
                .as_u64()
                .is_some_and(|u| u > 0),
        ),
        (
            "readOnlyRootFilesystem",
            security["readOnlyRootFilesystem"] == true,
        ),
        (
            "no privilege escalation",
            security["allowPrivilegeEscalation"] == false,
        ),
        (
            "all capabilities dropped",
            security["capabilities"]["drop"] == json!(["ALL"]),
        ),
        (
            "no capabilities added",
            security["capabilities"]["add"].is_null(),
        ),
    ] {
        if !holds {
            problems.push(format!("the container lacks {what}"));
        }
    }
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            if container["resources"][bound][resource].is_null() {
                problems.push(format!("no {resource} {bound}"));
            }
        }
    }

    // The Service reaches the public listener of these pods; the PDB and HPA govern them.
    let service = &manifests["Service"];
    let selects = |selector: &Value| {
        selector
            .as_object()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
    };
    if !selects(&service["spec"]["selector"]) {
        problems.push("the Service does not select the Deployment's pods".into());
    }
    for port in service["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if resolve_port(container, &port["targetPort"]) != Some(http_port) {
            problems.push(format!(
                "the Service's targetPort {} is not the public listener ({http_port})",
                port["targetPort"]
            ));
        }
    }
    if !selects(&manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]) {
        problems.push("the PodDisruptionBudget does not select the Deployment's pods".into());
    }
    let target = &manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"];
    if target["kind"] != "Deployment" || target["name"] != deployment["metadata"]["name"] {
        problems.push("the HorizontalPodAutoscaler scales something else".into());
    }
    problems
}

/// A running gatehouse with an admin listener, for the probe paths.
async fn live() -> TestApp {
    spawn_app_with(AppOptions {
        admin: true,
        ..AppOptions::default()
    })
    .await
}

fn set(manifests: &mut BTreeMap<String, Value>, kind: &str, pointer: &str, value: Value) {
    let target = manifests
        .get_mut(kind)
        .and_then(|m| m.pointer_mut(pointer))
        .unwrap_or_else(|| panic!("{kind} has no {pointer}"));
    *target = value;
}

const CONTAINER: &str = "/spec/template/spec/containers/0";

#[tokio::test]
async fn the_manifests_agree_with_gatehouse() {
    let live = live().await;
    let manifests = manifests();
    for kind in [
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        assert!(manifests.contains_key(kind), "no {kind}");
    }
    let found = problems(&manifests, &live).await;
    assert!(found.is_empty(), "{found:#?}");
}

#[tokio::test]
async fn a_probe_path_or_port_gatehouse_does_not_serve_is_reported() {
    let live = live().await;
    let shipped = manifests();
    let cases: [(&str, &str, Value, &str); 6] = [
        (
            "Deployment",
            "/readinessProbe/httpGet/path",
            json!("/ready"),
            "readinessProbe path `/ready`",
        ),
        (
            "Deployment",
            "/livenessProbe/httpGet/path",
            json!("/metrics/healthz"),
            "livenessProbe path",
        ),
        (
            "Deployment",
            "/readinessProbe/httpGet/port",
            json!("http"),
            "readinessProbe port",
        ),
        (
            "Deployment",
            "/livenessProbe/httpGet/port",
            json!(9092),
            "livenessProbe port",
        ),
        (
            "Deployment",
            "/ports/1/containerPort",
            json!(9092),
            "containerPort 9092",
        ),
        (
            "Service",
            "/spec/ports/0/targetPort",
            json!(8081),
            "targetPort",
        ),
    ];
    for (kind, pointer, value, expected) in cases {
        let mut changed = shipped.clone();
        let pointer = if kind == "Deployment" {
            format!("{CONTAINER}{pointer}")
        } else {
            pointer.to_owned()
        };
        set(&mut changed, kind, &pointer, value.clone());
        let found = problems(&changed, &live).await;
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{kind} {pointer} = {value}: {found:#?}"
        );
    }

    // The configuration side: a listener moved in the ConfigMap, a secret file the
    // Deployment does not mount, an environment variable gatehouse does not read.
    let config = shipped["ConfigMap"]["data"]["gatehouse.toml"]
        .as_str()
        .expect("config")
        .to_owned();
    let mut moved = shipped.clone();
    set(
        &mut moved,
        "ConfigMap",
        "/data/gatehouse.toml",
        json!(config.replace("0.0.0.0:9091", "0.0.0.0:9191")),
    );
    let found = problems(&moved, &live).await;
    assert!(found.iter().any(|p| p.contains("9191")), "{found:#?}");
    let mut unmounted = shipped.clone();
    set(
        &mut unmounted,
        "ConfigMap",
        "/data/gatehouse.toml",
        json!(config.replace(
            "/run/secrets/gatehouse/redis-url",
            "/run/secrets/gatehouse/redis-address"
        )),
    );
    let found = problems(&unmounted, &live).await;
    assert!(
        found.iter().any(|p| p.contains("redis.url_file")),
        "{found:#?}"
    );
    let mut misspelt = shipped.clone();
    set(
        &mut misspelt,
        "Deployment",
        &format!("{CONTAINER}/env/2/name"),
        json!("GATEHOUSE_SERVER__WORKER"),
    );
    let found = problems(&misspelt, &live).await;
    assert!(
        found.iter().any(|p| p.contains("server.worker")),
        "{found:#?}"
    );
}
