//! What can be checked of deploy/ without Docker or Kubernetes: the
//! Dockerfile's shape, that the compose file, the Grafana provisioning and
//! every Kubernetes manifest parse and fit together, that Prometheus's own
//! `promtool` accepts the Prometheus config and every dashboard query, and
//! that every metric and label a dashboard query names is exported by real
//! nodes (a live `/metrics` of an in-process cluster after some puts).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla::multiraft::RuntimeConfig;
use flotilla::proto::{GetRequest, PutRequest};
use flotilla::raft::NodeId;
use flotilla::server::ServerConfig;
use serde_norway::Value;

#[path = "support/local_cluster.rs"]
#[allow(dead_code)] // Not every test file restarts nodes.
mod local_cluster;
#[path = "support/scrape.rs"]
mod scrape;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(relative: &str) -> String {
    let path = deploy().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One YAML document, `<<` merge keys applied.
fn yaml(relative: &str) -> Value {
    let mut value: Value =
        serde_norway::from_str(&read(relative)).unwrap_or_else(|error| panic!("deploy/{relative}: {error}"));
    value.apply_merge().unwrap_or_else(|error| panic!("deploy/{relative}: {error}"));
    value
}

/// `value[a][b]...`, panicking with the path when absent.
fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| v.get(*key).unwrap_or_else(|| panic!("no {} in {v:?}", path.join("."))))
}

