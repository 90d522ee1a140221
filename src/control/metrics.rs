//! `GET /metrics`: the status snapshot in Prometheus' text format, built at each scrape (a fresh
//! registry filled from the same in-memory figures `litevisor status` shows, plus a `stat` of each
//! database and a look at `/proc/self`), so nothing is registered or updated while nobody scrapes.
//!
//! Litestream 0.5's database series keep their names, types, help texts and `db` label, so its
//! dashboards work unchanged: `litestream_db_size`, `litestream_wal_size`,
//! `litestream_total_wal_bytes`, `litestream_txid`, `litestream_sync_count`,
//! `litestream_sync_error_count`, `litestream_sync_seconds`, `litestream_disk_full`,
//! `litestream_checkpoint_count`/`_error_count`/`_seconds` (`mode="PASSIVE"`). litevisor's own
//! series are `litevisor_*` (per database: `db`; per service: `service`), and the process series
//! have the names of Prometheus' Go client (`process_*`). Labels hold database paths, service
//! names and error kinds only: never a replica URL or a credential.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{CounterVec, Encoder, GaugeVec, Opts, Registry, TextEncoder};

use super::{DatabaseRow, Snapshot};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One scrape's registry: families are registered as they are first used.
struct Scrape {
    registry: Registry,
    gauges: Vec<(&'static str, GaugeVec)>,
    counters: Vec<(&'static str, CounterVec)>,
}

impl Scrape {
    fn new() -> Scrape {
        Scrape {
            registry: Registry::new(),
            gauges: Vec::new(),
            counters: Vec::new(),
        }
    }

    fn gauge(&mut self, name: &'static str, help: &str, labels: &[&str], values: &[&str], v: f64) {
        let family = match self.gauges.iter().find(|(n, _)| *n == name) {
            Some((_, g)) => g.clone(),
            None => {
                let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
                // Names are fixed and distinct: registration cannot fail.
                let _ = self.registry.register(Box::new(g.clone()));
                self.gauges.push((name, g.clone()));
                g
            }
        };
        family.with_label_values(values).set(v);
    }

    fn counter(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &[&str],
        values: &[&str],
        v: f64,
    ) {
        let family = match self.counters.iter().find(|(n, _)| *n == name) {
            Some((_, c)) => c.clone(),
            None => {
                let c = CounterVec::new(Opts::new(name, help), labels).expect("valid metric");
                let _ = self.registry.register(Box::new(c.clone()));
                self.counters.push((name, c.clone()));
                c
            }
        };
        family.with_label_values(values).inc_by(v.max(0.0));
    }

    fn render(self) -> String {
        let mut out = Vec::new();
        // Encoding valid families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn unix_seconds(t: Option<SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The whole exposition for one scrape.
pub fn render(s: &Snapshot) -> String {
    let mut m = Scrape::new();
    let now = SystemTime::now();
    for db in &s.databases {
        database(&mut m, db, now);
    }
    for svc in &s.services {
        let l = &["service"][..];
        let v = &[svc.name.as_str()][..];
        m.gauge(
            "litevisor_service_up",
            "Whether the service's process runs (1) or not (0)",
            l,
            v,
            f64::from(u8::from(svc.pid.is_some())),
        );
        m.gauge(
            "litevisor_service_ready",
            "Whether the service is ready (a longrun without readiness: runs; a oneshot: done)",
            l,
            v,
            f64::from(u8::from(svc.ready)),
        );
        m.counter(
            "litevisor_service_restarts_total",
            "Restarts of the service since litevisor started",
            l,
            v,
            f64::from(svc.restarts),
        );
        if let Some(code) = svc.last_exit_code {
            m.gauge(
                "litevisor_service_last_exit_code",
                "Exit code of the service's last process (128+N when signal N killed it)",
                l,
                v,
                f64::from(code),
            );
        }
        if let Some(since) = svc.since {
            m.gauge(
                "litevisor_service_start_time_seconds",
                "When the service's running process started, in seconds since the Unix epoch",
                l,
                v,
                unix_seconds(Some(since)),
            );
        }
    }
    process(&mut m);
    m.render()
}

fn database(m: &mut Scrape, db: &DatabaseRow, now: SystemTime) {
    let e = &db.engine;
    let l = &["db"][..];
    let v = &[db.path.as_str()][..];
    let secs = |d: Duration| d.as_secs_f64();
    // Litestream's series: names, types and help texts as Litestream 0.5.17 exports them.
    m.gauge(
        "litestream_db_size",
        "The current size of the real DB",
        l,
        v,
        db.db_size.unwrap_or(0) as f64,
    );
    m.gauge(
        "litestream_wal_size",
        "The current size of the real WAL",
        l,
        v,
        db.wal_size.unwrap_or(0) as f64,
    );
    m.counter(
        "litestream_total_wal_bytes",
        "Total number of bytes written to shadow WAL",
        l,
        v,
        e.wal_bytes as f64,
    );
    m.gauge(
        "litestream_txid",
        "The current transaction ID",
        l,
        v,
        e.txid as f64,
    );
    m.counter(
        "litestream_sync_count",
        "Number of sync operations performed",
        l,
        v,
        e.sync_count as f64,
    );
    m.counter(
        "litestream_sync_error_count",
        "Number of sync errors that have occurred",
        l,
        v,
        e.sync_errors as f64,
    );
    m.counter(
        "litestream_sync_seconds",
        "Time spent syncing shadow WAL, in seconds",
        l,
        v,
        secs(e.sync_time),
    );
    let disk_full = e
        .local_failure
        .as_ref()
        .is_some_and(|f| f.kind == "disk_full");
    m.gauge(
        "litestream_disk_full",
        "Whether replication is paused because the local disk is full",
        l,
        v,
        f64::from(u8::from(disk_full)),
    );
    let lm = &["db", "mode"][..];
    let vm = &[db.path.as_str(), "PASSIVE"][..];
    m.counter(
        "litestream_checkpoint_count",
        "Number of checkpoint operations performed",
        lm,
        vm,
        e.checkpoints as f64,
    );
    m.counter(
        "litestream_checkpoint_error_count",
        "Number of checkpoint errors that have occurred",
        lm,
        vm,
        e.checkpoint_errors as f64,
    );
    m.counter(
        "litestream_checkpoint_seconds",
        "Time spent checkpointing WAL, in seconds",
        lm,
        vm,
        secs(e.checkpoint_time),
    );

    // litevisor's own.
    m.gauge(
        "litevisor_replica_txid",
        "The newest transaction ID on the replica",
        l,
        v,
        e.replica_txid as f64,
    );
    m.gauge(
        "litevisor_replication_lag_transactions",
        "Committed transactions not yet on the replica",
        l,
        v,
        e.lag_txids() as f64,
    );
    m.gauge(
        "litevisor_replication_lag_seconds",
        "How long the oldest committed transaction not yet on the replica has waited (0 when none waits)",
        l,
        v,
        e.lag_seconds(now),
    );
    m.gauge(
        "litevisor_last_upload_timestamp_seconds",
        "When the last upload to the replica succeeded, in seconds since the Unix epoch (0: never)",
        l,
        v,
        unix_seconds(e.last_upload),
    );
    m.gauge(
        "litevisor_replica_failing",
        "Whether the replica fails now (1 from the first failed attempt until one succeeds)",
        l,
        v,
        f64::from(u8::from(e.replica_failure.is_some())),
    );
    m.gauge(
        "litevisor_replication_stopped",
        "Whether a local failure (disk full, permission denied...) stops replication now",
        l,
        v,
        f64::from(u8::from(e.local_failure.is_some())),
    );
    for (kind, n) in &e.errors_by_kind {
        m.counter(
            "litevisor_replica_errors_total",
            "Failed replica operations (each was retried) by kind: an S3 error code, timeout, connection, ...",
            &["db", "kind"],
            &[db.path.as_str(), kind],
            *n as f64,
        );
    }
    if let Some((took, ok)) = db.final_sync {
        m.gauge(
            "litevisor_final_sync_duration_seconds",
            "How long the final sync at shutdown took",
            l,
            v,
            secs(took),
        );
        m.gauge(
            "litevisor_final_sync_success",
            "Whether the final sync got every committed transaction to the replica",
            l,
            v,
            f64::from(u8::from(ok)),
        );
    }
    if let Some(took) = db.restore_took {
        m.gauge(
            "litevisor_restore_duration_seconds",
            "How long the start-up restore took",
            l,
            v,
            secs(took),
        );
    }
}

/// The Go client's process series, from `/proc/self`.
fn process(m: &mut Scrape) {
    let (none, empty) = (&[][..], &[][..]);
    // SAFETY: sysconf only reads system constants.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as f64,
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start at field 3 (`state`).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        m.counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            none,
            empty,
            (num(14) + num(15)) / ticks,
        );
        m.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            none,
            empty,
            num(23),
        );
        m.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            none,
            empty,
            num(24) * page,
        );
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        if let Some(boot) = boot {
            m.gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                none,
                empty,
                boot + num(22) / ticks,
            );
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The listing's own descriptor is not counted.
        let open = dir.count().saturating_sub(1);
        m.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            none,
            empty,
            open as f64,
        );
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        m.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            none,
            empty,
            limit.rlim_cur as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ServiceRow;
    use crate::replication::status::Status;

