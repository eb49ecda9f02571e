//! What a reload changes, and the changes it refuses: a file cut short (an editor still writing
//! it when SIGHUP came) must not silently open a gateway that had keys.

use laneway_config::{Auth, Config};

/// Why a new config would weaken access, or `None` when it may be applied.
pub fn weakens_access(old: &Config, new: &Config) -> Option<String> {
    if new.server.auth == Auth::None {
        return None;
    }
    let mut lost = Vec::new();
    if !old.keys.is_empty() && new.keys.is_empty() {
        let names: Vec<&str> = old.keys.iter().map(|k| k.name.as_str()).collect();
        lost.push(format!(
            "every client key ({}): anyone could then use the lanes without a key",
            names.join(", ")
        ));
    }
    if old.server.admin_key.is_some() && new.server.admin_key.is_none() {
        lost.push("server.admin_key: the admin API would turn off".to_owned());
    }
    if old.server.metrics_key.is_some() && new.server.metrics_key.is_none() {
        lost.push("server.metrics_key: /metrics would be open".to_owned());
    }
    (!lost.is_empty()).then(|| {
        format!(
            "the new file would remove {}. If the file is complete and this is meant, say so with \
             server.auth = \"none\"",
            lost.join("; and ")
        )
    })
}

/// Why a new config cannot be applied without a restart, or `None`: the store's connection
/// and where rates are counted (`[limits]`), and the Batch API's storage (`[storage]`), are
/// fixed at start.
pub fn needs_restart(old: &Config, new: &Config) -> Option<String> {
    let section = if old.storage != new.storage {
        "[storage]"
    } else if old.limits != new.limits {
        "[limits]"
    } else {
        return None;
    };
    Some(format!(
        "the {section} section changed; it takes effect on restart, so the reload is refused \
         (undo the change to reload the rest)"
    ))
}

/// One line per section that changed: lanes, routes and keys added, removed or changed.
pub fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let diff = |what: &str, old: Vec<(String, String)>, new: Vec<(String, String)>| {
        let find = |list: &[(String, String)], name: &str| {
            list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        };
        let added: Vec<&str> = new
            .iter()
            .filter(|(n, _)| find(&old, n).is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        let removed: Vec<&str> = old
            .iter()
            .filter(|(n, _)| find(&new, n).is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        let changed: Vec<&str> = new
            .iter()
            .filter(|(n, v)| find(&old, n).is_some_and(|o| &o != v))
            .map(|(n, _)| n.as_str())
            .collect();
        let mut parts = Vec::new();
        for (verb, names) in [("added", added), ("removed", removed), ("changed", changed)] {
            if !names.is_empty() {
                parts.push(format!("{verb} {}", names.join(", ")));
            }
        }
        (!parts.is_empty()).then(|| format!("{what}: {}", parts.join("; ")))
    };
    // Secrets are compared through their Debug form, which never shows them.
    let lanes = |c: &Config| {
        c.lanes
            .iter()
            .map(|l| {
                // A mock lane's address is filled in when it starts; it is not a change.
                let mut l = l.clone();
                if l.kind == laneway_config::LaneKind::Mock {
                    l.url.clear();
                }
                (l.name.clone(), format!("{l:?}"))
            })
            .collect()
    };
    let routes = |c: &Config| {
        c.routes
            .iter()
            .map(|r| {
                let lanes: Vec<&str> = r.lanes.iter().map(|&i| c.lanes[i].name.as_str()).collect();
                (r.model.clone(), format!("{lanes:?} {:?}", r.fallbacks))
            })
            .collect()
    };
    let keys = |c: &Config| {
        c.keys
            .iter()
            .map(|k| {
                let secret = fingerprint(k.key.expose());
                (
                    k.name.clone(),
                    format!(
                        "{secret} {:?}",
                        (&k.models, &k.limits, k.priority, k.weight, k.on_limit)
                    ),
                )
            })
            .collect()
    };
    out.extend(diff("lanes", lanes(old), lanes(new)));
    out.extend(diff("routes", routes(old), routes(new)));
    out.extend(diff("keys", keys(old), keys(new)));
    out
}

/// A stand-in for a secret that tells whether it changed without revealing it.
fn fingerprint(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    const KEYED: &str = "[server]\nadmin_key = \"adm\"\n[[lane]]\nname = \"a\"\nkind = \"mock\"\n\
                         [[route]]\nmodel = \"m-*\"\nlanes = [\"a\"]\n\
                         [[key]]\nname = \"team\"\nkey = \"sk-team\"\n";

    #[test]
    fn a_cut_file_may_not_open_the_gateway() {
        let old = parse(KEYED);
        let cut = &KEYED[..KEYED.find("[[key]]").unwrap()];
        let msg = weakens_access(&old, &parse(cut)).unwrap();
        assert!(msg.contains("team") && msg.contains("auth"), "{msg}");
        let msg = weakens_access(&old, &parse("")).unwrap();
        assert!(
            msg.contains("admin_key") && msg.contains("every client key"),
            "{msg}"
        );
        let open = "[server]\nauth = \"none\"\n";
        assert_eq!(weakens_access(&old, &parse(open)), None);
        assert_eq!(weakens_access(&old, &old), None);
    }

    #[test]
    fn changes_are_named() {
        let old = parse(KEYED);
        let new = parse(&KEYED.replace("sk-team", "sk-rotated").replace(
            "[[key]]",
            "[[lane]]\nname = \"b\"\nkind = \"mock\"\n[[key]]",
        ));
        let lines = describe_changes(&old, &new);
        assert_eq!(lines, ["lanes: added b", "keys: changed team"], "{lines:?}");
        assert!(!lines.concat().contains("sk-"));
        assert!(describe_changes(&old, &old).is_empty());
    }
}
