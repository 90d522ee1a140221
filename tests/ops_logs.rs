//! litevisor's own log lines as an operator's log pipeline sees them: litestream.yml's `logging:`
//! keys (`level`, `type: json`, `stderr`) and litevisor.toml's `log_format`, JSON lines of Litestream's
//! shape (`time`, `level`, `msg`, then fields such as `db` and a hex `txid`), services' own lines
//! passed through as they are, and invalid levels refused with the accepted values named.

mod support;

mod ops_support;

use std::time::Duration;

use ops_support::{Lv, insert, make_db, run, wait_for};

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{text}"))
        })
        .collect()
}

#[test]
fn litestream_yml_logging_keys_give_json_lines_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = make_db(&db);
    std::fs::write(
        dir.path().join("litestream.yml"),
        format!(
            "logging:\n  level: debug\n  type: json\n  stderr: false\ndbs:\n  - path: {}\n    replica:\n      url: file://{}/replica\n",
            db.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut lv = Lv::start(dir.path(), &["replicate", "-config", "litestream.yml"], &[]);
    lv.wait_db(Duration::from_secs(20), |db| db["state"] == "replicating");
    insert(&conn, 3);
    wait_for(Duration::from_secs(20), || {
        lv.stdout().contains("\"level\":\"DEBUG\"").then_some(())
    })
    .expect("debug lines");
    let err = lv.stop_ok();
    assert!(
        err.trim().is_empty(),
        "stderr: false sends the logs to stdout:\n{}",
        lv.stderr()
    );
    let lines = json_lines(&lv.stdout());
    for line in &lines {
        assert!(
            line["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
            "{line}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(line["msg"].is_string(), "{line}");
    }
    let snapshot = lines
        .iter()
        .find(|l| l["msg"] == "wrote snapshot L0")
        .expect("the snapshot line");
    assert_eq!(snapshot["db"], db.display().to_string());
    assert_eq!(snapshot["txid"], "0000000000000001", "{snapshot}");
    assert!(
        lines
            .iter()
            .any(|l| l["msg"].as_str().unwrap().contains("final sync done")
                && l["db"] == db.display().to_string())
    );
}

#[test]
fn litevisor_toml_log_format_json_and_service_lines_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("litevisor.toml"),
        "log_format = \"json\"\n[services.app]\ncommand = [\"/bin/sh\", \"-c\", \"echo hello from app; echo '{\\\"own\\\":1}' >&2; exec sleep 30\"]\n[services.quiet]\ncommand = [\"/bin/sh\", \"-c\", \"echo '{\\\"k\\\":2}'; exec sleep 30\"]\nlog_prefix = false\n",
    )
    .unwrap();
    let mut lv = Lv::start(
        dir.path(),
        &["--log-level", "info", "--config", "litevisor.toml"],
        &[],
    );
    wait_for(Duration::from_secs(20), || {
        (lv.stdout().contains("hello from app") && lv.stdout().contains("{\"k\":2}")).then_some(())
    })
    .expect("service output");
    assert_eq!(lv.stop(), 0);
    let out = lv.stdout();
    assert!(out.lines().any(|l| l == "[app] hello from app"), "{out}");
    assert!(out.lines().any(|l| l == "{\"k\":2}"), "{out}");
    let err = lv.stderr();
    let (own, services): (Vec<&str>, Vec<&str>) =
        err.lines().partition(|l| l.starts_with("{\"time\":"));
    assert_eq!(services, ["[app] {\"own\":1}"], "{err}");
    let own = json_lines(&own.join("\n"));
    assert!(
        own.iter()
            .any(|l| l["service"] == "app" && l["msg"].as_str().unwrap().contains("started")),
        "{err}"
    );
}

#[test]
fn invalid_levels_are_errors_naming_the_accepted_values() {
    let dir = tempfile::tempdir().unwrap();
    let accepted = "use trace, debug, info, warn, error or off";
    let db = dir.path().join("a.db");
    make_db(&db);
    let replica = format!("file://{}/r", dir.path().display());
    std::fs::write(
        dir.path().join("ls.yml"),
        format!(
            "logging:\n  level: verbose\ndbs:\n  - path: {}\n    replica:\n      url: {replica}\n",
            db.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lv.toml"),
        "log_format = \"xml\"\n[services.a]\ncommand = \"true\"\n",
    )
    .unwrap();
    /// A command line that must fail, and what it must say.
    struct Case<'a> {
        args: &'a [&'a str],
        env: &'a [(&'a str, &'a str)],
        code: i32,
        says: &'a [&'a str],
    }
    let cases = [
        Case {
            args: &["--log-level", "verbose", "--", "true"],
            env: &[],
            code: 2,
            says: &["--log-level: invalid log level \"verbose\"", accepted],
        },
        Case {
            args: &["--", "true"],
            env: &[("LITEVISOR_LOG", "bogus")],
            code: 2,
            says: &["LITEVISOR_LOG: invalid log level \"bogus\"", accepted],
        },
        Case {
            args: &["replicate", db.to_str().unwrap(), &replica],
            env: &[("LOG_LEVEL", "bogus")],
            code: 2,
            says: &["LOG_LEVEL: invalid log level \"bogus\"", accepted],
        },
        Case {
            args: &["replicate", "-config", "ls.yml"],
            env: &[],
            code: 2,
            says: &["ls.yml:2:3: logging.level: invalid log level \"verbose\""],
        },
        Case {
            args: &["check", "--config", "lv.toml"],
            env: &[],
            code: 1,
            says: &[],
        },
    ];
    for Case {
        args,
        env,
        code,
        says,
    } in cases
    {
        let (got, _, err) = run(dir.path(), args, env, Duration::from_secs(10));
        let case = format!("{args:?} {env:?}");
        assert_eq!(got, code, "{case}: {err}");
        for want in says {
            assert!(err.contains(want), "{case}: missing {want:?} in:\n{err}");
        }
    }
}
