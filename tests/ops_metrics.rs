//! `/metrics` and `/healthz` as Prometheus and an orchestrator see them: the exposition passes
//! `promtool check metrics` (Prometheus' own parser), Litestream 0.5.17's series have the names,
//! types, help texts and `db` label the real Litestream exports from the same `litestream.yml`
//! (`addr:`), services and databases are in it, `/healthz` and `litevisor health` turn unhealthy when
//! a service is down or replication is stopped by a local failure (said once, as an error) and
//! healthy again when it recovers, and an idle listener causes no wake-ups.

mod support;

mod ops_support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use ops_support::{Lv, assert_said_once, free_port, http_get, insert, make_db, wait_for};

/// `promtool check metrics` on `text`: parse errors fail; lint remarks are allowed only for the
/// Litestream series, whose names Litestream chose (its own output gets the same remarks).
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!(
            "SKIPPED promtool check: promtool is not installed (Debian's `prometheus` package; scripts/install-test-deps installs it)"
        );
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let remarks = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => {}
        Some(3) => {
            for line in remarks.lines().filter(|l| !l.trim().is_empty()) {
                assert!(
                    line.starts_with("litestream_"),
                    "promtool lint remark on litevisor's own series: {line}\n{text}"
                );
            }
        }
        other => panic!("promtool check metrics failed ({other:?}): {remarks}\n{text}"),
    }
}

