//! Directory entries (Litestream's `dir:` mode): one configuration entry for every SQLite database
//! under a directory whose file name matches a pattern. Each database found gets every per-database
//! setting of the entry, and a replica at the entry's replica path plus the database's path relative
//! to the directory, exactly as Litestream builds it (`cmd/litestream/main.go`
//! `newDBFromDirectoryEntry`), so either tool restores the other's replicas:
//! `DIR/sub/x.db` -> `<replica path>/sub/x.db/...`.
//!
//! Patterns are Go's `filepath.Match` on the file name: `*`, `?`, `[a-z]`, `[^a-z]`, `\` escapes.

use std::path::{Path, PathBuf};

use super::{Database, Replica, S3Options};

/// A `dir:` entry.
#[derive(Debug, Clone)]
pub struct DatabaseDir {
    pub dir: PathBuf,
    pub pattern: String,
    /// Look in subdirectories too.
    pub recursive: bool,
    /// Follow the directory while running: a database created is replicated, one deleted dropped.
    pub watch: bool,
    /// Litestream's `meta-dir`: each database's meta directory is `<meta-dir>/<relative path>-litestream`.
    pub meta_dir: Option<PathBuf>,
    /// Every per-database setting. Its `path` is `dir`, its replica the base of each database's,
    /// its `meta_path` (Litestream's `meta-path` given with `dir`) the base of each database's.
    pub template: Database,
}

impl DatabaseDir {
    /// Whether a file name matches the entry's pattern.
    pub fn matches(&self, file_name: &str) -> bool {
        glob_match(&self.pattern, file_name).unwrap_or(false)
    }

    /// The configured database at `path` (which must be under `dir`), with its own replica and
    /// meta directory.
    pub fn database(&self, path: &Path) -> Option<Database> {
        let rel = path.strip_prefix(&self.dir).ok()?;
        if rel.as_os_str().is_empty() {
            return None;
        }
        let mut db = self.template.clone();
        db.path = path.to_path_buf();
        db.replica = self.template.replica.join(rel);
        db.meta_path = match (&self.meta_dir, &self.template.meta_path) {
            (Some(base), _) => {
                let mut p = base.join(rel).into_os_string();
                p.push("-litestream");
                Some(PathBuf::from(p))
            }
            (None, Some(base)) => {
                let file = rel.file_name()?.to_string_lossy();
                let parent = rel.parent().unwrap_or(Path::new(""));
                Some(base.join(parent).join(format!(".{file}-litestream")))
            }
            (None, None) => None,
        };
        Some(db)
    }
}

impl Replica {
    /// This replica with `rel` (a database's path relative to a `dir:` entry) appended to its path:
    /// a file replica's directory, or an S3 key prefix (`/`-joined, as Go's `path.Join`).
    pub fn join(&self, rel: &Path) -> Replica {
        let mut out = self.clone();
        match &mut out {
            Replica::File { path } => *path = path.join(rel),
            Replica::S3(S3Options { path, .. }) => {
                let rel = rel.to_string_lossy();
                let rel = rel.trim_matches('/');
                let base = path.trim_end_matches('/');
                *path = if base.is_empty() || base == "." {
                    rel.to_string()
                } else {
                    format!("{base}/{rel}")
                };
            }
        }
        out
    }
}

/// Go's `filepath.Match(pattern, name)` for one path component; `Err` for a malformed pattern.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, String> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    validate(&p)?;
    Ok(match_from(&p, &n))
}

fn validate(p: &[char]) -> Result<(), String> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err("a trailing `\\` escapes nothing".into());
                }
                i += 2;
            }
            '[' => i = class_end(p, i).ok_or("an unclosed `[`")?,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Index just past the class starting at `p[start] == '['`, if it is well formed.
fn class_end(p: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    let mut first = true;
    loop {
        match p.get(i)? {
            ']' if !first => return Some(i + 1),
            '\\' => i += 2,
            _ => i += 1,
        }
        first = false;
    }
}

