//! Turns a seccomp profile in the Docker/containers JSON format (with
//! `includes`/`excludes` conditions on capabilities and architectures) into
//! the plain OCI form for one architecture and one capability set. Pure.

use serde_json::{json, Map, Value};

/// Why a profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("seccomp profile: {0}")]
    Shape(&'static str),
}

/// Maps Rust's architecture name to the Go name profiles use.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Reduces `profile` to the OCI `linux.seccomp` object for `arch` (Go name)
/// and the capabilities `caps` (e.g. "CAP_CHOWN").
pub fn to_oci(profile: &str, arch: &str, caps: &[&str]) -> Result<Value, SeccompError> {
    let p: Value = serde_json::from_str(profile)?;
    let default_action = p["defaultAction"]
        .as_str()
        .ok_or(SeccompError::Shape("defaultAction missing"))?;
    let mut out = Map::new();
    out.insert("defaultAction".into(), json!(default_action));
    if let Some(e) = p.get("defaultErrnoRet") {
        out.insert("defaultErrnoRet".into(), e.clone());
    }
    out.insert("architectures".into(), json!(architectures(&p, arch)));
    let rules = p["syscalls"]
        .as_array()
        .ok_or(SeccompError::Shape("syscalls missing"))?;
    let syscalls: Vec<Value> = rules
        .iter()
        .filter(|r| applies(r, arch, caps))
        .map(oci_rule)
        .collect();
    out.insert("syscalls".into(), Value::Array(syscalls));
    Ok(Value::Object(out))
}

fn architectures(p: &Value, arch: &str) -> Vec<String> {
    let scmp = format!("SCMP_ARCH_{}", scmp_arch(arch));
    let entry = p["archMap"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["architecture"] == scmp.as_str());
    let mut archs = vec![scmp.clone()];
    if let Some(subs) = entry.and_then(|e| e["subArchitectures"].as_array()) {
        archs.extend(subs.iter().filter_map(|s| s.as_str().map(String::from)));
    }
    archs
}

fn scmp_arch(go_arch: &str) -> &str {
    match go_arch {
        "amd64" => "X86_64",
        "arm64" => "AARCH64",
        "386" => "X86",
        _ => "NATIVE",
    }
}

fn applies(rule: &Value, arch: &str, caps: &[&str]) -> bool {
    let list = |cond: &str, key: &str| -> Vec<String> {
        rule[cond][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    let inc_arch = list("includes", "arches");
    let inc_caps = list("includes", "caps");
    let exc_arch = list("excludes", "arches");
    let exc_caps = list("excludes", "caps");
    (inc_arch.is_empty() || inc_arch.iter().any(|a| a == arch))
        && inc_caps.iter().all(|c| caps.contains(&c.as_str()))
        && !exc_arch.iter().any(|a| a == arch)
        && !exc_caps.iter().any(|c| caps.contains(&c.as_str()))
}

/// CLONE_NEWUSER, as clone(2) and unshare(2) take it in their first argument.
const CLONE_NEWUSER: u64 = 0x1000_0000;

/// The syscalls that can make a user namespace.
const USERNS_SYSCALLS: [&str; 3] = ["clone", "clone3", "unshare"];

/// The kernel keyring syscalls: keys are not namespaced (a key a workspace
/// makes is visible by serial number to the node's kernel keyring code of
/// every namespace); Docker's profile refuses them too.
const KEYRING_SYSCALLS: [&str; 3] = ["add_key", "keyctl", "request_key"];

/// Takes the unconditional allowance of `names` out of `oci`'s rules.
fn disallow(oci: &mut Value, names: &[&str]) {
    let Some(rules) = oci["syscalls"].as_array_mut() else {
        return;
    };
    for r in rules.iter_mut() {
        let unconditional = r["args"].as_array().is_none_or(|a| a.is_empty());
        if r["action"] == "SCMP_ACT_ALLOW" && unconditional {
            if let Some(list) = r["names"].as_array_mut() {
                list.retain(|n| !names.contains(&n.as_str().unwrap_or("")));
            }
        }
    }
    rules.retain(|r| r["names"].as_array().is_none_or(|n| !n.is_empty()));
}

fn push_rule(oci: &mut Value, rule: Value) {
    if let Some(rules) = oci["syscalls"].as_array_mut() {
        rules.push(rule);
    }
}

/// `oci` with the keyring syscalls refused (EPERM), for every workspace.
pub fn refuse_keyrings(oci: &Value) -> Value {
    let mut out = oci.clone();
    disallow(&mut out, &KEYRING_SYSCALLS);
    let rule =
        json!({"names": KEYRING_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM});
    push_rule(&mut out, rule);
    out
}

/// `oci` with nested user namespaces refused: clone and unshare fail with
/// EPERM when asked for CLONE_NEWUSER (and work otherwise), and clone3,
/// whose flags seccomp cannot read, fails with ENOSYS so that libc falls
/// back to clone (as Docker's profile does without CAP_SYS_ADMIN).
pub fn refuse_nested_userns(oci: &Value) -> Value {
    let mut out = oci.clone();
    disallow(&mut out, &USERNS_SYSCALLS);
    let without_newuser = json!([{
        "index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"
    }]);
    let allowed =
        json!({"names": ["clone", "unshare"], "action": "SCMP_ACT_ALLOW", "args": without_newuser});
    push_rule(&mut out, allowed);
    // Explicitly EPERM: the profile's default for what no rule allows is
    // ENOSYS, which would tell a program the kernel lacks unshare(2).
    let with_newuser = json!([{
        "index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"
    }]);
    let refused = json!({"names": ["clone", "unshare"], "action": "SCMP_ACT_ERRNO",
        "errnoRet": libc::EPERM, "args": with_newuser});
    push_rule(&mut out, refused);
    let clone3 = json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS});
    push_rule(&mut out, clone3);
    out
}

