//! Checks, before anything starts, that a command can be executed the way execve will see it: a path
//! (relative to the working directory) or a name found on the service's `PATH`, naming an executable
//! file that is a binary or a `#!` script whose interpreter exists. A program named
//! [`SELF_PROGRAM`] is litevisor itself and needs no `PATH` (see [`crate::init::spawn`]).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// execvp's fallback when a service has no PATH.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A program named exactly this is the running litevisor binary, found without `PATH`: the bundled
/// example, `FROM scratch` images and checks like `ready_command = ["litevisor", ...]` need no copy
/// of litevisor on `PATH`.
pub const SELF_PROGRAM: &str = "litevisor";

/// The running binary as the kernel shows it. A forked child sees litevisor's file here until it
/// execs, so exec'ing this path runs the very same build, even if the file was replaced meanwhile.
pub const SELF_EXE: &str = "/proc/self/exe";

/// What execve would do with `argv[0]`: a path (relative to the working directory) or a PATH search;
/// then the file must be an executable binary or a `#!` script whose interpreter exists.
pub fn check_program(program: &OsStr, path_var: &OsStr, cwd: &Path) -> Result<(), String> {
    // Without /proc (rare), spawn falls back to a PATH search, and so does this check.
    if program == SELF_PROGRAM && Path::new(SELF_EXE).exists() {
        return Ok(());
    }
    let shown = Path::new(program).display();
    let file = if program.as_bytes().contains(&b'/') {
        let path = cwd.join(program);
        if !is_executable(&path) {
            return Err(if path.exists() {
                format!("{} is not an executable file", path.display())
            } else {
                format!("program {} does not exist", path.display())
            });
        }
        path
    } else {
        std::env::split_paths(path_var)
            .map(|dir| cwd.join(dir).join(program))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(|| {
                format!(
                    "program {shown:?} not found on PATH ({})",
                    Path::new(path_var).display()
                )
            })?
    };
    check_interpreter(&file)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn check_interpreter(file: &Path) -> Result<(), String> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|err| format!("cannot read {}: {err}", file.display()))?;
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let Some(line) = head.strip_prefix(b"#!") else {
        return Err(format!(
            "{} is neither a binary nor a script with a #! line (add e.g. #!/bin/sh)",
            file.display()
        ));
    };
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    let interpreter = line
        .split(|b| b.is_ascii_whitespace())
        .find(|w| !w.is_empty())
        .unwrap_or_default();
    let interpreter = Path::new(OsStr::from_bytes(interpreter));
    if is_executable(interpreter) {
        return Ok(());
    }
    let mut msg = format!(
        "the interpreter {} of {} does not exist or is not executable",
        interpreter.display(),
        file.display()
    );
    if interpreter.to_string_lossy().contains("with-contenv") {
        msg.push_str(
            " (litevisor passes the container environment to every service: use #!/bin/sh)",
        );
    }
    Err(msg)
}
