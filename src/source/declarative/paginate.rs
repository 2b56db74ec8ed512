//! How a declared API pages a list (`paginator = { kind = … }`): given one
//! page's request and answer, the next page's request, or the end.

use serde::Deserialize;
use serde_json::Value;

use super::select::Path;
use crate::source::http::ClientError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Paginator {
    /// One request answers the whole list.
    #[default]
    None,
    /// `?page=1`, `?page=2`, … until a short or empty page, or the last
    /// page the answer names.
    PageNumber {
        #[serde(default = "default_page_param")]
        param: String,
        /// The first page's number.
        #[serde(default = "default_first_page")]
        start: u64,
        /// The page size parameter and value sent, if any; a page with
        /// fewer items is the last.
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u64>,
        /// Where the answer says how many pages there are, if it does.
        #[serde(default)]
        total_pages_path: Option<Path>,
    },
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, … until a short page
    /// or the total the answer names.
    Offset {
        #[serde(default = "default_offset_param")]
        param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        #[serde(default = "default_limit")]
        limit: u64,
        #[serde(default)]
        total_path: Option<Path>,
    },
    /// The answer holds the next page's cursor (`meta.next_cursor`), sent
    /// back as a query parameter; no cursor is the end.
    Cursor {
        cursor_path: Path,
        #[serde(default = "default_cursor_param")]
        param: String,
    },
    /// The answer holds the next page's URL (`next`); it must stay on the
    /// base URL's host and path.
    NextUrl { next_path: Path },
    /// The `Link` header's `rel="next"` URL (GitHub); it must stay on the
    /// base URL's host and path.
    LinkHeader,
}

fn default_page_param() -> String {
    "page".into()
}
fn default_first_page() -> u64 {
    1
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_limit() -> u64 {
    100
}
fn default_cursor_param() -> String {
    "cursor".into()
}

/// What the paginator reads of one page.
pub struct Page<'a> {
    /// The request that got it (path and query, relative to the base URL).
    pub path: &'a str,
    pub answer: &'a Value,
    /// Items the page held.
    pub items: usize,
    /// The `Link` header's next URL.
    pub link_next: Option<&'a str>,
}

impl Paginator {
    pub fn validate(&self, field: &str) -> Result<(), String> {
        let empty = |name: &str, value: &str| match value.is_empty() {
            true => Err(format!("{field}.{name}: must not be empty")),
            false => Ok(()),
        };
        match self {
            Paginator::PageNumber { param, size_param, size, .. } => {
                empty("param", param)?;
                if size_param.is_some() != size.is_some() {
                    return Err(format!("{field}: size_param and size go together"));
                }
                if *size == Some(0) {
                    return Err(format!("{field}.size: must be above 0"));
                }
            }
            Paginator::Offset { param, limit_param, limit, .. } => {
                empty("param", param)?;
                empty("limit_param", limit_param)?;
                if *limit == 0 {
                    return Err(format!("{field}.limit: must be above 0"));
                }
            }
            Paginator::Cursor { param, .. } => empty("param", param)?,
            _ => {}
        }
        Ok(())
    }

    /// The first page's request.
    pub fn first(&self, path: &str) -> String {
        match self {
            Paginator::PageNumber { param, start, size_param, size, .. } => {
                let path = with_param(path, param, &start.to_string());
                match (size_param, size) {
                    (Some(name), Some(size)) => with_param(&path, name, &size.to_string()),
                    _ => path,
                }
            }
            Paginator::Offset { param, limit_param, limit, .. } => {
                with_param(&with_param(path, param, "0"), limit_param, &limit.to_string())
            }
            _ => path.to_string(),
        }
    }