fn text(value: &Value, path: &[&str]) -> String {
    match at(value, path) {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("{} is not a scalar: {other:?}", path.join(".")),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().map_or_else(Vec::new, |s| s.iter().filter_map(|v| v.as_str().map(String::from)).collect())
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_as_a_non_root_user_on_a_data_volume() {
    let dockerfile = read("Dockerfile");
    let instructions: Vec<&str> =
        dockerfile.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let stages: Vec<&str> = instructions.iter().copied().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage: {stages:?}");
    assert!(stages[0].ends_with(" AS builder") && stages[0].contains("rust:"), "{}", stages[0]);
    assert!(stages[1].starts_with("FROM debian:bookworm-slim"), "small runtime image: {}", stages[1]);
    let runtime_start = dockerfile.find(stages[1]).expect("the runtime stage");
    let (builder, runtime) = dockerfile.split_at(runtime_start);
    assert!(builder.contains("clang") && builder.contains("libclang-dev"), "bindgen needs clang in the builder");
    assert!(builder.contains("cargo build --release --locked --bin flotilla"));
    assert!(!runtime.contains("cargo "), "nothing is compiled in the runtime image");
    assert!(runtime.contains("COPY --from=builder "), "the runtime stage takes only the binary");
    let user = runtime.lines().find(|l| l.starts_with("USER ")).expect("a USER in the runtime stage");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    let volume = runtime.lines().find(|l| l.starts_with("VOLUME ")).expect("a VOLUME");
    assert!(volume.contains("/var/lib/flotilla"), "{volume}");
    assert!(runtime.contains("FLOTILLA_DATA_DIR=/var/lib/flotilla"), "the node's data dir is the volume");
    assert!(runtime.contains("chown flotilla:flotilla /var/lib/flotilla"), "the user owns its data dir");
    assert!(runtime.contains("ENTRYPOINT [\"/usr/local/bin/flotilla\"]"));
    for port in ["7001", "9001"] {
        assert!(runtime.lines().any(|l| l.starts_with("EXPOSE") && l.contains(port)), "EXPOSE {port}");
    }
}

#[test]
fn the_compose_file_runs_three_nodes_prometheus_scraping_them_and_grafana_with_the_dashboard() {
    let compose = yaml("docker-compose.yml");
    let services = at(&compose, &["services"]).as_mapping().expect("services");
    let nodes: Vec<&str> = services.keys().filter_map(Value::as_str).filter(|n| n.starts_with("flotilla")).collect();
    assert_eq!(nodes, ["flotilla1", "flotilla2", "flotilla3"]);
    let mut ids = BTreeSet::new();
    for (index, name) in nodes.iter().enumerate() {
        let node = at(&compose, &["services", name]);
        assert_eq!(text(node, &["build", "dockerfile"]), "deploy/Dockerfile", "{name}");
        let command = strings(at(node, &["command"]));
        let id = command.iter().skip_while(|a| *a != "--id").nth(1).expect("--id").clone();
        assert_eq!(id, (index + 1).to_string(), "{name}");
        ids.insert(id);
        assert!(command.windows(2).any(|w| w[0] == "--metrics-listen" && w[1] == "0.0.0.0:9001"), "{name}");
        let cluster = text(node, &["environment", "FLOTILLA_INITIAL_CLUSTER"]);
        assert!(cluster.contains(&format!("{}={name}:7001", index + 1)), "{name} is in the cluster: {cluster}");
        let volumes = strings(at(node, &["volumes"]));
        assert!(volumes.iter().any(|v| v.ends_with(":/var/lib/flotilla")), "{name} keeps its data in a volume");
    }
    assert_eq!(ids.len(), 3, "distinct node ids");
    // Prometheus scrapes exactly the three nodes' metrics ports.
    let prometheus = yaml("prometheus.yml");
    let job = at(&prometheus, &["scrape_configs"]).as_sequence().expect("scrape configs").first().expect("a job");
    let targets = strings(
        at(job, &["static_configs"]).as_sequence().expect("static configs")[0].get("targets").expect("targets"),
    );
    assert_eq!(targets, ["flotilla1:9001", "flotilla2:9001", "flotilla3:9001"]);
    // Every file the compose file mounts exists beside it.
    for service in ["prometheus", "grafana"] {
        for volume in strings(at(&compose, &["services", service, "volumes"])) {
            if let Some(source) = volume.strip_prefix("./") {
                let source = source.split(':').next().unwrap_or_default();
                assert!(deploy().join(source).exists(), "{service} mounts missing deploy/{source}");
            }
        }
    }
    let grafana = strings(at(&compose, &["services", "grafana", "volumes"]));
    assert!(grafana.iter().any(|v| v.starts_with("./grafana/flotilla.json:")), "the dashboard is mounted");
    let provider = yaml("grafana/provisioning/dashboards/flotilla.yml");
    let path = text(&at(&provider, &["providers"])[0], &["options", "path"]);
    assert!(grafana.iter().any(|v| v.contains(&format!(":{path}/flotilla.json"))), "mounted where provisioned");
    let sources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let source = &at(&sources, &["datasources"])[0];
    assert_eq!(text(source, &["uid"]), "prometheus", "the uid the dashboard uses");
    assert_eq!(text(source, &["url"]), "http://prometheus:9090");
}

#[test]
fn every_kubernetes_manifest_parses_and_they_fit_together() {
    let dir = deploy().join("k8s");
    let mut manifests = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/k8s") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let name = format!("k8s/{}", path.file_name().and_then(|n| n.to_str()).expect("a name"));
            let value = yaml(&name);
            assert!(value.get("apiVersion").is_some() && value.get("kind").is_some(), "{name}");
            manifests.push((name, value));
        }
    }
    let of_kind = |kind: &str| -> Vec<&Value> {
        manifests.iter().map(|(_, v)| v).filter(|v| v.get("kind").and_then(Value::as_str) == Some(kind)).collect()
    };
    let listed = strings(at(of_kind("Kustomization")[0], &["resources"]));
    for (name, _) in manifests.iter().filter(|(name, _)| !name.ends_with("kustomization.yaml")) {
        assert!(listed.iter().any(|r| name.ends_with(r.as_str())), "kustomization.yaml does not list {name}");
    }
    let set = of_kind("StatefulSet")[0];
    let spec = at(set, &["spec"]);
    let pods = at(spec, &["template", "metadata", "labels"]);
    assert_eq!(at(spec, &["selector", "matchLabels"]), pods);
    assert_eq!(text(spec, &["podManagementPolicy"]), "Parallel", "no node is ready before its peers run");
    assert!(at(spec, &["volumeClaimTemplates"]).as_sequence().is_some_and(|c| !c.is_empty()));
    let container = &at(spec, &["template", "spec", "containers"])[0];
    assert_eq!(text(container, &["readinessProbe", "grpc", "port"]), "7001", "ready = gRPC health on the client port");
    assert_eq!(at(spec, &["template", "spec", "securityContext", "runAsNonRoot"]), &Value::Bool(true));
    let args = strings(at(container, &["args"])).join(" ");
    assert!(args.contains("--data-dir /var/lib/flotilla"), "{args}");
    let replicas = at(spec, &["replicas"]).as_u64().expect("replicas");
    let cluster = at(container, &["env"])
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some("FLOTILLA_INITIAL_CLUSTER"))
        .map(|e| text(e, &["value"]))
        .expect("FLOTILLA_INITIAL_CLUSTER");
    let service = text(spec, &["serviceName"]);
    for ordinal in 0..replicas {
        let member = format!("{}={}-{ordinal}.{service}:7001", ordinal + 1, text(set, &["metadata", "name"]));
        assert!(cluster.split(',').any(|m| m == member), "{member} missing from {cluster}");
    }
    let headless = of_kind("Service").into_iter().find(|s| text(s, &["metadata", "name"]) == service);
    let headless = headless.expect("the StatefulSet's headless service");
    assert_eq!(text(headless, &["spec", "clusterIP"]), "None");
    assert_eq!(at(headless, &["spec", "publishNotReadyAddresses"]), &Value::Bool(true));
    assert_eq!(at(headless, &["spec", "selector"]), pods);
    let budget = of_kind("PodDisruptionBudget")[0];
    assert_eq!(at(budget, &["spec", "selector", "matchLabels"]), pods);
    assert_eq!(text(budget, &["spec", "maxUnavailable"]), "1", "a quorum of 3 survives one disruption");
}

