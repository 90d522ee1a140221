//! Resolves `user` and `group` to numeric ids and supplementary groups at load time, so a typo fails
//! the load instead of the service's first start. A user with a passwd entry gets its primary group and
//! its `/etc/group` memberships (like `initgroups`); a bare numeric uid with no entry must name its
//! `group` explicitly, because falling back to gid 0 would silently run it in the root group.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

use super::Credentials;
use super::tree::Located;

#[derive(Debug)]
pub struct Resolved {
    pub credentials: Credentials,
    /// Home directory from passwd, for `HOME`.
    pub home: Option<String>,
}

pub fn resolve(
    user: &Located<String>,
    group: Option<&Located<String>>,
) -> Result<Resolved, (Located<()>, String)> {
    let fail = |at: &Located<String>, msg: String| {
        Err((
            Located {
                value: (),
                loc: at.loc.clone(),
            },
            msg,
        ))
    };
    let entry = match lookup_user(&user.value) {
        Ok(entry) => entry,
        Err(msg) => return fail(user, msg),
    };
    let uid = match (&entry, user.value.parse::<u32>()) {
        (Some(u), _) => u.uid.as_raw(),
        (None, Ok(uid)) => uid,
        (None, Err(_)) => {
            return fail(
                user,
                format!(
                    "unknown user {:?}: no such entry in /etc/passwd",
                    user.value
                ),
            );
        }
    };
    let gid = match group {
        Some(g) => match lookup_group(&g.value) {
            Ok(gid) => gid,
            Err(msg) => return fail(g, msg),
        },
        None => match &entry {
            Some(u) => u.gid.as_raw(),
            None => {
                let msg = format!(
                    "uid {uid} has no entry in /etc/passwd, so its group is unknown: set `group` too"
                );
                return fail(user, msg);
            }
        },
    };
    let mut groups = match &entry {
        Some(u) => match CString::new(u.name.as_bytes())
            .ok()
            .map(|c| getgrouplist(&c, Gid::from_raw(gid)))
        {
            Some(Ok(list)) => list.into_iter().map(Gid::as_raw).collect(),
            _ => return fail(user, format!("cannot read the groups of user {:?}", u.name)),
        },
        None => vec![gid],
    };
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    groups.dedup();
    let credentials = Credentials {
        uid,
        gid,
        groups,
        user_name: entry.as_ref().map(|u| u.name.clone()),
    };
    Ok(Resolved {
        credentials,
        home: entry.map(|u| u.dir.to_string_lossy().into_owned()),
    })
}

fn lookup_user(text: &str) -> Result<Option<User>, String> {
    let found = match text.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(text),
    };
    found.map_err(|err| format!("cannot look up user {text:?}: {err}"))
}

fn lookup_group(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(text) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!(
            "unknown group {text:?}: no such entry in /etc/group"
        )),
        Err(err) => Err(format!("cannot look up group {text:?}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::diag::Loc;

    fn at(value: &str) -> Located<String> {
        Located {
            value: value.to_string(),
            loc: Loc::key("t.toml".as_ref(), "user"),
        }
    }

    #[test]
    fn root_by_name_and_number() {
        let by_name = resolve(&at("root"), None).unwrap_or_else(|(_, m)| panic!("{m}"));
        assert_eq!((by_name.credentials.uid, by_name.credentials.gid), (0, 0));
        assert!(by_name.credentials.groups.contains(&0));
        assert_eq!(by_name.credentials.user_name.as_deref(), Some("root"));
        let by_number = resolve(&at("0"), None).unwrap_or_else(|(_, m)| panic!("{m}"));
        assert_eq!(by_number.credentials.uid, 0);
    }

    #[test]
    fn unknown_names_fail() {
        assert!(
            resolve(&at("no-such-user-lv"), None)
                .unwrap_err()
                .1
                .contains("unknown user")
        );
        assert!(
            resolve(&at("root"), Some(&at("no-such-group-lv")))
                .unwrap_err()
                .1
                .contains("unknown group")
        );
    }

    #[test]
    fn numeric_uid_without_entry_needs_a_group() {
        let err = resolve(&at("48213"), None).unwrap_err().1;
        assert!(err.contains("set `group`"), "{err}");
        let ok = resolve(&at("48213"), Some(&at("48214"))).unwrap_or_else(|(_, m)| panic!("{m}"));
        assert_eq!(
            ok.credentials,
            Credentials {
                uid: 48213,
                gid: 48214,
                groups: vec![48214],
                user_name: None
            }
        );
    }
}
