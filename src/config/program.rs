//! Checks, before anything starts, that a command can be executed the way execve will see it: a path
//! (relative to the working directory) or a name found on the service's `PATH`, naming an executable
//! file that is a binary or a `#!` script whose interpreter exists. A program named
//! [`SELF_PROGRAM`] is litevisor itself and needs no `PATH` (see [`crate::init::spawn`]).

use std::ffi::{OsStr, OsString};
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

/// The argv that runs the script `path` (an s6 `run`/`finish`, a cont-init.d script):
/// - a `#!/command/with-contenv PROG` (or `/usr/bin/with-contenv`) script runs as `PROG path`:
///   with-contenv only restores the container environment that s6-overlay's stage 1 wiped, and
///   litevisor never wipes it (the real with-contenv would load an empty envdir);
/// - a `#!/command/PROG [ARG]` script (s6-overlay's directory of skarnet programs, such as
///   `execlineb`) runs as `PROG [ARG] path` through PATH when the image has no `/command`;
/// - a `#!INTERP [ARG]` script without the exec bit runs as `INTERP [ARG] path`, what the kernel
///   would do once `s6-rc-compile` installed it 0755 (only where `relaxed`: s6-rc source dirs);
/// - anything else runs as itself.
pub fn script_argv(path: &Path, relaxed: bool) -> Vec<OsString> {
    let itself = vec![path.as_os_str().to_owned()];
    let Some((interpreter, arg)) = shebang(path) else {
        return itself;
    };
    let mut argv = Vec::new();
    if Path::new(&interpreter).file_name() == Some(OsStr::new("with-contenv")) {
        match arg {
            Some(prog) => argv.push(prog),
            // `with-contenv` alone runs the script's remaining words; treat it as sh would.
            None => argv.push("/bin/sh".into()),
        }
    } else if let Some(name) = Path::new(&interpreter)
        .strip_prefix("/command")
        .ok()
        .filter(|_| !Path::new(&interpreter).exists())
    {
        argv.push(name.as_os_str().to_owned());
        argv.extend(arg);
    } else if relaxed && !is_executable(path) {
        argv.push(interpreter);
        argv.extend(arg);
    } else {
        return itself;
    }
    argv.push(path.as_os_str().to_owned());
    argv
}

/// The `#!` line of a file: the interpreter and its one optional argument (the kernel passes the
/// rest of the line as a single argument).
fn shebang(path: &Path) -> Option<(OsString, Option<OsString>)> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.trim_ascii();
    let (interp, rest) = match line.iter().position(|b| b.is_ascii_whitespace()) {
        Some(i) => (&line[..i], line[i..].trim_ascii()),
        None => (line, &b""[..]),
    };
    if interp.is_empty() {
        return None;
    }
    let arg = (!rest.is_empty()).then(|| OsStr::from_bytes(rest).to_owned());
    Some((OsStr::from_bytes(interp).to_owned(), arg))
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
