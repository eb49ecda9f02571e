//! `${NAME}` substitution. `$` not followed by `{` is literal; `$${` escapes to a literal `${`.

use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// The variables a parse on this thread reads instead of the process environment.
    static GIVEN: RefCell<Option<HashMap<String, String>>> = const { RefCell::new(None) };
}

/// Replaces every `${NAME}` with the variable `NAME`: from the environment given to
/// [`with_vars`] while inside it, from the process environment otherwise.
pub fn substitute(input: &str) -> Result<String, String> {
    GIVEN.with_borrow(|given| match given {
        Some(vars) => substitute_with(input, |name| vars.get(name).cloned()),
        None => substitute_with(input, |name| std::env::var(name).ok()),
    })
}

/// Runs `f` (a parse) with `vars` as its whole environment, on this thread only.
pub fn with_vars<T>(vars: HashMap<String, String>, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<HashMap<String, String>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            GIVEN.set(self.0.take());
        }
    }
    let _reset = Reset(GIVEN.replace(Some(vars)));
    f()
}

pub fn substitute_with(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in \"{input}\""))?;
            let name = &body[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable name"
                ));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Every `${NAME}` of the file that names an unset variable, as (line, key path, name), so
/// that one run of `laneway check` lists them all instead of the first. The key path follows
/// the table headers (`[server]`, `[[lane]]` → `lane[0]`); comments are skipped.
pub fn unset_in(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut table = String::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let code = strip_comment(line).trim();
        if let Some(name) = code.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let n = counts.entry(name.trim().to_owned()).or_default();
            table = format!("{}[{n}]", name.trim());
            *n += 1;
            continue;
        }
        if let Some(name) = code.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = name.trim().to_owned();
            continue;
        }
        let key = code.split('=').next().unwrap_or("").trim();
        let mut rest = code;
        while let Some(pos) = rest.find("${") {
            let escaped = pos > 0 && rest.as_bytes()[pos - 1] == b'$';
            let body = &rest[pos + 2..];
            let Some(end) = body.find('}') else { break };
            let name = &body[..end];
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !escaped && valid && lookup(name).is_none() {
                let path = if table.is_empty() {
                    key.to_owned()
                } else {
                    format!("{table}.{key}")
                };
                out.push((i + 1, path, name.to_owned()));
            }
            rest = &body[end + 1..];
        }
    }
    out
}

fn lookup(name: &str) -> Option<String> {
    GIVEN.with_borrow(|given| match given {
        Some(vars) => vars.get(name).cloned(),
        None => std::env::var(name).ok(),
    })
}

/// The part of a TOML line before a `#` that is not inside a string.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..i],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unset_variable_is_found_with_its_key() {
        let text = "[server]\nadmin_key = \"${LW_UNSET_A}\" # ${LW_IN_COMMENT}\n\
                    [[lane]]\nname = \"a\"\n[[lane]]\napi_key = \"${LW_UNSET_B}\"\n\
                    url = \"$${LW_ESCAPED}\"\n";
        let found = with_vars(HashMap::new(), || unset_in(text));
        assert_eq!(
            found,
            [
                (2, "server.admin_key".to_owned(), "LW_UNSET_A".to_owned()),
                (6, "lane[1].api_key".to_owned(), "LW_UNSET_B".to_owned()),
            ]
        );
    }

    fn look(name: &str) -> Option<String> {
        (name == "A").then(|| "alpha".to_string())
    }

    #[test]
    fn substitutes_and_reports() {
        assert_eq!(substitute_with("x-${A}-y", look).unwrap(), "x-alpha-y");
        assert_eq!(
            substitute_with("$5 and $${A}", look).unwrap(),
            "$5 and ${A}"
        );
        let err = substitute_with("${MISSING_ONE}", look).unwrap_err();
        assert!(err.contains("`MISSING_ONE` is not set"), "{err}");
        assert!(substitute_with("${A", look).is_err());
        assert!(substitute_with("${A B}", look).is_err());
    }
}
