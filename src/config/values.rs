//! Small parsers for the scalar value types of the configuration: durations, signals, service names
//! and `host:port` addresses. Each returns a message fit to follow "key: " in an error line.

use std::time::Duration;

use nix::sys::signal::Signal;

/// The one duration parser, for the TOML file, litestream.yml, flags and environment values: Go's
/// `time.ParseDuration` syntax as Litestream's flags and YAML take it (`500ms`, `1.5s`, `1m30s`,
/// `24h`; units ns, us/µs, ms, s, m, h) plus plain (fractional) seconds (`10`, `0.5`). Negative,
/// unit-less compounds and overflowing values are refused.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "invalid duration {text:?}: use e.g. \"500ms\", \"10s\", \"1.5s\", \"2m\", \"1h\" or plain seconds"
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = text.parse().map_err(|_| bad())?;
        return Duration::try_from_secs_f64(seconds).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let unit_len = rest[number_len..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len() - number_len);
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        let unit_seconds = match &rest[number_len..number_len + unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        let part = Duration::try_from_secs_f64(number * unit_seconds).map_err(|_| bad())?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[number_len + unit_len..];
    }
    Ok(total)
}

/// `"TERM"`, `"SIGTERM"` (any case) or a number such as `"15"`.
pub fn signal(text: &str) -> Result<Signal, String> {
    let text = text.trim();
    let bad = || {
        format!("unknown signal {text:?}: use a name such as \"TERM\" or \"SIGINT\", or a number")
    };
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

/// Service names: `[A-Za-z0-9._-]+`, not `.` or `..` (they become directory names and log prefixes).
pub fn service_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || !valid_chars || name == "." || name == ".." {
        return Err(format!(
            "invalid service name {name:?}: use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// `"127.0.0.1:8080"`, `"[::1]:80"` or `"localhost:8080"`: a host and a non-zero port.
pub fn host_port(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("invalid address {text:?}: use host:port, e.g. \"127.0.0.1:8080\"");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let bracketed = text.starts_with('[');
    if host.contains(':') && (!bracketed || host.parse::<std::net::Ipv6Addr>().is_err()) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("250us"), Ok(Duration::from_micros(250)));
        for bad in [
            "", "s", "10x", "-1s", "-1", "10 s", "ms10", "5d", "1s2", "ten", "m", "1..5s", "1e3",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn durations_add_up(h in 0u64..100, m in 0u64..100, s in 0u64..100, ms in 0u64..2000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let expected = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
            proptest::prop_assert_eq!(duration(&text), Ok(expected));
            proptest::prop_assert_eq!(duration(&s.to_string()), Ok(Duration::from_secs(s)));
        }

        #[test]
        fn durations_never_panic(text in "\\PC{0,12}") {
            let _ = duration(&text);
        }
    }

    #[test]
    fn signals() {
        assert_eq!(signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(signal("SIGTERM"), Ok(Signal::SIGTERM));
        assert_eq!(signal("sigint"), Ok(Signal::SIGINT));
        assert_eq!(signal("15"), Ok(Signal::SIGTERM));
        assert_eq!(signal("9"), Ok(Signal::SIGKILL));
        assert!(signal("TERMINATE").is_err());
        assert!(signal("0").is_err());
        assert!(signal("99").is_err());
    }

    #[test]
    fn names() {
        assert!(service_name("web-1.api_v2").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "é"] {
            assert!(service_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(host_port("127.0.0.1:8080"), Ok(("127.0.0.1".into(), 8080)));
        assert_eq!(host_port("[::1]:80"), Ok(("::1".into(), 80)));
        assert_eq!(host_port("localhost:1"), Ok(("localhost".into(), 1)));
        for bad in ["8080", ":80", "a:0", "a:70000", "a b:1", "::1:80"] {
            assert!(host_port(bad).is_err(), "{bad:?} accepted");
        }
    }
}
