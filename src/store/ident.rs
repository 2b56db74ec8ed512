//! Identifiers that reach SQL from config (source names) or upstream data
//! (object types): validated against a strict pattern, then quoted.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IdentError {
    #[error("invalid {what} '{value}': use lowercase letters, digits and '_' (max {max} chars, starting with a letter)")]
    Invalid { what: &'static str, value: String, max: usize },
}

fn check(what: &'static str, value: &str, max: usize, extra: &[char]) -> Result<(), IdentError> {
    let mut chars = value.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(&c));
    if starts_with_letter && rest_ok && value.len() <= max {
        Ok(())
    } else {
        Err(IdentError::Invalid { what, value: value.to_string(), max })
    }
}

/// A source name: part of every table name.
pub fn source_name(name: &str) -> Result<(), IdentError> {
    check("source name", name, 20, &[])
}

/// A Postgres schema name from config.
pub fn schema_name(name: &str) -> Result<(), IdentError> {
    check("schema name", name, 40, &[])
}

/// An object type from upstream data (`invoice`, `checkout.session`).
pub fn object_type(object: &str) -> Result<(), IdentError> {
    check("object type", object, 42, &['.'])
}

/// The mirror table of a source's object type: `{source}_{object}`, dots as
/// underscores. At most 63 characters (a 20-character source and a
/// 42-character type such as `payment_intent_amount_details_line_item`), so
/// it fits Postgres's identifiers untruncated.
pub fn mirror_table(source: &str, object: &str) -> Result<String, IdentError> {
    source_name(source)?;
    object_type(object)?;
    Ok(format!("{source}_{}", object.replace('.', "_")))
}

/// Quote an identifier for SQL (both SQLite and Postgres use double quotes).
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_stripe_object_types() {
        assert_eq!(mirror_table("stripe", "payment_intent").unwrap(), "stripe_payment_intent");
        assert_eq!(mirror_table("stripe", "checkout.session").unwrap(), "stripe_checkout_session");
    }

    #[test]
    fn rejects_hostile_identifiers() {
        for bad in ["", "Customer", "a\"; drop table x; --", "a b", "1abc", "a-b", &"x".repeat(43)] {
            assert!(object_type(bad).is_err(), "{bad:?} accepted");
        }
        assert!(source_name("stripe.eu").is_err());
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
    }
}