/// `promtool` comes with the Debian `prometheus` package (scripts/setup.sh).
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool").args(args).output().unwrap_or_else(|error| {
        panic!("cannot run promtool ({error}); `bash scripts/setup.sh` installs the Debian package prometheus")
    });
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?} failed: {printed}");
    printed
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let config = deploy().join("prometheus.yml");
    promtool(&["check", "config", config.to_str().expect("a UTF-8 path")]);
}

/// Every query of the dashboard, with Grafana's variables given values.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(&read("grafana/flotilla.json")).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("a dashboard has panels");
    let mut queries = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL target").to_string();
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            queries.push((title, expr.replace("$__rate_interval", "1m").replace("$node", ".*")));
        }
    }
    queries
}

/// Metric names in a PromQL expression (string literals, functions,
/// keywords, label names in `by (...)` and range units left out).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let without_strings: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    let mut names = BTreeSet::new();
    let mut token = String::new();
    for c in without_strings.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
        } else {
            if token.starts_with("flotilla_") || token.starts_with("process_") {
                names.insert(std::mem::take(&mut token));
            }
            token.clear();
        }
    }
    names
}

/// Label names grouped by in `by (...)` clauses.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    expr.split("by (")
        .skip(1)
        .filter_map(|rest| rest.split_once(')'))
        .flat_map(|(labels, _)| labels.split(',').map(|l| l.trim().to_string()).collect::<Vec<_>>())
        .collect()
}

/// Series names and label names of an exposition.
fn exported(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut names, mut labels) = (BTreeSet::new(), BTreeSet::new());
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let series = line.rsplit_once(' ').map_or(line, |(series, _)| series);
        let (name, rest) = series.split_once('{').unwrap_or((series, ""));
        names.insert(name.to_string());
        for pair in rest.trim_end_matches('}').split(',').filter(|p| !p.is_empty()) {
            labels.insert(pair.split('=').next().unwrap_or_default().to_string());
        }
    }
    (names, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_metrics_and_labels_a_live_node_exports() {
    let queries = dashboard_queries();
    let titles: String = queries.iter().map(|(title, _)| title.to_lowercase()).collect::<Vec<_>>().join("|");
    for topic in ["throughput", "latency", "fsync", "batch size", "led", "quiesced", "election", "snapshot", "peer"] {
        assert!(titles.contains(topic), "no dashboard panel about {topic}");
    }
    // PromQL syntax, by Prometheus's own parser: each query as a recording rule.
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, (_, expr)) in queries.iter().enumerate() {
        let quoted = serde_json::to_string(expr).expect("a JSON string is a YAML string");
        rules.push_str(&format!("      - record: dashboard:query_{index}\n        expr: {quoted}\n"));
    }
    let rules_file = dir.path().join("rules.yml");
    std::fs::write(&rules_file, rules).expect("writes the rules");
    promtool(&["check", "rules", rules_file.to_str().expect("a UTF-8 path")]);

    // A live cluster with traffic, so every family has its series.
    let mut cluster = local_cluster::LocalCluster::start(3, 4, ServerConfig::default(), RuntimeConfig::default()).await;
    let endpoint = scrape::Endpoint::serve(cluster.nodes[&NodeId(1)].metrics_registry().clone()).await;
    let mut client = cluster.raw(NodeId(1));
    for i in 0..10 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(status) = client.put(PutRequest { key: format!("k{i}").into(), value: b"v".to_vec() }).await {
            assert!(Instant::now() < deadline, "put {i} kept failing: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    client.get(GetRequest { key: "k0".into(), stale_ok: false }).await.expect("get");
    let live = endpoint.scrape().await;
    endpoint.stop().await;
    cluster.stop_all().await;

    let (names, labels) = exported(&live);
    // Prometheus adds these to every scraped series.
    let labels: BTreeSet<String> = labels.into_iter().chain(["instance".into(), "job".into()]).collect();
    for (title, expr) in &queries {
        let used = metric_names(expr);
        assert!(!used.is_empty(), "{title}: no metric in {expr}");
        for name in used {
            assert!(names.contains(&name), "{title}: {name} is not exported by a live node ({expr})");
        }
        for label in grouping_labels(expr) {
            assert!(labels.contains(&label), "{title}: label {label} is not exported ({expr})");
        }
    }
}
