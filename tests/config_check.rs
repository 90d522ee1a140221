//! `litevisor check` on real configuration trees: every validation error names its file, line and key;
//! all errors are reported at once; the table form, the service-directory form and s6-overlay's
//! directories are accepted; and the shipped example passes.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn file(&self, rel: &str, text: &str) -> &Tree {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        self
    }

    fn script(&self, rel: &str, text: &str) -> &Tree {
        self.file(rel, text);
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    fn check(&self) -> Outcome {
        check(&self.path("litevisor.toml"))
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check(config: &Path) -> Outcome {
    let out = Command::new(support::BIN)
        .arg("check")
        .arg("--config")
        .arg(config)
        .env_remove("LITEVISOR_CONFIG")
        .output()
        .expect("run litevisor");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Outcome {
    fn ok(&self) -> &Outcome {
        assert_eq!(self.code, 0, "check failed:\n{}", self.stderr);
        self
    }

    fn fails_with(&self, lines: &[&str]) -> &Outcome {
        assert_eq!(
            self.code, 1,
            "check passed unexpectedly:\n{}{}",
            self.stdout, self.stderr
        );
        for line in lines {
            assert!(
                self.stderr.contains(line),
                "missing {line:?} in:\n{}",
                self.stderr
            );
        }
        self
    }

    /// Service names in the order `check` printed them (its start order).
    fn order(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter(|l| !l.starts_with("database "))
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect()
    }
}

const TRUE: &str = "/bin/true";

#[test]
fn the_shipped_example_passes() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("services.d.example/litevisor.toml");
    let out = check(&config);
    out.ok();
    assert_eq!(out.order(), ["migrate", "app", "reader"], "{}", out.stdout);
    let app = out.stdout.lines().find(|l| l.starts_with("app")).unwrap();
    support::assert_contains(app, "longrun");
    support::assert_contains(app, "depends_on=migrate");
    support::assert_contains(app, "main");
    let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("services.d.example/data");
    assert!(
        out.stdout.contains(&format!(
            "database {} -> file://{}",
            db.join("app.db").display(),
            db.join("replica").display()
        )),
        "{}",
        out.stdout
    );
    let migrate = out
        .stdout
        .lines()
        .find(|l| l.starts_with("migrate"))
        .unwrap();
    assert!(migrate.contains("oneshot"), "{migrate}");
}

#[test]
fn table_form_with_string_and_argv_commands_in_dependency_order() {
    let t = Tree::new();
    t.file(
        "litevisor.toml",
        r#"
services_dir = "nothing-here-is-fine-if-unset"
"#,
    );
    // An explicit services_dir that does not exist is an error naming the key.
    t.check()
        .fails_with(&["litevisor.toml:2:1: services_dir: the services directory"]);

    t.file(
        "litevisor.toml",
        &format!(
            r#"
[services.zeta]
command = ["{TRUE}", "--flag"]
depends_on = ["alpha"]

[services.alpha]
command = "echo hello | cat"
type = "oneshot"
# A oneshot may be the main program (a batch job with sidecars).
main = true

[services.mid]
command = ["true"]
depends_on = ["alpha"]
"#
        ),
    );
    let out = t.check();
    out.ok();
    assert_eq!(out.order(), ["alpha", "mid", "zeta"]);
    assert!(
        out.stdout
            .lines()
            .next()
            .unwrap()
            .ends_with("oneshot  depends_on=-  main"),
        "{}",
        out.stdout
    );
}

#[test]
fn unknown_keys_are_reported_with_file_line_and_key() {
    let t = Tree::new();
    t.file(
        "litevisor.toml",
        &format!("[services.a]\ncommand = [\"{TRUE}\"]\nrestrat = \"always\"\n\nbogus_top = 1\n"),
    );
    let out = t.check();
    let file = t.path("litevisor.toml");
    out.fails_with(&[&format!(
        "{}:3:1: services.a.restrat: unknown key",
        file.display()
    )]);
    // TOML puts `bogus_top` inside [services.a], after the table header.
    out.fails_with(&["services.a.bogus_top: unknown key"]);
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let t = Tree::new();
    t.file(
        "litevisor.toml",
        &format!(
            r#"shutdown_timeout = "ten seconds"
grace = "5x"

[services.a]
command = ["{TRUE}"]
stop_signal = "TERMINATE"
notification_fd = 2
main = true
ready_timeout = "-1s"

[services.b]
command = ["{TRUE}"]
main = true
restart = "sometimes"
stop_signal = 99

[services."bad name"]
command = ["{TRUE}"]

[services.c]
depends_on = ["a"]
"#
        ),
    );
    let out = t.check();
    out.fails_with(&[
        "litevisor.toml:1:1: shutdown_timeout: invalid duration \"ten seconds\"",
        "litevisor.toml:2:1: grace: invalid duration \"5x\"",
        "litevisor.toml:6:1: services.a.stop_signal: unknown signal \"TERMINATE\"",
        "litevisor.toml:7:1: services.a.notification_fd: invalid fd 2",
        "litevisor.toml:9:1: services.a.ready_timeout: invalid duration",
        "litevisor.toml:13:1: services.b.main: only one service can be `main`",
        "litevisor.toml:14:1: services.b.restart: unknown restart policy \"sometimes\"",
        "litevisor.toml:15:1: services.b.stop_signal: unknown signal \"99\"",
        "services.bad name: invalid service name",
        "services.c.command: missing required key",
    ]);
    support::assert_contains(&out.stderr, "configuration invalid: 10 problems");
}

#[test]
fn toml_syntax_errors_have_a_line() {
    let t = Tree::new();
    t.file(
        "litevisor.toml",
        "[services.a]\ncommand = = 1\n[services.b]\n",
    );
    t.check().fails_with(&["litevisor.toml:2:11: invalid TOML"]);
}

#[test]
fn missing_dependency_names_both_services() {
    let t = Tree::new();
    t.file(
        "litevisor.toml",
        &format!("[services.app]\ncommand = [\"{TRUE}\"]\ndepends_on = [\"ghost\"]\n"),
    );
    t.check().fails_with(&[
        "litevisor.toml:3:15: services.app.depends_on[0]: service \"app\" depends on \"ghost\", which is not defined",
    ]);
}

#[test]
fn dependency_cycles_are_printed() {
    let t = Tree::new();
    t.file(
        "litevisor.toml",
        &format!(
            r#"
[services.a]
command = ["{TRUE}"]
depends_on = ["b"]
[services.b]
command = ["{TRUE}"]
depends_on = ["c"]
[services.c]
command = ["{TRUE}"]
depends_on = ["a"]
[services.ok]
command = ["{TRUE}"]
"#
        ),
    );
    t.check().fails_with(&[
        "litevisor.toml:4:1: services.a.depends_on: dependency cycle: a -> b -> c -> a",
    ]);
}

#[test]
fn programs_must_exist_and_be_executable() {
    let t = Tree::new();
    t.file("not-exec.sh", "#!/bin/sh\n");
    t.script("no-shebang", "echo hi\n");
    t.script("contenv", "#!/command/with-contenv sh\necho hi\n");
    t.file(
        "litevisor.toml",
        r#"
[services.a]
command = ["no-such-program-lv"]
[services.b]
command = ["./not-exec.sh"]
working_dir = "."
[services.c]
command = ["/nonexistent/bin/x"]
[services.d]
command = ["./no-shebang"]
working_dir = "."
[services.e]
command = ["./contenv"]
working_dir = "."
[services.f]
command = ["/bin/true"]
ready_command = ["no-such-probe-lv"]
"#,
    );
    t.check().fails_with(&[
        "litevisor.toml:3:1: services.a.command: program \"no-such-program-lv\" not found on PATH",
        "litevisor.toml:5:1: services.b.command:",
        "not-exec.sh is not an executable file",
        "services.c.command: program /nonexistent/bin/x does not exist",
        "services.d.command:",
        "is neither a binary nor a script with a #! line",
        "services.e.command: the interpreter /command/with-contenv",
        "use #!/bin/sh",
        "services.f.ready_command: program \"no-such-probe-lv\" not found",
    ]);
}

#[test]
fn service_directory_form() {
    let t = Tree::new();
    t.file("litevisor.toml", "services_dir = \"svc\"\n");
    t.script("svc/db/run", "#!/bin/sh\nexec sleep 1000\n");
    t.file(
        "svc/db/service.toml",
        "notification_fd = 3\nstop_grace = \"2s\"\n",
    );
    t.script("svc/api/run", "#!/bin/sh\nexec sleep 1000\n");
    t.script("svc/api/finish", "#!/bin/sh\nexit 0\n");
    t.file(
        "svc/api/service.toml",
        "depends_on = [\"db\"]\nmain = true\nready_tcp = \"127.0.0.1:8080\"\n",
    );
    // Hidden entries and plain files are not services.
    t.file("svc/.hidden/service.toml", "this is not toml");
    t.file("svc/README", "notes");
    let out = t.check();
    out.ok();
    assert_eq!(out.order(), ["db", "api"]);
}

#[test]
fn service_directory_errors() {
    let t = Tree::new();
    t.file("litevisor.toml", "services_dir = \"svc\"\n");
    t.file("svc/norun/README", "no run file");
    t.file("svc/noexec/run", "#!/bin/sh\n");
    t.script("svc/both/run", "#!/bin/sh\n");
    t.file("svc/both/service.toml", "command = [\"/bin/true\"]\n");
    t.script("svc/typo/run", "#!/bin/sh\n");
    t.file("svc/typo/service.toml", "\n\nrestart_dealy = \"1s\"\n");
    let svc = t.path("svc");
    let out = t.check();
    out.fails_with(&[
        &format!("{}: no executable `run` file", svc.join("norun").display()),
        &format!("{}: not executable", svc.join("noexec/run").display()),
        &format!(
            "{}: also set by {}:1:1 (command)",
            svc.join("both/run").display(),
            svc.join("both/service.toml").display()
        ),
        &format!(
            "{}:3:1: restart_dealy: unknown key",
            svc.join("typo/service.toml").display()
        ),
    ]);
}

#[test]
fn a_service_defined_twice_names_both_places() {
    let t = Tree::new();
    t.file(
        "litevisor.toml",
        &format!("services_dir = \"svc\"\n[services.web]\ncommand = [\"{TRUE}\"]\n"),
    );
    t.script("svc/web/run", "#!/bin/sh\n");
    t.check()
        .fails_with(&["service \"web\" is defined twice", "litevisor.toml:2:"]);
}

#[test]
fn s6_overlay_directories_are_read_as_they_are() {
    let t = Tree::new();
    t.file("litevisor.toml", "services_dir = \"s6-rc.d\"\n");
    // A oneshot: `up` holds one command line.
    t.file("s6-rc.d/init-db/type", "oneshot\n");
    t.file("s6-rc.d/init-db/up", "/bin/true\n");
    t.file("s6-rc.d/init-db/dependencies.d/base", "");
    // A longrun with readiness, stop signal and timeouts.
    t.file("s6-rc.d/app/type", "longrun\n");
    t.script("s6-rc.d/app/run", "#!/bin/sh\nexec sleep 1000\n");
    t.file("s6-rc.d/app/dependencies.d/base", "");
    t.file("s6-rc.d/app/dependencies.d/init-db", "");
    t.file("s6-rc.d/app/notification-fd", "3\n");
    t.file("s6-rc.d/app/down-signal", "SIGINT\n");
    t.file("s6-rc.d/app/timeout-kill", "5000\n");
    t.file("s6-rc.d/app/timeout-up", "0\n");
    // s6-overlay's user bundle, and a service depending on it.
    t.file("s6-rc.d/user/type", "bundle\n");
    t.file("s6-rc.d/user/contents.d/app", "");
    t.file("s6-rc.d/user/contents.d/init-db", "");
    t.file("s6-rc.d/late/type", "longrun\n");
    t.script("s6-rc.d/late/run", "#!/bin/sh\nexec sleep 1000\n");
    t.file("s6-rc.d/late/dependencies.d/user", "");
    // A legacy s6 logger is accepted with a warning: litevisor prefixes and prints output itself.
    t.script(
        "s6-rc.d/app/log/run",
        "#!/bin/sh\nexec logutil-service /var/log/app\n",
    );
    let out = t.check();
    out.ok();
    let log_dir = t.path("s6-rc.d/app/log");
    support::assert_contains(
        &out.stderr,
        format!("warning: {}: ignored", log_dir.display()),
    );
    assert_eq!(out.order(), ["init-db", "app", "late"]);
    support::assert_contains(&out.stdout, "depends_on=app,init-db");
}

#[test]
fn bundle_cycles_are_printed() {
    let t = Tree::new();
    t.file("litevisor.toml", "services_dir = \"s6\"\n");
    t.file("s6/one/type", "bundle\n");
    t.file("s6/one/contents.d/two", "");
    t.file("s6/two/type", "bundle\n");
    t.file("s6/two/contents.d/one", "");
    t.file("s6/app/type", "longrun\n");
    t.script("s6/app/run", "#!/bin/sh\n");
    t.file("s6/app/dependencies.d/one", "");
    t.check().fails_with(&[
        "bundle cycle: one -> two -> one",
        "bundle cycle: two -> one -> two",
    ]);
}

#[test]
fn s6_files_are_validated_too() {
    let t = Tree::new();
    t.file("litevisor.toml", "services_dir = \"s6\"\n");
    t.file("s6/a/type", "longrun\n");
    t.script("s6/a/run", "#!/bin/sh\n");
    t.file("s6/a/notification-fd", "1\n");
    t.file("s6/a/down-signal", "NOPE\n");
    t.file("s6/a/timeout-kill", "3s\n");
    t.file("s6/a/dependencies.d/missing", "");
    t.file("s6/a/producer-for", "a-log\n");
    t.file("s6/b/type", "bundle\n");
    t.file("s6/b/contents.d/nobody", "");
    t.file("s6/c/type", "longrun\n");
    t.file("s6/c/up", "/bin/true\n");
    let s6 = t.path("s6");
    t.check().fails_with(&[
        &format!("{}: invalid fd 1", s6.join("a/notification-fd").display()),
        &format!(
            "{}: unknown signal \"NOPE\"",
            s6.join("a/down-signal").display()
        ),
        &format!(
            "{}: invalid timeout \"3s\"",
            s6.join("a/timeout-kill").display()
        ),
        &format!(
            "{}: service \"a\" depends on \"missing\"",
            s6.join("a/dependencies.d/missing").display()
        ),
        &format!(
            "{}: \"a-log\" is not a service",
            s6.join("a/producer-for").display()
        ),
        "bundle \"b\" contains \"nobody\"",
        // A longrun's `up` is ignored (as by s6-rc-compile): it still needs a `run`.
        &format!("{}: no executable `run` file", s6.join("c").display()),
    ]);
}

#[test]
fn env_files_are_read_and_validated() {
    let t = Tree::new();
    t.file("good.env", "# comment\nexport A=1\nB='two words'\n");
    t.file("bad.env", "OK=1\nthis line is wrong\n1X=2\n");
    t.file(
        "litevisor.toml",
        &format!(
            r#"
[services.a]
command = ["{TRUE}"]
env_files = ["good.env"]
environment = {{ PORT = 8080, DEBUG = true }}
[services.b]
command = ["{TRUE}"]
env_files = ["bad.env", "missing.env"]
environment = {{ "BAD-NAME" = "x" }}
"#
        ),
    );
    let bad = t.path("bad.env");
    t.check().fails_with(&[
        &format!("{}:2:1: expected NAME=value", bad.display()),
        &format!(
            "{}:3:1: invalid environment variable name \"1X\"",
            bad.display()
        ),
        "litevisor.toml:8:25: services.b.env_files[1]: env file",
        "missing.env does not exist",
        "services.b.environment: invalid environment variable name \"BAD-NAME\"",
    ]);
    t.file(
        "litevisor.toml",
        &format!("[services.a]\ncommand = [\"{TRUE}\"]\nenv_files = [\"good.env\"]\n"),
    );
    t.check().ok();
}

#[test]
fn users_and_groups_resolve_or_fail_closed() {
    let t = Tree::new();
    t.file("litevisor.toml", &format!("[services.a]\ncommand = [\"{TRUE}\"]\nuser = \"root\"\ngroup = \"root\"\n[services.b]\ncommand = [\"{TRUE}\"]\nuser = 0\n"));
    t.check().ok();
    t.file(
        "litevisor.toml",
        &format!(
            "[services.a]\ncommand = [\"{TRUE}\"]\nuser = \"no-such-user-lv\"\n[services.b]\ncommand = [\"{TRUE}\"]\nuser = \"root\"\ngroup = \"no-such-group-lv\"\n[services.c]\ncommand = [\"{TRUE}\"]\ngroup = \"root\"\n[services.d]\ncommand = [\"{TRUE}\"]\nuser = 48213\n"
        ),
    );
    t.check().fails_with(&[
        "litevisor.toml:3:1: services.a.user: unknown user \"no-such-user-lv\"",
        "litevisor.toml:7:1: services.b.group: unknown group \"no-such-group-lv\"",
        "litevisor.toml:10:1: services.c.group: `group` needs `user` as well",
        "litevisor.toml:13:1: services.d.user: uid 48213 has no entry in /etc/passwd",
    ]);
}

#[test]
fn oneshots_reject_longrun_only_keys() {
    let t = Tree::new();
    t.file(
        "litevisor.toml",
        &format!("[services.a]\ncommand = [\"{TRUE}\"]\ntype = \"oneshot\"\nrestart = \"always\"\nready_tcp = \"127.0.0.1:1\"\n"),
    );
    t.check().fails_with(&[
        "litevisor.toml:4:1: services.a.restart: a oneshot is never restarted",
        "litevisor.toml:5:1: services.a.ready_tcp: applies only to longrun services",
    ]);
}

#[test]
fn databases_are_validated_and_secrets_never_printed() {
    let t = Tree::new();
    t.file(
        "litevisor.toml",
        &format!(
            r#"
[services.app]
command = ["{TRUE}"]
databases = ["data/app.db"]

[[databases]]
path = "data/app.db"
replica = {{ type = "s3", bucket = "bkt", path = "app", endpoint = "http://127.0.0.1:9000", access_key_id = "AKIDLEAK", secret_access_key = "hunter2" }}
sync_interval = "500ms"

[[databases]]
path = "/var/lib/other.db"
replica = "file:///backups/other"
restore = "always"
"#
        ),
    );
    let out = t.check();
    out.ok();
    support::assert_contains(
        &out.stdout,
        "database /var/lib/other.db -> file:///backups/other",
    );
    support::assert_contains(&out.stdout, "data/app.db -> s3://bkt/app");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !all.contains("hunter2") && !all.contains("AKIDLEAK"),
        "{all}"
    );

    t.file(
        "litevisor.toml",
        &format!(
            r#"
[services.app]
command = ["{TRUE}"]
databases = ["nope.db"]

[[databases]]
path = "a.db"
replica = "gs://bucket/a"
restore = "sometimes"
min_checkpoint_page_count = 0

[[databases]]
replica = {{ url = "s3://b/p", bucket = "other", secret_access_key = 42, colour = "blue" }}
"#
        ),
    );
    let out = t.check();
    out.fails_with(&[
        "litevisor.toml:4:14: services.app.databases[0]: no [[databases]] entry has path \"nope.db\"",
        "litevisor.toml:8:1: databases[0].replica: unsupported replica scheme \"gs\"",
        "litevisor.toml:9:1: databases[0].restore: unknown value \"sometimes\"",
        "litevisor.toml:10:1: databases[0].min_checkpoint_page_count: must be an integer from 1",
        "databases[1].path: missing required key",
        "databases[1].replica.bucket: conflicts with `url`",
        "databases[1].replica.secret_access_key: expected a string, found an integer",
        "databases[1].replica.colour: unknown key",
    ]);
}

#[test]
fn config_path_comes_from_the_environment_and_must_exist_when_explicit() {
    let t = Tree::new();
    t.file(
        "elsewhere.toml",
        &format!("[services.only]\ncommand = [\"{TRUE}\"]\n"),
    );
    let out = Command::new(support::BIN)
        .arg("check")
        .env("LITEVISOR_CONFIG", t.path("elsewhere.toml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("only"));

    let missing = t.path("missing.toml");
    check(&missing).fails_with(&[&format!(
        "{}: cannot read the configuration file",
        missing.display()
    )]);
}
