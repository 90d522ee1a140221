//! The health verdict behind `GET /healthz` and `litevisor health`: healthy when every longrun
//! service runs (and is ready, where it has readiness), every database replicates with its last
//! replica operation successful, and no committed transaction has waited for its upload longer
//! than the bound (`health_upload_lag`). Otherwise the list of what is wrong, one short line each.

use std::time::{Duration, SystemTime};

use super::Snapshot;

/// What is wrong now; empty when healthy.
pub fn problems(s: &Snapshot, max_lag: Duration) -> Vec<String> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    // A service brought down on purpose (`litevisor svc down`) is as its operator wants it: an
    // orchestrator acting on "unhealthy" would restart the container and undo that.
    for svc in s
        .services
        .iter()
        .filter(|s| s.kind == "longrun" && s.state != "down")
    {
        if svc.pid.is_none() {
            out.push(format!("service {} is down ({})", svc.name, svc.state));
        } else if !svc.ready {
            out.push(format!("service {} is not ready ({})", svc.name, svc.state));
        }
    }
    for db in &s.databases {
        if let Some(f) = db.failure() {
            out.push(format!(
                "database {}: {}: {}",
                db.path,
                db.state,
                crate::text::cut(&f.message, 160)
            ));
        } else if db.state != "replicating" && db.state != "following" {
            let why = db
                .error
                .as_deref()
                .map_or(String::new(), |e| format!(": {}", crate::text::cut(e, 160)));
            out.push(format!("database {}: {}{why}", db.path, db.state));
        }
        let lag = db.engine.lag_seconds(now);
        if lag > max_lag.as_secs_f64() && db.state == "following" {
            out.push(format!(
                "database {}: the read replica could not be confirmed current for {lag:.0}s (more than {}s)",
                db.path,
                max_lag.as_secs()
            ));
        } else if lag > max_lag.as_secs_f64() {
            out.push(format!(
                "database {}: a committed transaction has waited {lag:.0}s for its upload (more than {}s)",
                db.path,
                max_lag.as_secs()
            ));
        }
    }
    out
}

/// `ok`, or `unhealthy:` and one line per problem.
pub fn render(problems: &[String]) -> String {
    if problems.is_empty() {
        return "ok\n".to_owned();
    }
    let mut out = String::from("unhealthy:\n");
    for p in problems {
        out.push_str("  ");
        out.push_str(p);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{DatabaseRow, ServiceRow};
    use crate::replication::status::Status;

    fn service(state: &'static str, pid: Option<i32>, ready: bool) -> ServiceRow {
        ServiceRow {
            name: "web".into(),
            kind: "longrun",
            main: false,
            state,
            pid,
            restarts: 0,
            last_exit: None,
            last_exit_code: None,
            since: None,
            ready,
        }
    }

    #[test]
    fn healthy_only_when_everything_is() {
        let mut s = Snapshot {
            services: vec![service("running", Some(7), true)],
            databases: vec![DatabaseRow {
                path: "/a.db".into(),
                state: "replicating".into(),
                ..DatabaseRow::default()
            }],
        };
        let bound = Duration::from_secs(60);
        assert!(problems(&s, bound).is_empty());
        s.services[0] = service("starting", Some(7), false);
        assert_eq!(problems(&s, bound), ["service web is not ready (starting)"]);
        s.services[0] = service("restarting", None, false);
        assert_eq!(problems(&s, bound), ["service web is down (restarting)"]);
        s.services[0] = service("down", None, false);
        assert!(problems(&s, bound).is_empty(), "down by request is wanted");
        s.services.clear();
        let mut engine = Status::default();
        engine.replica_failed("NoSuchBucket", "S3 error NoSuchBucket: ...", true);
        s.databases[0].engine = engine;
        s.databases[0].state = "retrying".into();
        assert_eq!(
            problems(&s, bound),
            ["database /a.db: retrying: S3 error NoSuchBucket: ..."]
        );
        s.databases[0].engine = Status {
            txid: 5,
            pending_since: Some(SystemTime::now() - Duration::from_secs(120)),
            ..Status::default()
        };
        s.databases[0].state = "replicating".into();
        let p = problems(&s, bound);
        assert!(p[0].contains("has waited 120s for its upload"), "{p:?}");
        assert!(render(&p).starts_with("unhealthy:\n  database /a.db"));
    }
}
