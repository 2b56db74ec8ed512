//! Config from the environment, for twelve-factor deployments: any field of
//! `tributary.toml` can be set by a variable named `TRIBUTARY_` then its
//! path, segments joined by `__`:
//!
//! - `TRIBUTARY_DATABASE__URL=postgres://…` sets `[database] url`;
//! - `TRIBUTARY_WRITES__COMPLETER_GRACE_SECS=60` creates `[writes]` if needed;
//! - `TRIBUTARY_SOURCES__STRIPE__RATE_LIMIT_PER_SEC=25` sets a field of the
//!   `[[sources]]` entry named `stripe` (`SOURCES__0__…`: the first entry,
//!   created when the file has none, so a whole config can come from the
//!   environment).
//!
//! A value is read as TOML when it is one (`25`, `true`, `["a", "b"]`) and
//! as a string otherwise; quote it (`'"0123"'`) to force a string. Variables
//! without `__` (`TRIBUTARY_APP_TOKEN`, …) are not config.

use super::ConfigError;

const PREFIX: &str = "TRIBUTARY_";

/// Apply every override in `vars` to `table`; returns the variables used,
/// in the order applied.
pub fn apply(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> Result<Vec<String>, ConfigError> {
    let mut applied: Vec<(String, String)> = vars.filter(|(name, _)| name.starts_with(PREFIX) && name.contains("__")).collect();
    // in path order, indices as numbers: entry 2 is created before entry 10
    applied.sort_by_cached_key(|(name, _)| {
        name.split("__").map(|segment| (segment.parse::<usize>().unwrap_or(usize::MAX), segment.to_string())).collect::<Vec<_>>()
    });
    for (name, raw) in &applied {
        let path: Vec<String> = name[PREFIX.len()..].split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid(format!("{name}: empty segment in the field's path")));
        }
        set(table, &path, value(raw)).map_err(|reason| ConfigError::Invalid(format!("{name}: {reason}")))?;
    }
    Ok(applied.into_iter().map(|(name, _)| name).collect())
}

/// A variable's text as a TOML value, or as a string.
fn value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut parsed) => parsed.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("no field named")?;
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    // a missing field named with an index is a list (`SOURCES__0__NAME`)
    let listed = rest.len() > 1 && rest[0].parse::<usize>().is_ok();
    let slot = table
        .entry(first.clone())
        .or_insert_with(|| if listed { toml::Value::Array(Vec::new()) } else { toml::Value::Table(toml::Table::new()) });
    match slot {
        toml::Value::Table(inner) => set(inner, rest, value),
        toml::Value::Array(entries) => {
            let (selector, rest) = rest.split_first().ok_or("no field named")?;
            if rest.is_empty() {
                return Err(format!("'{first}' is a list: name an entry, then its field"));
            }
            let count = entries.len();
            let entry = match selector.parse::<usize>() {
                // the next entry may be created from the environment alone
                Ok(index) if index == count => {
                    entries.push(toml::Value::Table(toml::Table::new()));
                    &mut entries[index]
                }
                Ok(index) => {
                    entries.get_mut(index).ok_or_else(|| format!("'{first}' has no entry {index} (the next new one is {count})"))?
                }
                Err(_) => entries
                    .iter_mut()
                    .find(|e| e.get("name").and_then(toml::Value::as_str).is_some_and(|n| n.to_lowercase() == *selector))
                    .ok_or_else(|| format!("'{first}' has no entry named '{selector}'"))?,
            };
            match entry {
                toml::Value::Table(inner) => set(inner, rest, value),
                _ => Err(format!("'{first}' entries are not tables")),
            }
        }
        _ => Err(format!("'{first}' is a value, not a table")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn variables_set_fields_by_path_with_typed_values() {
        let mut table: toml::Table = toml::from_str("[[sources]]\nname = \"stripe\"\n[[sources]]\nname = \"other\"\n").unwrap();
        let applied = apply(
            &mut table,
            vars(&[
                ("TRIBUTARY_DATABASE__URL", "postgres://u@h/db"),
                ("TRIBUTARY_WRITES__COMPLETER_GRACE_SECS", "60"),
                ("TRIBUTARY_SOURCES__STRIPE__RATE_LIMIT_PER_SEC", "25"),
                ("TRIBUTARY_SOURCES__1__ACCOUNTS", "[\"acct_1\"]"),
                ("TRIBUTARY_DATABASE__SCHEMA", "\"0123\""),
                ("TRIBUTARY_APP_TOKEN", "not config"),
                ("OTHER__THING", "not ours"),
            ]),
        )
        .unwrap();
        assert_eq!(applied.len(), 5);
        assert_eq!(table["database"]["url"].as_str(), Some("postgres://u@h/db"));
        assert_eq!(table["database"]["schema"].as_str(), Some("0123"));
        assert_eq!(table["writes"]["completer_grace_secs"].as_integer(), Some(60));
        assert_eq!(table["sources"][0]["rate_limit_per_sec"].as_integer(), Some(25));
        assert_eq!(table["sources"][1]["accounts"][0].as_str(), Some("acct_1"));
        assert!(!table.contains_key("app_token"));
    }

    #[test]
    fn a_variable_that_names_nothing_is_an_error_that_names_it() {
        for (name, expected) in [
            ("TRIBUTARY_SOURCES__NOPE__CONCURRENCY", "no entry named 'nope'"),
            ("TRIBUTARY_SOURCES__7__CONCURRENCY", "no entry 7 (the next new one is 1)"),
            ("TRIBUTARY_SOURCES__STRIPE", "name an entry, then its field"),
            ("TRIBUTARY_DATABASE__URL__X", "a value, not a table"),
            ("TRIBUTARY_API____LISTEN", "empty segment"),
        ] {
            let mut table: toml::Table = toml::from_str("[database]\nurl = \"sqlite://x\"\n[[sources]]\nname = \"stripe\"\n").unwrap();
            let err = apply(&mut table, vars(&[(name, "1")])).unwrap_err().to_string();
            assert!(err.starts_with(name) && err.contains(expected), "{name}: {err}");
        }
    }
}
