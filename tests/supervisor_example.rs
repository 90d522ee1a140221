//! The bundled example runs as documented, the s6-overlay directory form runs, credentials apply,
//! and litevisor uses no CPU while its services idle.

mod supervisor_support;

use std::io::{Read, Write};
use std::time::Duration;

use supervisor_support::*;

fn http_get(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn the_bundled_example_serves_and_stops_on_sigterm() {
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/services.d.example/litevisor.toml"
    );
    let s = Setup::new("");
    let mut lv = s.start_with(Mode::Pid1, &["--config", config], &[]);
    let page = wait_for(PATIENCE, || {
        http_get(8080).filter(|p| p.contains("Hello from litevisor"))
    });
    assert!(page.is_some(), "web never answered:\n{}", s.stderr());
    let out = wait_for(PATIENCE, || {
        let out = s.stdout();
        out.contains("[worker] ").then_some(out)
    })
    .expect("worker output");
    assert!(out.contains("[migrate] schema at version 2"), "{out}");
    lv.signal(libc::SIGTERM);
    // web (main) is busybox httpd, which dies of SIGTERM: 128 + 15, as documented.
    assert_eq!(lv.wait(PATIENCE), 143, "{}", s.stderr());
    assert!(
        s.stdout().contains("[worker] stopping after"),
        "{}",
        s.stdout()
    );
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
    lv.signal(libc::SIGTERM);
    assert_eq!(lv.wait(PATIENCE), 0, "{}", s.stderr());
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
    lv.signal(libc::SIGTERM);
    assert_eq!(lv.wait(PATIENCE), 0);
}
