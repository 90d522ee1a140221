//! The bundled example runs as the README's first command runs it, with nothing on PATH (no busybox,
//! no sqlite3, no litevisor): it replicates, stops on Ctrl-C with exit 0, restores to what its app
//! committed, and a second run continues the same replica. Also: a program named `litevisor` is
//! litevisor itself, the s6-overlay directory form runs, credentials apply, and litevisor uses no
//! CPU while its services idle.

mod support;

mod supervisor_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use supervisor_support::*;

/// services.d.example copied to a scratch directory (the config and the tracked `data/` directory,
/// not a developer's own database), and a PATH holding nothing at all.
struct Example {
    dir: tempfile::TempDir,
}

impl Example {
    fn new() -> Example {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("services.d.example");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("mkdir data");
        std::fs::create_dir_all(dir.path().join("empty-bin")).expect("mkdir empty-bin");
        for file in ["litevisor.toml", "data/.gitignore"] {
            std::fs::copy(source.join(file), dir.path().join(file))
                .unwrap_or_else(|e| panic!("services.d.example/{file}: {e}"));
        }
        Example { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.path("litevisor.toml").display().to_string()
    }

    /// litevisor with the environment of a machine that has none of the usual tools on PATH, run
    /// from another directory (paths in the config are relative to the config file).
    fn litevisor(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env("PATH", self.path("empty-bin"))
            .env("LITEVISOR_SOCKET", self.path("control.sock"))
            .current_dir("/");
        clear_litevisor_env(&mut cmd);
        cmd
    }

    /// Runs the example until the app has committed `rows` rows in this run, then sends SIGINT
    /// (Ctrl-C) and returns (exit code, stdout, stderr).
    fn run(&self, run: u32, rows: usize) -> (i32, String, String) {
        let out = self.path(&format!("stdout{run}.log"));
        let err = self.path(&format!("stderr{run}.log"));
        let child = self
            .litevisor()
            .args(["--config", &self.config()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout log"))
            .stderr(std::fs::File::create(&err).expect("stderr log"))
            .spawn()
            .expect("spawn litevisor");
        let mut lv = Lv {
            pid: child.id() as i32,
            child,
        };
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        // Some(false): litevisor exited early (e.g. the config names a program it cannot find).
        let enough = wait_for(PATIENCE, || {
            if lv.child.try_wait().ok().flatten().is_some() {
                return Some(false);
            }
            (committed(&read(&out)).len() >= rows && read(&err).contains("replicating to"))
                .then_some(true)
        });
        assert_eq!(
            enough,
            Some(true),
            "run {run}: the app did not commit {rows} rows\nstdout:\n{}\nstderr:\n{}",
            read(&out),
            read(&err)
        );
        let status = self.cmd(&["status"]);
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(
            status.status.success() && text.contains("app (main)") && text.contains("replicating"),
            "run {run}: status: {text}{}",
            String::from_utf8_lossy(&status.stderr)
        );
        lv.signal(libc::SIGINT);
        let code = lv.wait(PATIENCE);
        (code, read(&out), read(&err))
    }

    /// A litevisor subcommand run like the README's second terminal does.
    fn cmd(&self, args: &[&str]) -> Output {
        self.litevisor().args(args).output().expect("run litevisor")
    }

    /// `litevisor restore` of the example's database into a new file, checked; returns its ids.
    fn restored_ids(&self, name: &str) -> BTreeSet<i64> {
        let copy = self.path(name);
        let db = self.path("data/app.db").display().to_string();
        let out = self.cmd(&[
            "restore",
            "-config",
            &self.config(),
            "-o",
            &copy.display().to_string(),
            "-integrity-check",
            "full",
            &db,
        ]);
        assert!(
            out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("integrity_check ok"),
            "restore: {out:?}"
        );
        let conn = rusqlite::Connection::open(&copy).expect("open the restored copy");
        let mut stmt = conn.prepare("select id from items").expect("prepare");
        stmt.query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("ids")
    }

    /// (min, max) TXIDs of the replica's level-0 files, from `litevisor ltx`.
    fn l0_files(&self) -> Vec<(u64, u64)> {
        let db = self.path("data/app.db").display().to_string();
        let out = self.cmd(&["ltx", "-config", &self.config(), &db]);
        assert!(out.status.success(), "ltx: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let hex = |s: &str| u64::from_str_radix(s, 16).expect("txid");
                (hex(f[1]), hex(f[2]))
            })
            .collect()
    }
}

/// The ids the app reported as committed.
fn committed(stdout: &str) -> BTreeSet<i64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("[app] committed row "))
        .map(|id| id.trim().parse().expect("row id"))
        .collect()
}