/// `oci` as the runtime spec's type: what does not fit it is refused here,
/// at start, not by runc at a workspace's create.
pub fn typed(oci: &Value) -> Result<oci_spec::runtime::LinuxSeccomp, SeccompError> {
    Ok(serde_json::from_value(oci.clone())?)
}

fn oci_rule(rule: &Value) -> Value {
    let mut r = Map::new();
    for key in ["names", "action", "args", "errnoRet"] {
        match rule.get(key) {
            Some(Value::Null) | None => {}
            Some(v) => {
                r.insert(key.into(), v.clone());
            }
        }
    }
    Value::Object(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"{
      "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
      "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
      "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["sync_file_range2"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["ppc64le"]}},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}}
      ]}"#;

    fn names(v: &Value) -> Vec<(String, String)> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let action = r["action"].as_str().unwrap().to_string();
                r["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |n| (n.as_str().unwrap().to_string(), action.clone()))
            })
            .collect()
    }

    #[test]
    fn keeps_rules_for_the_arch_and_caps_granted() {
        let v = to_oci(PROFILE, "amd64", &["CAP_SYS_CHROOT"]).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            v["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
        let n = names(&v);
        assert!(n.contains(&("arch_prctl".into(), "SCMP_ACT_ALLOW".into())));
        assert!(n.contains(&("chroot".into(), "SCMP_ACT_ALLOW".into())));
        assert!(n.contains(&("mount".into(), "SCMP_ACT_ERRNO".into())));
        assert!(!n.contains(&("mount".into(), "SCMP_ACT_ALLOW".into())));
        assert!(!n.iter().any(|(s, _)| s == "sync_file_range2"));
        assert!(v["syscalls"][0].get("includes").is_none());
    }

    #[test]
    fn a_granted_cap_flips_the_conditional_rules() {
        let v = to_oci(PROFILE, "arm64", &["CAP_SYS_ADMIN"]).unwrap();
        let n = names(&v);
        assert!(n.contains(&("mount".into(), "SCMP_ACT_ALLOW".into())));
        assert!(!n.iter().any(|(s, _)| s == "chroot" || s == "arch_prctl"));
    }

    #[test]
    fn nested_user_namespaces_are_refused_by_flag() {
        let profile = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read", "clone", "clone3", "unshare"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["unshare"], "action": "SCMP_ACT_ALLOW"}]}"#;
        let v = refuse_nested_userns(&to_oci(profile, "amd64", &[]).unwrap());
        let rules = v["syscalls"].as_array().unwrap();
        assert_eq!(rules[0]["names"], json!(["read"]));
        assert_eq!(rules.len(), 4, "the emptied unshare rule is gone");
        assert_eq!(rules[1]["names"], json!(["clone", "unshare"]));
        assert_eq!(rules[1]["args"][0]["value"], 0x1000_0000);
        assert_eq!(rules[1]["args"][0]["valueTwo"], 0);
        assert_eq!(rules[1]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(rules[2]["names"], json!(["clone", "unshare"]));
        assert_eq!(
            (&rules[2]["action"], &rules[2]["errnoRet"]),
            (&json!("SCMP_ACT_ERRNO"), &json!(1)),
            "EPERM with the flag"
        );
        assert_eq!(rules[2]["args"][0]["valueTwo"], 0x1000_0000);
        assert_eq!(rules[3]["errnoRet"], 38);
    }

    #[test]
    fn the_filters_fit_the_runtime_spec_types_unchanged() {
        let oci = to_oci(PROFILE, "amd64", &[]).unwrap();
        for v in [
            oci.clone(),
            refuse_keyrings(&oci),
            refuse_nested_userns(&refuse_keyrings(&oci)),
        ] {
            let back = serde_json::to_value(typed(&v).unwrap()).unwrap();
            assert_eq!(back, v);
        }
        assert!(typed(&json!({"defaultAction": "SCMP_ACT_NONSENSE"})).is_err());
    }

    #[test]
    fn keyrings_are_refused() {
        let profile = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read", "keyctl", "add_key"], "action": "SCMP_ACT_ALLOW"}]}"#;
        let v = refuse_keyrings(&to_oci(profile, "amd64", &[]).unwrap());
        let n = names(&v);
        assert!(n.contains(&("read".into(), "SCMP_ACT_ALLOW".into())));
        assert!(n.contains(&("keyctl".into(), "SCMP_ACT_ERRNO".into())));
        assert!(!n.contains(&("keyctl".into(), "SCMP_ACT_ALLOW".into())));
        assert!(n.contains(&("request_key".into(), "SCMP_ACT_ERRNO".into())));
    }

    #[test]
    fn rejects_malformed_profiles() {
        assert!(to_oci("{", "amd64", &[]).is_err());
        assert!(to_oci("{}", "amd64", &[]).is_err());
        assert!(to_oci(r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#, "amd64", &[]).is_err());
    }
}