    /// The request after `page`, or `None` when it was the last. A next
    /// URL from the answer is checked to stay under `base`.
    pub fn next(&self, page: &Page<'_>, base: &reqwest::Url) -> Result<Option<String>, ClientError> {
        let next = match self {
            Paginator::None => None,
            Paginator::PageNumber { param, start, size, total_pages_path, .. } => {
                let current = param_value(page.path, param).and_then(|v| v.parse::<u64>().ok()).unwrap_or(*start);
                let total = total_pages_path.as_ref().and_then(|p| p.get(page.answer)).and_then(Value::as_u64);
                let last = page.items == 0
                    || size.is_some_and(|size| (page.items as u64) < size)
                    || total.is_some_and(|total| current + 1 >= total + *start);
                (!last).then(|| with_param(page.path, param, &(current + 1).to_string()))
            }
            Paginator::Offset { param, limit, total_path, .. } => {
                let current = param_value(page.path, param).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                let reached = current + page.items as u64;
                let total = total_path.as_ref().and_then(|p| p.get(page.answer)).and_then(Value::as_u64);
                let last = page.items == 0 || (page.items as u64) < *limit || total.is_some_and(|total| reached >= total);
                (!last).then(|| with_param(page.path, param, &reached.to_string()))
            }
            Paginator::Cursor { cursor_path, param } => {
                let cursor = cursor_path.text(page.answer).filter(|c| !c.is_empty());
                cursor.map(|cursor| with_param(page.path, param, &cursor))
            }
            Paginator::NextUrl { next_path } => match next_path.get(page.answer).and_then(Value::as_str) {
                Some(url) if !url.is_empty() => Some(under_base(base, url)?),
                _ => None,
            },
            Paginator::LinkHeader => page.link_next.map(|url| under_base(base, url)).transpose()?,
        };
        // an answer that points at itself would be read for ever
        Ok(next.filter(|next| next != page.path))
    }
}

/// `path` with query parameter `name` set to `value` (replaced if present).
pub fn with_param(path: &str, name: &str, value: &str) -> String {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().filter(|(k, _)| k != name).collect();
    query.push((name.to_string(), value.to_string()));
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(&query).finish();
    format!("{path}?{query}")
}

