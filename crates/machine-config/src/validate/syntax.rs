//! Syntax of the names and paths a config holds: host and domain names,
//! interface names, MAC addresses, Kubernetes label keys, absolute paths,
//! URLs. Each check returns `Err(reason)` naming what is wrong.

use std::net::IpAddr;

/// An RFC 1123 DNS name: dot-separated labels of `[A-Za-z0-9-]`, each 1-63
/// characters and not starting or ending with `-`, 253 characters at most.
pub(crate) fn dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 253 {
        return Err(format!("is {} characters long (at most 253)", name.len()));
    }
    for label in name.split('.') {
        dns_label(label).map_err(|e| format!("label {label:?} {e}"))?;
    }
    Ok(())
}

/// One DNS label: 1-63 characters of `[A-Za-z0-9-]`, not starting or ending
/// with `-`.
pub(crate) fn dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("is empty (two dots in a row, or a leading/trailing dot)".into());
    }
    if label.len() > 63 {
        return Err(format!("is {} characters long (at most 63)", label.len()));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!("contains {c:?} (only letters, digits and '-')"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("starts or ends with '-'".into());
    }
    Ok(())
}

/// A host name or an IP address (NTP servers, certificate names).
pub(crate) fn host_or_ip(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    dns_name(s).map_err(|e| format!("is neither an IP address nor a host name: {e}"))
}

/// A Linux network interface name: 1-15 bytes, no `/`, `:`, whitespace or
/// control characters, not `.` or `..`.
pub(crate) fn interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!(
            "{name:?} is not an interface name (1 to 15 characters)"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not an interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{name:?} is not an interface name: {c:?} is not allowed"
        ));
    }
    Ok(())
}

/// A MAC address: six two-digit hex octets separated by `:`.
pub(crate) fn mac(s: &str) -> Result<(), String> {
    let octets: Vec<&str> = s.split(':').collect();
    let ok = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a MAC address (expected six hex octets like 52:54:00:12:34:56)"
        ))
    }
}

/// A normalised MAC for duplicate detection.
pub(crate) fn mac_key(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// An absolute, normalised path: starts with `/`, no empty, `.` or `..`
/// components, no trailing `/`, no control characters.
pub(crate) fn absolute_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not an absolute path"));
    }
    if p.chars().any(char::is_control) {
        return Err(format!("{p:?} contains control characters"));
    }
    if p == "/" {
        return Ok(());
    }
    if p.ends_with('/') {
        return Err(format!("{p:?} ends with '/'"));
    }
    for comp in p[1..].split('/') {
        match comp {
            "" => return Err(format!("{p:?} contains an empty component (\"//\")")),
            "." | ".." => {
                return Err(format!(
                    "{p:?} contains a {comp:?} component: paths must be written without . or .."
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// True when `p` (already a valid absolute path) lies strictly below `root`.
pub(crate) fn is_below(p: &str, root: &str) -> bool {
    p.strip_prefix(root)
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// An `https://HOST[:PORT][/PATH]` URL, as kubelet and the drain client
/// need. Returns the reason when it is not one.
pub(crate) fn https_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .ok_or_else(|| format!("{s:?} is not an https:// URL (the API server is always TLS)"))?;
    url_authority(s, rest)
}

/// An `http://` or `https://` URL (registry mirror endpoints).
pub(crate) fn http_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("{s:?} is not an http:// or https:// URL"))?;
    url_authority(s, rest)
}

fn url_authority(whole: &str, rest: &str) -> Result<(), String> {
    let authority = rest.split('/').next().unwrap_or_default();
    host_port(authority).map_err(|e| format!("{whole:?}: {e}"))?;
    if whole.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{whole:?} contains whitespace"));
    }
    Ok(())
}

/// `HOST[:PORT]`, where HOST is a DNS name, an IPv4 address or a bracketed
/// IPv6 address.
pub(crate) fn host_port(s: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{s:?} has an unclosed '['"))?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        (None, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(host) = host {
        if host.parse::<std::net::Ipv4Addr>().is_err() {
            dns_name(host).map_err(|e| format!("host {host:?} {e}"))?;
        }
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(format!("port {port:?} is not a number in 1..65535")),
        }
    }
    Ok(())
}

/// A Kubernetes qualified name (label or taint key): optional DNS
/// subdomain prefix and `/`, then a name of at most 63 characters of
/// `[A-Za-z0-9-_.]` starting and ending with a letter or digit.
pub(crate) fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        dns_name(prefix).map_err(|e| format!("prefix {prefix:?} {e}"))?;
        if prefix.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("prefix {prefix:?} must be lowercase"));
        }
    }
    if name.is_empty() {
        return Err("the name part is empty".into());
    }
    label_value(name).map_err(|e| format!("name {name:?} {e}"))
}

/// A Kubernetes label value: empty, or at most 63 characters of
/// `[A-Za-z0-9-_.]` starting and ending with a letter or digit.
pub(crate) fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 {
        return Err(format!("is {} characters long (at most 63)", v.len()));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?} (only letters, digits, '-', '_', '.')"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(v.chars().next()) || !edge_ok(v.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A single command-line token: non-empty, no whitespace or control
/// characters.
pub(crate) fn token(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} contains whitespace or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(dns_name("node-1.lan").is_ok());
        assert!(dns_name("-bad").is_err());
        assert!(dns_name("a..b").is_err());
        assert!(dns_name("under_score").is_err());
        assert!(interface_name("enp0s2").is_ok());
        assert!(interface_name("this-name-is-too-long").is_err());
        assert!(mac("52:54:00:AB:cd:01").is_ok());
        assert!(mac("52:54:00:ab:cd").is_err());
        assert!(absolute_path("/etc/a/b").is_ok());
        assert!(absolute_path("/etc/../root").is_err());
        assert!(absolute_path("etc/a").is_err());
        assert!(absolute_path("/etc//a").is_err());
        assert!(is_below("/etc/a", "/etc"));
        assert!(!is_below("/etcetera/a", "/etc"));
        assert!(!is_below("/etc", "/etc"));
        assert!(https_url("https://10.0.2.100:6443").is_ok());
        assert!(https_url("https://[fd00::1]:6443/").is_ok());
        assert!(https_url("http://10.0.2.100:6443").is_err());
        assert!(https_url("https://host:99999").is_err());
        assert!(qualified_name("example.com/role").is_ok());
        assert!(qualified_name("role").is_ok());
        assert!(qualified_name("Example.com/role").is_err());
        assert!(qualified_name("a/-x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("a b").is_err());
    }
}