#[test]
fn the_bundled_example_replicates_with_nothing_on_path_and_continues_its_replica() {
    let ex = Example::new();
    let replica = format!("file://{}", ex.path("data/replica").display());

    let (code, out, err) = ex.run(1, 3);
    assert_eq!(code, 0, "Ctrl-C exits 0\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains(&format!("replicating to {replica}")),
        "the output names the replica: {err}"
    );
    assert!(out.contains("[migrate] schema ready"), "{out}");
    assert!(out.contains("[app] started with 0 rows"), "{out}");
    assert!(out.contains("[app] stopping after"), "{out}");
    assert!(err.contains("final sync done"), "{err}");
    let first = committed(&out);
    assert_eq!(ex.restored_ids("copy1.db"), first, "{out}");
    let last_txid = ex.l0_files().iter().map(|f| f.1).max().expect("L0 files");

    let (code, out, err) = ex.run(2, 2);
    assert_eq!(code, 0, "second run\nstdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("not restored (the file exists)"), "{err}");
    assert!(
        !err.contains("snapshot"),
        "the second run continues the replica without a new snapshot: {err}"
    );
    support::assert_contains(&out, format!("[app] started with {} rows", first.len()));
    let files = ex.l0_files();
    assert!(
        files.iter().any(|f| f.0 == last_txid + 1),
        "TXIDs continue after {last_txid:x}: {files:x?}"
    );
    let second = committed(&out);
    assert!(second.iter().all(|id| id > first.last().unwrap()), "{out}");
    let all: BTreeSet<i64> = first.union(&second).copied().collect();
    assert_eq!(ex.restored_ids("copy2.db"), all);
}

#[test]
fn a_program_named_litevisor_is_litevisor_itself() {
    let version = format!("litevisor {}", env!("CARGO_PKG_VERSION"));
    let s = Setup::new(
        r#"
[services.ver]
type = "oneshot"
environment = { PATH = "/nonexistent" }
command = ["litevisor", "--version"]

[services.up]
depends_on = ["ver"]
environment = { PATH = "/nonexistent" }
command = ["/bin/sleep", "1000"]
ready_command = ["litevisor", "--version"]
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    s.wait_ready(&["up"]);
    support::assert_contains(&s.stdout(), format!("[ver] {version}"));
    lv.stop(libc::SIGTERM, 0, &s);

    // Tini mode too.
    let out = Command::new(BIN)
        .args(["--", "litevisor", "--version"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run litevisor");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), version);
}

#[test]
fn an_s6_service_directory_runs() {
    let s = Setup::new("services_dir = \"services\"\n");
    s.write("services/prepare/type", "oneshot\n");
    // execline, as s6-rc reads it (not sh: a `>>` there would be an argument of echo).
    s.write(
        "services/prepare/up",
        "sh -c \"echo prepare done >> $EV\"\n",
    );
    s.write("services/db/type", "longrun\n");
    s.write_exec(
        "services/db/run",
        "#!/bin/sh\necho db up >> $EV\nsleep 0.5\necho ready >&3\nexec sleep 1000\n",
    );
    s.write("services/db/notification-fd", "3\n");
    s.write("services/db/dependencies.d/prepare", "");
    s.write("services/app/type", "longrun\n");
    s.write_exec(
        "services/app/run",
        "#!/bin/sh\necho app up in $(pwd) >> $EV\nexec sleep 1000\n",
    );
    s.write_exec(
        "services/app/finish",
        "#!/bin/sh\necho app finish $1 $2 >> $EV\n",
    );
    s.write("services/app/dependencies.d/db", "");
    let mut lv = s.start(Mode::Pid1, &[]);
    let app_up = format!("app up in {}", s.file("services/app").display());
    s.wait_event(&app_up);
    let events = s.events();
    assert_eq!(events[..2], ["prepare done", "db up"], "{events:?}");
    lv.stop(libc::SIGTERM, 0, &s);
    assert!(
        s.position("app finish 256 15").is_some(),
        "{:?}",
        s.events()
    );
}

#[test]
fn credentials_env_and_working_dir_apply() {
    let s = Setup::new(
        r#"
[services.who]
type = "oneshot"
user = "nobody"
working_dir = "/tmp"
environment = { GREETING = "hi" }
command = ["sh", "-c", "echo $(id -u) $(id -g) $(id -G) $(pwd) $GREETING $LITEVISOR_SERVICE"]
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    assert_eq!(lv.wait(PATIENCE), 0, "{}", s.stderr());
    let line = s.stdout();
    let fields: Vec<&str> = line
        .trim()
        .trim_start_matches("[who] ")
        .split(' ')
        .collect();
    assert_eq!(fields[0], "65534", "{line}");
    assert_ne!(fields[1], "0", "gid dropped too: {line}");
    assert!(
        !fields[2..fields.len() - 3].contains(&"0"),
        "no root group left: {line}"
    );
    assert_eq!(fields[fields.len() - 3..], ["/tmp", "hi", "who"], "{line}");
}

#[test]
fn no_cpu_while_services_idle() {
    let s = Setup::new(
        r#"
[services.a]
command = ["sh", "-c", "echo >&3; exec sleep 1000"]
notification_fd = 3
[services.b]
command = ["sh", "-c", "echo tick; exec sleep 1000"]
depends_on = ["a"]
ready_command = ["true"]
[services.c]
command = ["sleep", "1000"]
"#,
    );
    let mut lv = s.start(Mode::Direct, &[]);
    wait_for(PATIENCE, || {
        s.stderr().contains("\"b\" is ready").then_some(())
    })
    .expect("ready");
    // Let start-up work (pool threads, probes) settle, then watch an idle period.
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(lv.pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(lv.pid) - before;
    assert!(used <= 2, "litevisor used {used} clock ticks while idle");
    lv.stop(libc::SIGTERM, 0, &s);
}