/// `# HELP` and `# TYPE` of every family whose name starts with `prefix`.
fn families(text: &str, prefix: &str) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (hash, kind, name, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
        if hash != Some("#") || !name.is_some_and(|n| n.starts_with(prefix)) {
            continue;
        }
        let entry = out.entry(name.unwrap().to_string()).or_default();
        match kind {
            Some("HELP") => entry.0 = rest.unwrap_or_default().to_string(),
            Some("TYPE") => entry.1 = rest.unwrap_or_default().to_string(),
            _ => {}
        }
    }
    out
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn litestream_yml_addr_serves_the_series_litestream_serves() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = make_db(&db);
    insert(&conn, 10);
    let config = |port: u16, replica: &str| {
        format!(
            "addr: \"127.0.0.1:{port}\"\ndbs:\n  - path: {}\n    checkpoint-interval: 1s\n    replica:\n      url: file://{}/{replica}\n",
            db.display(),
            dir.path().display()
        )
    };
    // The real Litestream first, from the same file shape.
    let ls_port = free_port();
    std::fs::write(dir.path().join("ls.yml"), config(ls_port, "ls-replica")).unwrap();
    let mut ls = Command::new("litestream")
        .env_remove("AWS_CA_BUNDLE")
        .args(["replicate", "-config"])
        .arg(dir.path().join("ls.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("litestream");
    let ls_addr = format!("127.0.0.1:{ls_port}");
    let ls_text = wait_for(Duration::from_secs(30), || {
        insert(&conn, 1);
        let (_, body) = http_get(&ls_addr, "/metrics")?;
        (body.contains("litestream_checkpoint_count") && body.contains("litestream_txid"))
            .then_some(body)
    })
    .expect("Litestream's metrics");
    let _ = ls.kill();
    let _ = ls.wait();

    let lv_port = free_port();
    std::fs::write(dir.path().join("lv.yml"), config(lv_port, "lv-replica")).unwrap();
    let mut lv = Lv::start(dir.path(), &["replicate", "-config", "lv.yml"], &[]);
    let lv_addr = format!("127.0.0.1:{lv_port}");
    lv.wait_db(Duration::from_secs(30), |d| d["state"] == "replicating");
    insert(&conn, 5);
    let lv_text = wait_for(Duration::from_secs(30), || {
        insert(&conn, 1);
        let (code, body) = http_get(&lv_addr, "/metrics")?;
        assert_eq!(code, 200);
        let db_label = format!("{{db=\"{}\",mode=\"PASSIVE\"}}", db.display());
        (sample(&body, &format!("litestream_checkpoint_count{db_label}")) >= Some(1.0))
            .then_some(body)
    })
    .unwrap_or_else(|| panic!("no checkpoint counted:\n{}", lv.stderr()));
    promtool_check(&lv_text);

    let ours = families(&lv_text, "litestream_");
    let theirs = families(&ls_text, "litestream_");
    for name in [
        "litestream_db_size",
        "litestream_wal_size",
        "litestream_total_wal_bytes",
        "litestream_txid",
        "litestream_sync_count",
        "litestream_sync_error_count",
        "litestream_sync_seconds",
        "litestream_checkpoint_count",
    ] {
        assert!(
            ours.contains_key(name),
            "litevisor does not export {name}:\n{lv_text}"
        );
        assert!(
            theirs.contains_key(name),
            "Litestream does not export {name}:\n{ls_text}"
        );
    }
    // Litestream shows some families only once they have a value (its error counters); where both
    // export one, its help text and type are Litestream's.
    for (name, help_type) in &ours {
        if let Some(t) = theirs.get(name) {
            assert_eq!(t, help_type, "{name}: litevisor vs Litestream");
        }
    }
    let label = format!("{{db=\"{}\"}}", db.display());
    assert!(
        sample(&lv_text, &format!("litestream_txid{label}")) >= Some(2.0),
        "{lv_text}"
    );
    assert!(
        sample(&lv_text, &format!("litestream_sync_count{label}")) >= Some(1.0),
        "{lv_text}"
    );
    assert!(
        sample(&lv_text, &format!("litestream_db_size{label}")) > Some(0.0),
        "{lv_text}"
    );
    assert_eq!(
        sample(&lv_text, &format!("litevisor_replica_failing{label}")),
        Some(0.0),
        "{lv_text}"
    );
    assert!(
        sample(&lv_text, "process_resident_memory_bytes") > Some(0.0),
        "{lv_text}"
    );
    let (code, body) = http_get(&lv_addr, "/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    lv.stop_ok();
}

/// Voluntary and involuntary context switches of all of `pid`'s threads.
fn switches(pid: i32) -> u64 {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    n
}

#[test]
fn services_and_local_failures_in_metrics_healthz_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = make_db(&db);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.path().join("litevisor.toml"),
        format!(
            "metrics_addr = \"{addr}\"\n[services.web]\ncommand = [\"sleep\", \"600\"]\nrestart_delay = \"4s\"\n[[databases]]\npath = \"app.db\"\nreplica = \"file://{}/replica\"\nsync_interval = \"100ms\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut lv = Lv::start(dir.path(), &["--config", "litevisor.toml"], &[]);
    wait_for(Duration::from_secs(30), || {
        let (code, _) = http_get(&addr, "/healthz")?;
        (code == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("never healthy:\n{}", lv.stderr()));
    assert_eq!(lv.health().0, 0);

    // Idle: the listener sleeps in accept.
    std::thread::sleep(Duration::from_millis(500));
    let before = switches(lv.pid());
    std::thread::sleep(Duration::from_secs(2));
    let after = switches(lv.pid());
    assert_eq!(
        after, before,
        "an idle litevisor with a metrics listener woke up"
    );

    let (code, text) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    promtool_check(&text);
    assert_eq!(
        sample(&text, "litevisor_service_up{service=\"web\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "litevisor_service_ready{service=\"web\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "litevisor_service_restarts_total{service=\"web\"}"),
        Some(0.0),
        "{text}"
    );

    // A service down (waiting out its restart delay): unhealthy, named.
    let status = lv.status().unwrap();
    let pid = status["services"][0]["pid"].as_i64().unwrap() as i32;
    // SAFETY: a signal to the service's process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let (code, body) = wait_for(Duration::from_secs(10), || {
        http_get(&addr, "/healthz").filter(|(c, _)| *c == 503)
    })
    .expect("unhealthy while the service is down");
    assert!(body.contains("service web is down"), "{code} {body}");
    let (code, text) = lv.health();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("service web is down"), "{text}");
    let (_, metrics) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(
        sample(&metrics, "litevisor_service_up{service=\"web\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "litevisor_service_restarts_total{service=\"web\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "litevisor_service_last_exit_code{service=\"web\"}"
        ),
        Some(137.0),
        "{metrics}"
    );
    wait_for(Duration::from_secs(20), || {
        http_get(&addr, "/healthz").filter(|(c, _)| *c == 200)
    })
    .expect("healthy again once the service is back");

    // A local failure stops replication: the L0 staging directory is replaced by a file.
    let l0 = dir.path().join(".app.db-litestream/ltx/0");
    let aside = dir.path().join("l0-aside");
    std::fs::rename(&l0, &aside).unwrap();
    std::fs::write(&l0, b"in the way").unwrap();
    for _ in 0..5 {
        insert(&conn, 1);
        std::thread::sleep(Duration::from_millis(150));
    }
    let stopped = lv.wait_db(Duration::from_secs(20), |d| d["state"] == "error");
    assert!(stopped["failure"]["message"].is_string(), "{stopped}");
    let (code, body) = http_get(&addr, "/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("app.db") && body.contains("error"), "{body}");
    let (_, metrics) = http_get(&addr, "/metrics").unwrap();
    let label = format!("{{db=\"{}\"}}", db.display());
    assert_eq!(
        sample(&metrics, &format!("litevisor_replication_stopped{label}")),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, &format!("litestream_sync_error_count{label}")) >= Some(1.0),
        "{metrics}"
    );

    std::fs::remove_file(&l0).unwrap();
    std::fs::rename(&aside, &l0).unwrap();
    insert(&conn, 1);
    lv.wait_db(Duration::from_secs(20), |d| {
        d["state"] == "replicating" && d["txid"] == d["replica_txid"]
    });
    wait_for(Duration::from_secs(10), || {
        http_get(&addr, "/healthz").filter(|(c, _)| *c == 200)
    })
    .expect("healthy again once replication resumed");
    let err = lv.stop_ok();
    assert_said_once(&err, "replication stopped", "an error, said when it starts");
    assert!(
        err.lines()
            .any(|l| l.contains("ERROR") && l.contains("replication stopped")),
        "{err}"
    );
    assert_said_once(&err, "replication resumed", "when it clears");
}

#[test]
fn a_bad_or_taken_address_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    std::fs::write(
        dir.path().join("litevisor.toml"),
        format!("metrics_addr = \"{addr}\"\n[services.web]\ncommand = [\"sleep\", \"60\"]\n"),
    )
    .unwrap();
    let (code, _, err) = ops_support::run(
        dir.path(),
        &["--config", "litevisor.toml"],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(code, 1, "{err}");
    support::assert_contains(
        &err,
        format!("cannot serve /metrics and /healthz on {addr}"),
    );
    let (code, _, err) = ops_support::run(
        dir.path(),
        &["--config", "litevisor.toml", "--metrics-addr", "9090"],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--metrics-addr: invalid address"), "{err}");
}
