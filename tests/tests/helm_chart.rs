//! The Helm chart of `deploy/helm/tollgate`: `helm lint`, `helm template` with the value sets of
//! its `ci/` folder, strict decoding of every rendered object against the Kubernetes API types
//! (`deploy/helm/validate`), and the services' own config checks on the configs it renders.
//! helm and the validator are built from Go modules by `deploy/local/prereqs`; nothing is
//! fetched here.

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tollgate_tests::{binaries, scratch_dir};

/// The value sets of `deploy/helm/tollgate/ci/`.
const VALUE_SETS: [&str; 3] = ["minimal-values.yaml", "managed-values.yaml", "scaled-values.yaml"];

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/tollgate")
}

/// A binary that `deploy/helm/validate/build` put in the cache.
fn tool(name: &str) -> Result<PathBuf> {
    let cache = match std::env::var_os("TOLLGATE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache/tollgate"),
    };
    let path = cache.join("helm/bin").join(name);
    ensure!(path.is_file(), "{} is missing: run deploy/local/prereqs", path.display());
    Ok(path)
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output> {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut pipe = child.stdin.take().context("no stdin")?;
    pipe.write_all(stdin.unwrap_or_default())?;
    drop(pipe);
    Ok(child.wait_with_output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` of `chart` with a values file of `ci/` and `--set` pairs.
fn template(chart: &Path, values: &str, set: &[&str]) -> Result<Output> {
    let mut cmd = Command::new(tool("helm")?);
    cmd.args(["template", "tollgate"]).arg(chart).arg("--values").arg(chart_dir().join("ci").join(values));
    for pair in set {
        cmd.args(["--set", pair]);
    }
    run(&mut cmd, None)
}

/// The rendered manifests, or an error with helm's stderr.
fn rendered(values: &str, set: &[&str]) -> Result<String> {
    let out = template(&chart_dir(), values, set)?;
    ensure!(out.status.success(), "helm template failed: {}", text(&out.stderr));
    Ok(text(&out.stdout))
}

/// Runs the strict decoder over `manifests`; with `configs`, the ConfigMaps' files go there.
fn validate(manifests: &str, configs: Option<&Path>) -> Result<Output> {
    let mut cmd = Command::new(tool("validate")?);
    if let Some(dir) = configs {
        cmd.arg("-configs").arg(dir);
    }
    run(&mut cmd, Some(manifests.as_bytes()))
}

/// Every rendered object, as YAML values.
fn objects(manifests: &str) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(manifests) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            all.push(value);
        }
    }
    Ok(all)
}

fn find<'a>(objects: &'a [Value], kind: &str, name_suffix: &str) -> Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().is_some_and(|n| n.ends_with(name_suffix)))
        .with_context(|| format!("no {kind} named *{name_suffix}"))
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects.iter().filter_map(|o| o["kind"].as_str().map(str::to_owned)).collect();
    kinds.sort();
    kinds
}

#[test]
fn helm_lint_passes_with_every_value_set() -> Result<()> {
    for values in VALUE_SETS {
        let out = run(
            Command::new(tool("helm")?)
                .arg("lint")
                .arg("--strict")
                .arg(chart_dir())
                .arg("--values")
                .arg(chart_dir().join("ci").join(values)),
            None,
        )?;
        ensure!(out.status.success(), "helm lint with {values}: {}{}", text(&out.stdout), text(&out.stderr));
    }
    Ok(())
}

#[test]
fn every_rendered_object_decodes_strictly_into_its_kubernetes_type() -> Result<()> {
    // Every value set renders these; each adds the kinds its values turn on.
    let always = [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "Service",
        "Service",
    ];
    let expected: [(&str, &[&str]); 3] = [
        ("minimal-values.yaml", &["HorizontalPodAutoscaler", "Job", "Secret", "ServiceMonitor"]),
        ("managed-values.yaml", &["Job", "Secret", "ServiceMonitor"]),
        ("scaled-values.yaml", &["HorizontalPodAutoscaler"]),
    ];
    for (values, extra) in expected {
        let mut kinds_wanted: Vec<&str> = always.iter().chain(extra).copied().collect();
        kinds_wanted.sort();
        let manifests = rendered(values, &[])?;
        let out = validate(&manifests, None)?;
        ensure!(out.status.success(), "{values}: {}", text(&out.stderr));
        let summary = format!("{} objects decoded strictly", kinds_wanted.len());
        ensure!(text(&out.stdout).contains(&summary), "{values}: {}", text(&out.stdout));
        assert_eq!(kinds(&objects(&manifests)?), kinds_wanted, "{values}");
    }
    Ok(())
}

/// A chart of our own with one more template, rendered and decoded.
fn validate_with_extra_template(name: &str, template_text: &str) -> Result<Output> {
    let dir = scratch_dir("helm-chart")?.join("tollgate");
    copy_dir(&chart_dir(), &dir)?;
    std::fs::write(dir.join("templates").join(name), template_text)?;
    let out = template(&dir, "minimal-values.yaml", &[])?;
    ensure!(out.status.success(), "helm template failed: {}", text(&out.stderr));
    validate(&text(&out.stdout), None)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[test]
fn a_misspelt_field_in_a_rendered_object_is_refused() -> Result<()> {
    // helm renders both without complaint; only strict decoding catches them.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: typo}\nspec:\n  replica: 2\n  \
                      selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    \
                      spec: {containers: [{name: c, image: i}]}\n";
    let out = validate_with_extra_template("typo.yaml", deployment)?;
    ensure!(!out.status.success(), "a Deployment with `replica` passed: {}", text(&out.stdout));
    ensure!(text(&out.stderr).contains("unknown field \"spec.replica\""), "{}", text(&out.stderr));

    let monitor = "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: typo}\nspec:\n  \
                   selector: {matchLabels: {a: b}}\n  endpoint: [{port: metrics}]\n";
    let out = validate_with_extra_template("typo.yaml", monitor)?;
    ensure!(!out.status.success(), "a ServiceMonitor with `endpoint` passed: {}", text(&out.stdout));
    ensure!(text(&out.stderr).contains("unknown field \"spec.endpoint\""), "{}", text(&out.stderr));

    let unknown_kind = "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n";
    let out = validate_with_extra_template("gadget.yaml", unknown_kind)?;
    ensure!(!out.status.success(), "an unknown kind passed: {}", text(&out.stdout));
    Ok(())
}

#[test]
fn more_consumers_than_usage_partitions_is_refused() -> Result<()> {
    let out = template(&chart_dir(), "minimal-values.yaml", &["consumer.replicaCount=7"])?;
    ensure!(!out.status.success(), "7 consumers on 6 partitions rendered");
    let stderr = text(&out.stderr);
    ensure!(stderr.contains("consumer.replicaCount (7) exceeds the usage topic's partitions"), "{stderr}");
    // As many consumers as partitions is fine, and so are more partitions.
    rendered("minimal-values.yaml", &["consumer.replicaCount=6"])?;
    rendered("minimal-values.yaml", &["consumer.replicaCount=7", "kafka.topics.usage.partitions=12"])?;
    let out = template(&chart_dir(), "minimal-values.yaml", &["kafka.topics.usage.partitions=65"])?;
    ensure!(!out.status.success(), "65 usage partitions rendered");
    Ok(())
}

#[test]
fn missing_secrets_are_refused_when_rendering() -> Result<()> {
    for (set, message) in [
        ("secrets.keyHashSecret=short", "secrets.keyHashSecret must be at least 32 bytes"),
        ("secrets.kafkaSaslPassword=", "kafka.sasl.enabled needs secrets.kafkaSaslPassword"),
        ("secrets.cassandraPassword=", "cassandra.username needs secrets.cassandraPassword"),
        ("secrets.env.BAD-NAME=x", "\"BAD-NAME\" is not an environment variable name"),
    ] {
        let out = template(&chart_dir(), "managed-values.yaml", &[set])?;
        ensure!(!out.status.success(), "{set} rendered");
        ensure!(text(&out.stderr).contains(message), "{set}: {}", text(&out.stderr));
    }
    Ok(())
}

/// Seconds of a YAML number.
fn secs(v: &Value) -> Result<u64> {
    v.as_u64().with_context(|| format!("not a number: {v:?}"))
}

#[test]
fn the_grace_period_covers_the_drain_the_gateway_is_configured_with() -> Result<()> {
    for (values, set) in [
        ("minimal-values.yaml", vec![]),
        ("managed-values.yaml", vec![]),
        ("minimal-values.yaml", vec!["gateway.drain.shutdownTimeoutSeconds=120"]),
    ] {
        let objects = objects(&rendered(values, &set)?)?;
        let config: Value = serde_yaml::from_str(
            find(&objects, "ConfigMap", "-config")?["data"]["gateway.yaml"].as_str().context("no gateway.yaml")?,
        )?;
        let pod = &find(&objects, "Deployment", "-gateway")?["spec"]["template"]["spec"];
        let grace = secs(&pod["terminationGracePeriodSeconds"])?;
        let pre_stop = secs(&pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"])?;
        let drain = secs(&config["gateway"]["shutdown_timeout_secs"])?;
        let flush = secs(&config["gateway"]["flush_timeout_secs"])?;
        // The gateway hands leases back within 3 s between the two (gateway/src/lib.rs).
        let needed = pre_stop + drain + 3 + flush;
        ensure!(grace > needed, "{values} {set:?}: grace {grace} s, the drain takes up to {needed} s");
        ensure!(pre_stop > 0, "{values}: no preStop pause, so new requests reach a closing listener");
    }
    Ok(())
}

#[test]
fn the_admin_side_is_on_its_own_port_and_service_unless_turned_off() -> Result<()> {
    let on = objects(&rendered("minimal-values.yaml", &[])?)?;
    let config: Value = serde_yaml::from_str(
        find(&on, "ConfigMap", "-config")?["data"]["gateway.yaml"].as_str().context("no gateway.yaml")?,
    )?;
    ensure!(config["gateway"]["admin"]["listen"] == "0.0.0.0:4001", "admin listen: {:?}", config["gateway"]);
    let ports = |o: &Value| -> Vec<String> {
        o["spec"]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    };
    ensure!(ports(find(&on, "Service", "-gateway")?) == ["http"], "the public Service carries only http");
    let admin = find(&on, "Service", "-gateway-admin")?;
    ensure!(ports(admin) == ["admin"] && admin["spec"]["type"] == "ClusterIP", "admin Service: {admin:?}");
    let pod = &find(&on, "Deployment", "-gateway")?["spec"]["template"]["spec"]["containers"][0];
    let container_ports: Vec<_> = pod["ports"].as_sequence().into_iter().flatten().map(|p| p["name"].clone()).collect();
    ensure!(container_ports.iter().any(|p| p == "admin"), "no admin container port: {container_ports:?}");

    let off = objects(&rendered("minimal-values.yaml", &["gateway.adminPort=0"])?)?;
    ensure!(find(&off, "Service", "-gateway-admin").is_err(), "an admin Service with adminPort 0");
    let config: Value = serde_yaml::from_str(
        find(&off, "ConfigMap", "-config")?["data"]["gateway.yaml"].as_str().context("no gateway.yaml")?,
    )?;
    ensure!(config["gateway"]["admin"].is_null(), "admin settings with adminPort 0: {:?}", config["gateway"]);
    Ok(())
}

#[test]
fn secrets_reach_the_pods_only_through_the_secret() -> Result<()> {
    let manifests = rendered("managed-values.yaml", &[])?;
    let objects = objects(&manifests)?;
    let config = serde_yaml::to_string(&find(&objects, "ConfigMap", "-config")?["data"])?;
    let secret = serde_yaml::to_string(&find(&objects, "Secret", "-secrets")?["stringData"])?;
    for value in [
        "ci-key-hash-secret-0123456789abcdef0123",
        "sk-ci-master-key",
        "ci-kafka-password",
        "ci-cql-password",
        "ci-token",
        "sk-ci-provider-key",
    ] {
        ensure!(!config.contains(value), "{value} is in the ConfigMap");
        ensure!(secret.contains(value), "{value} is not in the Secret");
    }
    Ok(())
}

/// Runs a service binary's `--check-config` on a rendered config, with the Secret's variables.
fn check_config(binary: &Path, config: &Path, env: &[(&str, &str)]) -> Result<()> {
    let mut cmd = Command::new(binary);
    cmd.arg("--config").arg(config).arg("--check-config").env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd, None)?;
    if !out.status.success() {
        bail!("{} refused {}: {}{}", binary.display(), config.display(), text(&out.stdout), text(&out.stderr));
    }
    Ok(())
}

#[test]
fn the_services_accept_the_configs_the_chart_renders() -> Result<()> {
    let bin = binaries()?;
    let env = [
        ("TOLLGATE_KEY_HASH_SECRET", "ci-key-hash-secret-0123456789abcdef0123"),
        ("TOLLGATE_MASTER_KEY", "sk-ci-master-key"),
        ("TOLLGATE_KAFKA_SASL_PASSWORD", "ci-kafka-password"),
        ("TOLLGATE_CQL_PASSWORD", "ci-cql-password"),
        ("TOLLGATE_ALERT_WEBHOOK_URL", "https://hooks.example.invalid/ci-token"),
        ("OPENAI_API_KEY", "sk-ci-provider-key"),
    ];
    for values in VALUE_SETS {
        let dir = scratch_dir("helm-configs")?;
        let out = validate(&rendered(values, &[])?, Some(&dir))?;
        ensure!(out.status.success(), "{values}: {}", text(&out.stderr));
        check_config(&bin.join("tollgate-gateway"), &dir.join("gateway.yaml"), &env)?;
        check_config(&bin.join("tollgate-ledger-consumer"), &dir.join("consumer.yaml"), &env)?;
    }
    Ok(())
}

/// Stand-ins for the set-up Job's images: `kafka-topics.sh` and `cqlsh` of deploy/local.
fn image_stand_ins(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/lib.sh");
    let bin = dir.join("stand-ins");
    std::fs::create_dir_all(&bin)?;
    let scripts = [
        ("kafka-topics.sh", "kafka_tool org.apache.kafka.tools.TopicCommand \"$@\"".to_owned()),
        // Off PATH first, or find_cqlsh would find this script.
        ("cqlsh", format!("PATH=${{PATH#{}:}}\nfind_cqlsh 0 || exit 1\nexec \"$CQLSH\" \"$@\"", bin.display())),
    ];
    for (name, body) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\nsource {}\n{body}\n", lib.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(bin)
}

/// Where a container of the rendered Job runs here: the stand-ins of its images, the workspace's
/// binaries for `/usr/local/bin`, the rendered config files for `/etc/tollgate`, and the
/// Secret's variables.
struct Here<'a> {
    stand_ins: PathBuf,
    binaries: PathBuf,
    configs: PathBuf,
    secrets: &'a [(&'a str, &'a str)],
}

impl Here<'_> {
    fn local_path(&self, arg: &str) -> String {
        let mapped = match (arg.strip_prefix("/usr/local/bin/"), arg.strip_prefix("/etc/tollgate/")) {
            (Some(binary), _) => self.binaries.join(binary),
            (_, Some(file)) => self.configs.join(file),
            _ => return arg.to_owned(),
        };
        mapped.display().to_string()
    }

    /// Runs `container` with its command and its environment (`secretKeyRef`s from the secrets).
    fn run(&self, container: &Value) -> Result<Output> {
        let argv: Vec<String> = [&container["command"], &container["args"]]
            .into_iter()
            .filter_map(Value::as_sequence)
            .flatten()
            .filter_map(|v| v.as_str().map(|a| self.local_path(a)))
            .collect();
        let (program, args) = argv.split_first().context("a container without a command")?;
        let mut cmd = Command::new(program);
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.args(args).env("PATH", format!("{}:{path}", self.stand_ins.display())).env("KAFKA_BIN", &self.stand_ins);
        for (k, v) in self.secrets {
            cmd.env(k, v);
        }
        for e in container["env"].as_sequence().into_iter().flatten() {
            let name = e["name"].as_str().context("an env entry without a name")?;
            let value = match (e["value"].as_str(), e["valueFrom"]["secretKeyRef"]["key"].as_str()) {
                (Some(v), _) => v,
                (None, Some(key)) => {
                    self.secrets.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).context("no such secret")?
                }
                (None, None) => bail!("env {name} has no value"),
            };
            cmd.env(name, value);
        }
        run(&mut cmd, None)
    }
}

/// The set-up Job's containers in order, from the rendered manifests; the config files go to
/// `configs`.
fn setup_containers(manifests: &str, configs: &Path) -> Result<Vec<Value>> {
    let out = validate(manifests, Some(configs))?;
    ensure!(out.status.success(), "{}", text(&out.stderr));
    let objects = objects(manifests)?;
    let pod = &find(&objects, "Job", "-setup-1")?["spec"]["template"]["spec"];
    let init = pod["initContainers"].as_sequence().context("no init containers")?;
    let main = pod["containers"].as_sequence().context("no containers")?;
    Ok(init.iter().chain(main).cloned().collect())
}

#[test]
fn the_setup_job_creates_topics_keyspace_and_tables() -> Result<()> {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let (sasl_user, sasl_password) = (
        var("TOLLGATE_KAFKA_SASL_USER", "tollgate"),
        var("TOLLGATE_KAFKA_SASL_PASSWORD", "tollgate-local-sasl-password"),
    );
    let (cql_user, cql_password) = (var("TOLLGATE_CQL_USER", "cassandra"), var("TOLLGATE_CQL_PASSWORD", "cassandra"));
    let id = tollgate_tests::unique("tg_setup_");
    let set = |usage_partitions: u32| -> Vec<String> {
        let mut set = vec![
            "kafka.bootstrapServers=127.0.0.1:9094".to_owned(),
            "kafka.sasl.enabled=true".into(),
            "kafka.sasl.mechanism=PLAIN".into(),
            format!("kafka.sasl.username={sasl_user}"),
            "kafka.replicationFactor=1".into(),
            "kafka.minInsyncReplicas=1".into(),
            format!("kafka.topics.usage.partitions={usage_partitions}"),
            "consumer.replicaCount=3".into(),
            "cassandra.contactPoints={127.0.0.1:9042}".into(),
            format!("cassandra.username={cql_user}"),
            format!("cassandra.keyspace={id}"),
            "cassandra.replication.class=SimpleStrategy".into(),
            "cassandra.replication.replicationFactor=1".into(),
            "secrets.kafkaSaslPassword=from-the-secret".into(),
            "secrets.cassandraPassword=from-the-secret".into(),
        ];
        for topic in ["usage", "budgetState", "dlq", "control"] {
            set.push(format!("kafka.topics.{topic}.name={id}-{topic}"));
        }
        set
    };
    let secrets = [
        ("TOLLGATE_KAFKA_SASL_PASSWORD", sasl_password.as_str()),
        ("TOLLGATE_CQL_PASSWORD", cql_password.as_str()),
        ("TOLLGATE_KEY_HASH_SECRET", "ci-key-hash-secret-0123456789abcdef0123"),
    ];
    let dir = scratch_dir("helm-setup")?;
    let here = Here {
        stand_ins: image_stand_ins(&dir)?,
        binaries: binaries()?,
        configs: dir.join("configs"),
        secrets: &secrets,
    };
    let render = |partitions: u32| -> Result<String> {
        let pairs = set(partitions);
        rendered("minimal-values.yaml", &pairs.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let containers = setup_containers(&render(3)?, &here.configs)?;
    let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["topics", "keyspace", "schema"]);
    for round in ["first", "second"] {
        for container in &containers {
            let out = here.run(container)?;
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            ensure!(
                out.status.success(),
                "{round} run of {}: {stdout}{stderr}",
                container["name"].as_str().unwrap_or_default()
            );
            match container["name"].as_str() {
                Some("topics") => {
                    ensure!(stdout.contains(&format!("topic {id}-usage: 3 partitions")), "{stdout}");
                    ensure!(stdout.contains(&format!("topic {id}-budgetState: 6 partitions")), "{stdout}");
                    let created = stdout.matches("Created topic").count();
                    assert_eq!(created, if round == "first" { 4 } else { 0 }, "{round} run: {stdout}");
                }
                Some("keyspace") => {
                    ensure!(stdout.contains("'class': 'SimpleStrategy', 'replication_factor': '1'"), "{stdout}")
                }
                _ => ensure!(stdout.contains(&format!("schema applied to keyspace {id}")), "{stdout}"),
            }
        }
    }
    // The tables are there: reconcile reads every one of them, and finds the empty ledgers equal.
    let consumer = here.binaries.join("tollgate-ledger-consumer");
    let mut reconcile = Command::new(consumer);
    reconcile.arg("--config").arg(here.configs.join("consumer.yaml")).arg("reconcile").envs(secrets);
    let out = run(&mut reconcile, None)?;
    ensure!(out.status.success(), "reconcile: {}{}", text(&out.stdout), text(&out.stderr));
    // The usage topic exists with 3 partitions: values saying 4 are refused, not applied.
    let containers = setup_containers(&render(4)?, &dir.join("configs-4"))?;
    let out = here.run(&containers[0])?;
    ensure!(!out.status.success(), "a usage topic of 3 partitions passed as 4");
    let stderr = text(&out.stderr);
    ensure!(stderr.contains(&format!("topic {id}-usage has 3 partitions, values say 4")), "{stderr}");
    Ok(())
}
