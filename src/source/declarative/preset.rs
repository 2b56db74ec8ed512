//! Presets: the declarative config of a real API, as the reference notes
//! describe it, merged under a source's own table (`preset = "wheniwork"`),
//! so a user writes the secrets' env var names and little else. Every
//! field a preset sets can be set again; tables merge field by field, an
//! empty table (`sideloads = {}`) clears the preset's, and a table of
//! another `kind` (`auth = { kind = "header", … }`) replaces it.

/// Every preset: its name and its TOML.
const PRESETS: &[(&str, &str)] = &[("wheniwork", include_str!("presets/wheniwork.toml")), ("tiki", include_str!("presets/tiki.toml"))];

/// The names of the presets.
pub fn names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|(name, _)| *name)
}

/// Apply the `preset` a source table names, if any: the preset's values
/// under the table's own. The `preset` field is consumed.
pub fn apply(source: &mut toml::Table) -> Result<(), String> {
    let Some(preset) = source.remove("preset") else { return Ok(()) };
    let name = preset.as_str().ok_or("preset: must be a string")?;
    let Some((_, text)) = PRESETS.iter().find(|(known, _)| *known == name) else {
        let known: Vec<&str> = names().collect();
        return Err(format!("preset: unknown preset '{name}' (known: {})", known.join(", ")));
    };
    let defaults: toml::Table = text.parse().map_err(|e| format!("preset '{name}' does not parse: {e}"))?;
    if let (Some(kind), Some(wanted)) = (source.get("kind").and_then(|k| k.as_str()), defaults.get("kind").and_then(|k| k.as_str()))
        && kind != wanted
    {
        return Err(format!("preset: '{name}' is for kind = \"{wanted}\", not \"{kind}\""));
    }
    let own = std::mem::take(source);
    *source = merge(defaults, own);
    Ok(())
}

/// `over` laid over `under`: tables merge field by field, anything else
/// from `over` (an empty table too, or one of another `kind`) replaces
/// what `under` has.
pub fn merge(mut under: toml::Table, over: toml::Table) -> toml::Table {
    for (key, value) in over {
        let merged = match (under.remove(&key), value) {
            (Some(toml::Value::Table(below)), toml::Value::Table(above)) if !above.is_empty() && same_kind(&below, &above) => {
                toml::Value::Table(merge(below, above))
            }
            (_, value) => value,
        };
        under.insert(key, merged);
    }
    under
}

/// A table naming another `kind` (an `auth` of another kind) replaces
/// the preset's instead of merging with it.
fn same_kind(below: &toml::Table, above: &toml::Table) -> bool {
    match (below.get("kind"), above.get("kind")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_lies_under_the_sources_own_fields() {
        let mut source: toml::Table = r#"
            name = "wiw"
            preset = "wheniwork"
            days_ahead = 3
            sideloads = {}
            query = { limit = "5" }
            [auth]
            url = "http://127.0.0.1:9/login"
        "#
        .parse()
        .unwrap();
        apply(&mut source).unwrap();
        assert_eq!(source["kind"].as_str(), Some("window"), "the preset names the kind");
        assert_eq!(source["days_ahead"].as_integer(), Some(3), "the source's own value");
        assert_eq!(source["path"].as_str(), Some("/2/shifts"), "the preset's value");
        assert_eq!(source["auth"]["url"].as_str(), Some("http://127.0.0.1:9/login"), "a nested field overridden");
        assert_eq!(source["auth"]["kind"].as_str(), Some("login"), "the rest of the nested table kept");
        assert!(!source.contains_key("preset"));
        assert!(source["sideloads"].as_table().unwrap().is_empty(), "an empty table clears the preset's");
        assert_eq!(source["query"]["limit"].as_str(), Some("5"));
        assert_eq!(source["query"]["deleted"].as_str(), Some("true"), "a table merges with the preset's");
        let mut source: toml::Table =
            "preset = \"wheniwork\"\nauth = { kind = \"header\", name = \"W-Token\", token_env = \"T\" }".parse().unwrap();
        apply(&mut source).unwrap();
        assert_eq!(source["auth"].as_table().unwrap().len(), 3, "an auth of another kind replaces the preset's: {source:?}");
    }

    #[test]
    fn an_unknown_preset_or_another_kind_is_refused() {
        let mut source: toml::Table = "preset = \"whenwork\"".parse().unwrap();
        assert!(apply(&mut source).unwrap_err().contains("unknown preset 'whenwork' (known: wheniwork, tiki)"));
        let mut source: toml::Table = "preset = \"wheniwork\"\nkind = \"stripe\"".parse().unwrap();
        assert!(apply(&mut source).unwrap_err().contains("is for kind = \"window\""));
    }

    #[test]
    fn every_preset_parses() {
        for (name, text) in PRESETS {
            text.parse::<toml::Table>().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
