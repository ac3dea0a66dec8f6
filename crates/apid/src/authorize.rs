//! The access decision for one call: a pure function of the method path,
//! the caller and the mode, driven by the role table in `api::roles`.

use api::roles::{self, Role};
use tonic::{Code, Status};

use crate::identity::Caller;

/// The message of every call refused in maintenance mode.
pub const MAINTENANCE_REFUSAL: &str =
    "node is in maintenance mode: only Version and ApplyConfiguration are allowed until a config is applied";

/// Whether `caller` may call the method at `path`. `Err` carries the gRPC
/// status to answer with: `Unimplemented` for a path outside the machine
/// API, `PermissionDenied` naming the needed and the held role, or the
/// maintenance refusal.
pub fn authorize(path: &str, caller: &Caller) -> Result<(), Status> {
    let Some(rule) = roles::rule_for(path) else {
        return Err(Status::new(
            Code::Unimplemented,
            format!(
                "unknown method {path}: apid serves only {}",
                api::SERVICE_NAME
            ),
        ));
    };
    match caller {
        Caller::Maintenance if rule.maintenance => Ok(()),
        Caller::Maintenance => Err(Status::permission_denied(MAINTENANCE_REFUSAL)),
        Caller::Client { role: Some(held), .. } if *held >= rule.role => Ok(()),
        Caller::Client {
            cn,
            role: Some(held),
            ..
        } => Err(Status::permission_denied(format!(
            "{} needs {}; client {cn:?} has {held}",
            rule.method, rule.role
        ))),
        Caller::Client {
            cn, organizations, ..
        } => Err(Status::permission_denied(format!(
            "{} needs {}; client {cn:?} has no Keelson role (certificate Organization: {}; expected one of {})",
            rule.method,
            rule.role,
            if organizations.is_empty() {
                "none".to_string()
            } else {
                organizations.join(", ")
            },
            Role::ALL.map(Role::organization).join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn client(cn: &str, role: Option<Role>) -> Caller {
        Caller::Client {
            cn: cn.into(),
            role,
            organizations: role
                .map(|r| r.organization().to_string())
                .into_iter()
                .collect(),
        }
    }

    fn path(m: &str) -> String {
        format!("/keelson.machine.v1.Machine/{m}")
    }

    #[test]
    fn roles_are_ordered_and_refusals_name_both_roles() {
        let reader = client("reader", Some(Role::Reader));
        let operator = client("ops", Some(Role::Operator));
        let admin = client("admin", Some(Role::Admin));
        assert!(authorize(&path("Version"), &reader).is_ok());
        assert!(authorize(&path("Reboot"), &operator).is_ok());
        assert!(authorize(&path("ApplyConfiguration"), &admin).is_ok());
        let e = authorize(&path("ApplyConfiguration"), &reader).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(
            e.message(),
            r#"ApplyConfiguration needs os:admin; client "reader" has os:reader"#
        );
        let e = authorize(&path("Reboot"), &reader).unwrap_err();
        assert_eq!(
            e.message(),
            r#"Reboot needs os:operator; client "reader" has os:reader"#
        );
        let e = authorize(&path("Version"), &client("x", None)).unwrap_err();
        assert!(
            e.message().contains("has no Keelson role"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn maintenance_allows_only_version_and_apply() {
        assert!(authorize(&path("Version"), &Caller::Maintenance).is_ok());
        assert!(authorize(&path("ApplyConfiguration"), &Caller::Maintenance).is_ok());
        let e = authorize(&path("ServiceList"), &Caller::Maintenance).unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::PermissionDenied, MAINTENANCE_REFUSAL)
        );
    }

    #[test]
    fn unknown_paths_are_unimplemented_even_for_admin() {
        let e = authorize(
            "/grpc.health.v1.Health/Check",
            &client("a", Some(Role::Admin)),
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
    }
}
