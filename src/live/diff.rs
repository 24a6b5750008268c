//! Which keys differ between two configuration trees (names only: a tree may hold secrets
//! from the environment, and no value is ever shown).

/// The dotted paths of the keys that differ between `old` and `new`, outside the top-level
/// keys `live` names; sorted. A table is compared key by key, anything else (a value, an
/// array) whole.
pub fn changed_keys(old: &toml::Table, new: &toml::Table, live: &[&str]) -> Vec<String> {
    let mut changed = Vec::new();
    compare_tables(old, new, "", live, &mut changed);
    changed.sort();
    changed
}

fn compare_tables(
    old: &toml::Table,
    new: &toml::Table,
    prefix: &str,
    skip: &[&str],
    changed: &mut Vec<String>,
) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (old.get(key), new.get(key)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                compare_tables(a, b, &path, &[], changed)
            }
            (a, b) if a == b => {}
            _ => changed.push(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> toml::Table {
        text.parse().expect("TOML")
    }

    #[test]
    fn names_every_changed_fixed_key_and_none_of_the_live_ones() {
        let old = tree(
            "[server]\nbind = \"a\"\nworkers = 2\n[session]\ncookie_name = \"x\"\n\
             [[routes]]\nprefix = \"/a\"\n[redis]\nurl = \"r1\"\n",
        );
        let new = tree(
            "[server]\nbind = \"b\"\nworkers = 2\n[session]\ncookie_name = \"y\"\n\
             [[routes]]\nprefix = \"/b\"\n[redis]\nurls = [\"r1\"]\n[log]\nformat = \"json\"\n",
        );
        assert_eq!(
            changed_keys(&old, &new, &["routes"]),
            [
                "log",
                "redis.url",
                "redis.urls",
                "server.bind",
                "session.cookie_name"
            ]
        );
        assert!(changed_keys(&old, &old.clone(), &[]).is_empty());
        let only_routes = tree("[server]\nbind = \"a\"\nworkers = 2\n[session]\ncookie_name = \"x\"\n[redis]\nurl = \"r1\"\n");
        assert!(changed_keys(&old, &only_routes, &["routes"]).is_empty());
    }
}
