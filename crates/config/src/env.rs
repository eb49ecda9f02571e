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

#[cfg(test)]
mod tests {
    use super::*;

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
