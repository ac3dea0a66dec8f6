//! The role table of the machine API: for every method, the least role a
//! client certificate must carry (in its Organization) and whether the
//! method is open in maintenance mode. Plain data plus pure lookups; apid
//! enforces it, nodectl may use it to explain a refusal.
//!
//! Choices beyond "reader reads, operator operates, admin does all":
//! `GetConfiguration` needs admin because a config may carry private keys
//! (the CA key, the node key, a kubeconfig); `Read` needs operator because
//! files under /etc include credentials (kubelet's kubeconfig). Metadata
//! (`ConfigHistory`) stays readable by readers.

use std::fmt;

/// A client role, ordered: `Reader < Operator < Admin`. A higher role may
/// call everything a lower one may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read-only calls.
    Reader,
    /// Reboot, shutdown, service control, file reads, upgrades, and reads.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, least powerful first.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Operator, Role::Admin];

    /// The certificate Organization that grants this role (`os:admin` ...).
    pub fn organization(self) -> &'static str {
        match self {
            Role::Reader => "os:reader",
            Role::Operator => "os:operator",
            Role::Admin => "os:admin",
        }
    }

    /// The role an Organization value grants, if any.
    pub fn from_organization(organization: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.organization() == organization)
    }

    /// The highest role granted by any of `organizations` (a certificate may
    /// carry several O= values); `None` if none is a Keelson role.
    pub fn highest<'a>(organizations: impl IntoIterator<Item = &'a str>) -> Option<Role> {
        organizations
            .into_iter()
            .filter_map(Role::from_organization)
            .max()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.organization())
    }
}

/// One row of the role table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodRule {
    /// The method's name in the service (`ApplyConfiguration`).
    pub method: &'static str,
    /// The least role allowed to call it.
    pub role: Role,
    /// Whether it may be called in maintenance mode (no config yet, no
    /// client certificate required).
    pub maintenance: bool,
}

const fn rule(method: &'static str, role: Role, maintenance: bool) -> MethodRule {
    MethodRule {
        method,
        role,
        maintenance,
    }
}

/// The role table: every method of `keelson.machine.v1.Machine`.
pub const TABLE: &[MethodRule] = &[
    rule("Version", Role::Reader, true),
    rule("Health", Role::Reader, false),
    rule("Events", Role::Reader, false),
    rule("ApplyConfiguration", Role::Admin, true),
    rule("ConfirmConfiguration", Role::Admin, false),
    rule("GetConfiguration", Role::Admin, false),
    rule("ConfigHistory", Role::Reader, false),
    rule("RollbackConfiguration", Role::Admin, false),
    rule("ServiceList", Role::Reader, false),
    rule("ServiceStart", Role::Operator, false),
    rule("ServiceStop", Role::Operator, false),
    rule("ServiceRestart", Role::Operator, false),
    rule("ServiceKill", Role::Operator, false),
    rule("Logs", Role::Reader, false),
    rule("Dmesg", Role::Reader, false),
    rule("Read", Role::Operator, false),
    rule("Stats", Role::Reader, false),
    rule("Mounts", Role::Reader, false),
    rule("Reboot", Role::Operator, false),
    rule("Shutdown", Role::Operator, false),
    rule("LastShutdown", Role::Reader, false),
    rule("Upgrade", Role::Operator, false),
    rule("UpgradeFromUrl", Role::Operator, false),
    rule("Rollback", Role::Operator, false),
    rule("UpgradeStatus", Role::Reader, false),
];

/// The row for a full gRPC method path (`/keelson.machine.v1.Machine/Version`),
/// or `None` for a path outside the machine API or an unknown method.
pub fn rule_for(path: &str) -> Option<&'static MethodRule> {
    let method = method_name(path)?;
    TABLE.iter().find(|r| r.method == method)
}

/// The least role needed to call the method at `path`; `None` if the path is
/// not a method of the machine API (refuse it).
pub fn required_role(path: &str) -> Option<Role> {
    rule_for(path).map(|r| r.role)
}

/// Whether the method at `path` is open in maintenance mode.
pub fn allowed_in_maintenance(path: &str) -> bool {
    rule_for(path).is_some_and(|r| r.maintenance)
}

/// The method name of a full path of this service
/// (`/keelson.machine.v1.Machine/Version` → `Version`).
pub fn method_name(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (service == crate::SERVICE_NAME && !method.is_empty() && !method.contains('/'))
        .then_some(method)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use prost::Message as _;

    fn methods_in_descriptor() -> Vec<String> {
        let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let mut out = Vec::new();
        for file in &fds.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                assert_eq!(full, crate::SERVICE_NAME, "unexpected service {full}");
                for m in &service.method {
                    out.push(format!("/{full}/{}", m.name()));
                }
            }
        }
        out
    }

    #[test]
    fn every_method_of_the_proto_has_exactly_one_role_and_no_row_is_stale() {
        let methods = methods_in_descriptor();
        assert!(methods.len() >= 19, "descriptor lists {methods:?}");
        for path in &methods {
            assert!(
                required_role(path).is_some(),
                "{path} has no entry in api::roles::TABLE: add one"
            );
        }
        for row in TABLE {
            let path = format!("/{}/{}", crate::SERVICE_NAME, row.method);
            assert!(
                methods.contains(&path),
                "TABLE row {} is not in the proto",
                row.method
            );
            assert_eq!(TABLE.iter().filter(|r| r.method == row.method).count(), 1);
        }
    }

    #[test]
    fn maintenance_opens_only_version_and_apply_configuration() {
        let open: Vec<_> = TABLE
            .iter()
            .filter(|r| r.maintenance)
            .map(|r| r.method)
            .collect();
        assert_eq!(open, ["Version", "ApplyConfiguration"]);
        assert!(allowed_in_maintenance(
            "/keelson.machine.v1.Machine/Version"
        ));
        assert!(!allowed_in_maintenance(
            "/keelson.machine.v1.Machine/ServiceList"
        ));
    }

    #[test]
    fn lookups_by_path_and_organization() {
        assert_eq!(
            required_role("/keelson.machine.v1.Machine/Version"),
            Some(Role::Reader)
        );
        assert_eq!(
            required_role("/keelson.machine.v1.Machine/Reboot"),
            Some(Role::Operator)
        );
        assert_eq!(
            required_role("/keelson.machine.v1.Machine/ApplyConfiguration"),
            Some(Role::Admin)
        );
        for bad in [
            "/keelson.machine.v1.Machine/Nope",
            "/other.Service/Version",
            "keelson.machine.v1.Machine/Version",
            "/keelson.machine.v1.Machine/",
            "/keelson.machine.v1.Machine/Version/x",
            "",
        ] {
            assert_eq!(required_role(bad), None, "{bad:?}");
        }
        assert_eq!(
            Role::highest(["keelson", "os:reader", "os:operator"]),
            Some(Role::Operator)
        );
        assert_eq!(Role::highest(["os:admin", "os:reader"]), Some(Role::Admin));
        assert_eq!(Role::highest(["os:root", "admin"]), None);
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Reader);
    }
}