/// The value of query parameter `name` in `path`.
fn param_value(path: &str, name: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// A URL the upstream handed us (a next page), as a path relative to
/// `base`: refused unless it has base's scheme, host, port and path prefix,
/// so the credentials never travel elsewhere.
pub fn under_base(base: &reqwest::Url, url: &str) -> Result<String, ClientError> {
    let refused = |reason: &str| ClientError::Refused { url: url.to_string(), reason: reason.to_string() };
    // a relative URL is read against the base
    let parsed = base.join(url).map_err(|_| refused("not a URL"))?;
    if parsed.origin() != base.origin() || parsed.username() != base.username() || parsed.password().is_some() {
        return Err(refused("the next page's URL is on another host than base_url; not followed"));
    }
    let prefix = base.path().trim_end_matches('/');
    let Some(rest) = parsed.path().strip_prefix(prefix).filter(|rest| rest.starts_with('/')) else {
        return Err(refused("the next page's URL is outside base_url's path; not followed"));
    };
    Ok(match parsed.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paginator(toml_text: &str) -> Paginator {
        toml::from_str::<toml::Table>(toml_text).unwrap()["p"].clone().try_into().unwrap()
    }

    fn base() -> reqwest::Url {
        reqwest::Url::parse("https://api.example.com/v3").unwrap()
    }

    fn next(p: &Paginator, path: &str, answer: Value, items: usize, link: Option<&str>) -> Option<String> {
        p.next(&Page { path, answer: &answer, items, link_next: link }, &base()).unwrap()
    }

    #[test]
    fn page_numbers_count_up_to_a_short_page_or_the_total() {
        let p = paginator(r#"p = { kind = "page_number", size_param = "per_page", size = 2, total_pages_path = "meta.pages" }"#);
        let first = p.first("/items?state=all");
        assert_eq!(first, "/items?state=all&page=1&per_page=2");
        assert_eq!(next(&p, &first, json!({}), 2, None).as_deref(), Some("/items?state=all&per_page=2&page=2"));
        assert_eq!(next(&p, &first, json!({}), 1, None), None, "a short page is the last");
        assert_eq!(next(&p, "/items?page=3", json!({"meta": {"pages": 3}}), 2, None), None, "the last page the answer names");
        assert_eq!(next(&p, "/items?page=2", json!({"meta": {"pages": 3}}), 2, None).as_deref(), Some("/items?page=3"));
    }

    #[test]
    fn offsets_advance_by_the_items_read() {
        let p = paginator(r#"p = { kind = "offset", limit = 50, total_path = "total" }"#);
        let first = p.first("/items");
        assert_eq!(first, "/items?offset=0&limit=50");
        assert_eq!(next(&p, &first, json!({"total": 120}), 50, None).as_deref(), Some("/items?limit=50&offset=50"));
        assert_eq!(next(&p, "/items?offset=100&limit=50", json!({"total": 120}), 20, None), None);
        assert_eq!(next(&p, "/items?offset=50&limit=50", json!({"total": 100}), 50, None), None, "the total is reached");
    }

    #[test]
    fn cursors_come_from_the_answer() {
        let p = paginator(r#"p = { kind = "cursor", cursor_path = "meta.next", param = "after" }"#);
        assert_eq!(next(&p, "/items", json!({"meta": {"next": "c 2"}}), 10, None).as_deref(), Some("/items?after=c+2"));
        assert_eq!(next(&p, "/items?after=c1", json!({"meta": {"next": null}}), 10, None), None);
        assert_eq!(next(&p, "/items?after=x", json!({"meta": {"next": "x"}}), 10, None), None, "a cursor to itself ends the list");
    }

    #[test]
    fn next_urls_must_stay_on_the_base() {
        let p = paginator(r#"p = { kind = "next_url", next_path = "links.next" }"#);
        let answer = |url: &str| json!({"links": {"next": url}});
        assert_eq!(next(&p, "/items", answer("https://api.example.com/v3/items?page=2"), 1, None).as_deref(), Some("/items?page=2"));
        assert_eq!(next(&p, "/items", answer("/v3/items?page=3"), 1, None).as_deref(), Some("/items?page=3"));
        for hostile in [
            "https://evil.example/v3/items",
            "http://api.example.com/v3/items",
            "https://api.example.com/other/items",
            "https://api.example.com.evil.example/v3/x",
            "https://user@api.example.com/v3/items",
            "//evil.example/v3/items",
        ] {
            let error = p.next(&Page { path: "/items", answer: &answer(hostile), items: 1, link_next: None }, &base()).unwrap_err();
            assert_eq!(error.kind(), "url_refused", "{hostile}");
        }
        let link = paginator(r#"p = { kind = "link_header" }"#);
        assert_eq!(next(&link, "/items", json!([]), 1, Some("https://api.example.com/v3/items?page=2")).as_deref(), Some("/items?page=2"));
        assert_eq!(next(&link, "/items", json!([]), 1, None), None);
        assert!(
            link.next(&Page { path: "/items", answer: &json!([]), items: 1, link_next: Some("https://evil.example/v3/items") }, &base())
                .is_err()
        );
    }

    #[test]
    fn bad_paginators_are_refused() {
        assert!(
            paginator(r#"p = { kind = "offset", limit = 0 }"#)
                .validate("sources.x.paginator")
                .unwrap_err()
                .contains("sources.x.paginator.limit")
        );
        assert!(paginator(r#"p = { kind = "page_number", size = 5 }"#).validate("f").unwrap_err().contains("size_param and size"));
        let unknown = toml::from_str::<toml::Table>(r#"p = { kind = "pages" }"#).unwrap()["p"].clone().try_into::<Paginator>();
        assert!(unknown.unwrap_err().to_string().contains("unknown variant"));
    }
}
