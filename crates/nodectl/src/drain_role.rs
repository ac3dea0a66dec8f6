//! The Kubernetes RBAC a node's drain identity needs (`nodectl gen
//! drain-role`): a ServiceAccount, its token Secret, and a ClusterRole
//! allowing exactly what `keelson-drain` does: get and patch nodes (cordon,
//! uncordon), list pods (those on its node), create evictions. Kubelet's
//! own identity may not evict pods, so a node carries this one in
//! `kubernetes.token`.

/// What to name the objects and which nodes the role may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRole {
    /// Name of the ServiceAccount, ClusterRole, binding and token Secret
    /// (the Secret gets `-token`).
    pub name: String,
    /// Namespace of the ServiceAccount and its Secret.
    pub namespace: String,
    /// Nodes the role may get and patch; empty means every node.
    pub nodes: Vec<String>,
}

/// The multi-document YAML for `role`.
pub fn render(role: &DrainRole) -> String {
    let DrainRole {
        name, namespace, ..
    } = role;
    let resource_names = if role.nodes.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = role.nodes.iter().map(|n| format!("{n:?}")).collect();
        format!("\n  resourceNames: [{}]", names.join(", "))
    };
    format!(
        "# The identity Keelson nodes drain themselves with on shutdown.
# Apply it, then put the token in the machine config's kubernetes.token:
#   kubectl -n {namespace} get secret {name}-token -o jsonpath='{{.data.token}}' | base64 -d
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {name}
  namespace: {namespace}
---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-token
  namespace: {namespace}
  annotations:
    kubernetes.io/service-account.name: {name}
type: kubernetes.io/service-account-token
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {name}
rules:
# cordon and uncordon: read the node, set spec.unschedulable
- apiGroups: [\"\"]
  resources: [\"nodes\"]
  verbs: [\"get\", \"patch\"]{resource_names}
# find the pods on the node (listed with a spec.nodeName field selector)
- apiGroups: [\"\"]
  resources: [\"pods\"]
  verbs: [\"list\"]
# evict them through the Eviction API (PodDisruptionBudgets apply)
- apiGroups: [\"\"]
  resources: [\"pods/eviction\"]
  verbs: [\"create\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {name}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {name}
subjects:
- kind: ServiceAccount
  name: {name}
  namespace: {namespace}
"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_role_grants_only_what_the_drain_does() {
        let y = render(&DrainRole {
            name: "keelson-drain".into(),
            namespace: "kube-system".into(),
            nodes: vec!["n1".into(), "n2".into()],
        });
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&y).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "Secret",
                "ClusterRole",
                "ClusterRoleBinding"
            ]
        );
        let rules = docs[2]["rules"].as_array().unwrap();
        let grants: Vec<(String, String)> = rules
            .iter()
            .flat_map(|r| {
                let res = r["resources"][0].as_str().unwrap().to_string();
                r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |v| (res.clone(), v.as_str().unwrap().to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            grants,
            [
                ("nodes".to_string(), "get".to_string()),
                ("nodes".into(), "patch".into()),
                ("pods".into(), "list".into()),
                ("pods/eviction".into(), "create".into()),
            ]
        );
        assert_eq!(rules[0]["resourceNames"][1], "n2");
        assert_eq!(docs[3]["subjects"][0]["namespace"], "kube-system");
    }
}
