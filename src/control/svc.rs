//! s6-style service control over the control socket: the `svc up|down|restart|once|kill SIGNAL
//! NAME`, `reload`, `register DB_PATH REPLICA_URL` and `unregister DB_PATH` requests, what they
//! carry to the supervisor, and the answers. A path in a request is absolute (the client made it so)
//! and has no whitespace.
//!
//! The request line is `svc VERB NAME` or `svc kill SIGNAL NAME`. The socket server only parses and
//! forwards: the supervisor's orchestrator owns the graph and applies the request (see
//! `crate::supervisor` for what each verb does to dependents and dependencies). The answer is one
//! line, `ok: ...` or `error: ...`; it is sent as soon as the request is applied, not when the
//! services have reached their new state (as `s6-svc` without `-w`): `litevisor status` shows them.

use tokio::sync::{mpsc, oneshot};

use crate::config::parse_signal;

/// What is asked of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Bring it (and its dependencies) up; normal supervision again.
    Up,
    /// Bring its dependents, then it, down; keep them down until `up`.
    Down,
    /// Stop it and start it again (its dependents keep running).
    Restart,
    /// Bring it up, but do not restart it when it ends.
    Once,
    /// Send this signal to its process group.
    Kill(i32),
}

/// One request for the orchestrator, with where its answer goes (`Ok`: what was done).
#[derive(Debug)]
pub struct Request {
    pub verb: Verb,
    pub name: String,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// What the socket server asks of the supervisor.
#[derive(Debug)]
pub enum Message {
    Svc(Request),
    /// Re-read the configuration and apply it (`litevisor reload`, SIGHUP); the answer says what
    /// changed, or why nothing did.
    Reload(oneshot::Sender<Result<String, String>>),
    /// Replicate one more database (`litevisor register`); the answer is Litestream's status word,
    /// `registered` or `already_exists`.
    Register {
        path: std::path::PathBuf,
        replica_url: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Stop replicating one (after its final sync); the answer is `unregistered`.
    Unregister {
        path: std::path::PathBuf,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// How the socket server reaches the supervisor.
pub type Handle = mpsc::UnboundedSender<Message>;

/// Parses the words after `svc`.
pub fn parse(words: &[&str]) -> Result<(Verb, String), String> {
    let usage = "use `svc up|down|restart|once NAME` or `svc kill SIGNAL NAME`";
    match words {
        ["up", name] => Ok((Verb::Up, (*name).to_owned())),
        ["down", name] => Ok((Verb::Down, (*name).to_owned())),
        ["restart", name] => Ok((Verb::Restart, (*name).to_owned())),
        ["once", name] => Ok((Verb::Once, (*name).to_owned())),
        ["kill", signal, name] => {
            let signal = parse_signal(signal)?;
            Ok((Verb::Kill(signal as i32), (*name).to_owned()))
        }
        _ => Err(format!("bad request {:?}: {usage}", words.join(" "))),
    }
}

/// Answers one `svc ...` request line (the words after `svc`).
pub async fn answer(words: &[&str], handle: Option<Handle>) -> String {
    let (verb, name) = match parse(words) {
        Ok(parsed) => parsed,
        Err(err) => return format!("error: {err}\n"),
    };
    let Some(handle) = handle else {
        return "error: this litevisor runs no services (service control needs the supervisor)\n"
            .to_owned();
    };
    let (reply, answer) = oneshot::channel();
    if handle
        .send(Message::Svc(Request { verb, name, reply }))
        .is_err()
    {
        return "error: litevisor is shutting down\n".to_owned();
    }
    render(answer).await
}

/// Answers a `reload` request.
pub async fn reload(handle: Option<Handle>) -> String {
    let Some(handle) = handle else {
        return "error: this litevisor has no configuration to reload\n".to_owned();
    };
    let (reply, answer) = oneshot::channel();
    if handle.send(Message::Reload(reply)).is_err() {
        return "error: litevisor is shutting down\n".to_owned();
    }
    render(answer).await
}

/// Answers `register PATH URL` and `unregister PATH` (the words after the verb).
pub async fn database(register: bool, words: &[&str], handle: Option<Handle>) -> String {
    let Some(handle) = handle else {
        return "error: this litevisor replicates nothing\n".to_owned();
    };
    let (reply, answer) = oneshot::channel();
    let message = match (register, words) {
        (true, [path, url]) => Message::Register {
            path: (*path).into(),
            replica_url: (*url).to_owned(),
            reply,
        },
        (false, [path]) => Message::Unregister {
            path: (*path).into(),
            reply,
        },
        _ => {
            return "error: use `register DB_PATH REPLICA_URL` or `unregister DB_PATH`\n"
                .to_owned();
        }
    };
    if handle.send(message).is_err() {
        return "error: litevisor is shutting down\n".to_owned();
    }
    render(answer).await
}

async fn render(answer: oneshot::Receiver<Result<String, String>>) -> String {
    match answer.await {
        Ok(Ok(done)) => format!("ok: {done}\n"),
        Ok(Err(err)) => format!("error: {err}\n"),
        Err(_) => "error: litevisor is shutting down\n".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_verb_and_refuses_the_rest() {
        assert_eq!(parse(&["up", "web"]), Ok((Verb::Up, "web".to_owned())));
        assert_eq!(parse(&["down", "web"]), Ok((Verb::Down, "web".to_owned())));
        assert_eq!(
            parse(&["restart", "a"]),
            Ok((Verb::Restart, "a".to_owned()))
        );
        assert_eq!(parse(&["once", "a"]), Ok((Verb::Once, "a".to_owned())));
        assert_eq!(
            parse(&["kill", "SIGHUP", "a"]),
            Ok((Verb::Kill(libc::SIGHUP), "a".to_owned()))
        );
        assert_eq!(
            parse(&["kill", "10", "a"]),
            Ok((Verb::Kill(libc::SIGUSR1), "a".to_owned()))
        );
        assert!(
            parse(&["kill", "NOPE", "a"])
                .unwrap_err()
                .contains("unknown signal")
        );
        assert!(parse(&["up"]).unwrap_err().contains("svc up|down"));
        assert!(parse(&["sideways", "a"]).is_err());
    }
}