    #[test]
    fn litestream_names_types_and_labels() {
        let mut engine = Status {
            txid: 7,
            sync_count: 3,
            ..Status::default()
        };
        engine.replica_failed("NoSuchBucket", "x", true);
        let s = Snapshot {
            services: vec![ServiceRow {
                name: "web".into(),
                kind: "longrun",
                main: false,
                state: "running",
                pid: Some(9),
                restarts: 2,
                last_exit: None,
                last_exit_code: Some(1),
                since: None,
                ready: true,
            }],
            databases: vec![DatabaseRow {
                path: "/data/a \"b\".db".into(),
                engine,
                db_size: Some(8192),
                ..DatabaseRow::default()
            }],
        };
        let text = render(&s);
        for line in [
            "# TYPE litestream_sync_count counter",
            "litestream_sync_count{db=\"/data/a \\\"b\\\".db\"} 3",
            "# HELP litestream_db_size The current size of the real DB",
            "litestream_db_size{db=\"/data/a \\\"b\\\".db\"} 8192",
            "litestream_txid{db=\"/data/a \\\"b\\\".db\"} 7",
            "litevisor_replica_errors_total{db=\"/data/a \\\"b\\\".db\",kind=\"NoSuchBucket\"} 1",
            "litevisor_service_up{service=\"web\"} 1",
            "litevisor_service_restarts_total{service=\"web\"} 2",
            "litevisor_service_last_exit_code{service=\"web\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
}