fn class_matches(p: &[char], start: usize, c: char) -> bool {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while let Some(&ch) = p.get(i) {
        if ch == ']' && !first {
            break;
        }
        first = false;
        let (lo, next) = if ch == '\\' {
            (p[i + 1], i + 2)
        } else {
            (ch, i + 1)
        };
        let (hi, next) = if p.get(next) == Some(&'-') && p.get(next + 1).is_some_and(|c| *c != ']')
        {
            let h = p[next + 1];
            if h == '\\' {
                (p[next + 2], next + 3)
            } else {
                (h, next + 2)
            }
        } else {
            (lo, next)
        };
        if lo <= c && c <= hi {
            matched = true;
        }
        i = next;
    }
    matched != negated
}

fn match_from(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, name index it absorbed to).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ni));
                pi += 1;
                continue;
            }
            Some('?') if n[ni] != '/' => Some(pi + 1),
            Some('[') => {
                let end = class_end(p, pi).unwrap_or(p.len());
                (n[ni] != '/' && class_matches(p, pi, n[ni])).then_some(end)
            }
            Some('\\') => (p.get(pi + 1) == Some(&n[ni])).then_some(pi + 2),
            Some(&c) if c != '?' => (c == n[ni]).then_some(pi + 1),
            _ => None,
        };
        match step {
            Some(next) => {
                pi = next;
                ni += 1;
            }
            None => match star {
                // `*` never matches a separator.
                Some((sp, sn)) if n[sn] != '/' => {
                    star = Some((sp, sn + 1));
                    pi = sp;
                    ni = sn + 1;
                }
                _ => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match_rules() {
        let m = |p, n| glob_match(p, n).unwrap();
        assert!(m("*.db", "tenant-1.db"));
        assert!(!m("*.db", "tenant-1.db-wal"));
        assert!(!m("*.db", "x.sqlite"));
        assert!(m("*", "anything"));
        assert!(m("t?.db", "t1.db") && !m("t?.db", "t12.db"));
        assert!(m("[a-c]*.db", "b.db") && !m("[a-c]*.db", "d.db"));
        assert!(m("[^a-c]*.db", "d.db") && !m("[^a-c]*.db", "a.db"));
        assert!(m("\\*.db", "*.db") && !m("\\*.db", "x.db"));
        assert!(m("*.sqlite*", "a.sqlite3"));
        assert!(m("a*b*c", "a-x-b-y-c") && !m("a*b*c", "a-x-c"));
        assert!(glob_match("[a-", "a").is_err());
        assert!(glob_match("x\\", "x").is_err());
    }

    #[test]
    fn replica_paths_and_meta_dirs_follow_litestream() {
        let file = Replica::File {
            path: "/backups".into(),
        };
        assert_eq!(
            file.join(Path::new("sub/x.db")),
            Replica::File {
                path: "/backups/sub/x.db".into()
            }
        );
        for (base, want) in [
            ("tenants", "tenants/sub/x.db"),
            ("tenants/", "tenants/sub/x.db"),
            ("", "sub/x.db"),
            (".", "sub/x.db"),
        ] {
            let Replica::S3(S3Options { path, .. }) =
                Replica::S3(S3Options::new("b", base)).join(Path::new("sub/x.db"))
            else {
                unreachable!()
            };
            assert_eq!(path, want, "base {base:?}");
        }
        let mut entry = DatabaseDir {
            dir: "/data".into(),
            pattern: "*.db".into(),
            recursive: true,
            watch: false,
            meta_dir: None,
            template: Database::new("/data".into(), file),
        };
        let db = entry.database(Path::new("/data/sub/x.db")).unwrap();
        assert_eq!(db.path, Path::new("/data/sub/x.db"));
        assert_eq!(db.meta_path, None);
        entry.meta_dir = Some("/meta".into());
        let db = entry.database(Path::new("/data/sub/x.db")).unwrap();
        assert_eq!(
            db.meta_path.unwrap(),
            Path::new("/meta/sub/x.db-litestream")
        );
        entry.meta_dir = None;
        entry.template.meta_path = Some("/m".into());
        let db = entry.database(Path::new("/data/sub/x.db")).unwrap();
        assert_eq!(db.meta_path.unwrap(), Path::new("/m/sub/.x.db-litestream"));
        assert!(entry.database(Path::new("/elsewhere/x.db")).is_none());
    }
}
