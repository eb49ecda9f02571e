//! Multipart form bodies (`/v1/audio/transcriptions`, `/v1/images/edits`): the model is a form
//! field, found by scanning the parts' headers without copying the file parts. Only the
//! fields Laneway routes and admits by are read: `model` and `stream`.

use memchr::memmem;

use crate::wire::{PeekError, RequestMeta};

/// The boundary a `multipart/form-data` content type names.
fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// The byte range of the value of the form field `name`, if the form has it.
fn field(body: &[u8], delimiter: &[u8], name: &str) -> Option<std::ops::Range<usize>> {
    let disposition = format!("name=\"{name}\"");
    let mut at = 0;
    while let Some(start) = memmem::find(&body[at..], delimiter) {
        let part = at + start + delimiter.len();
        let head_end = part + memmem::find(&body[part..], b"\r\n\r\n")?;
        let head = &body[part..head_end];
        let value = head_end + 4;
        let next = value + memmem::find(&body[value..], delimiter)?;
        // The CRLF before the next delimiter belongs to it, not to the value.
        let end = next.saturating_sub(2).max(value);
        let named = head.split(|&b| b == b'\n').any(|line| {
            let line = String::from_utf8_lossy(line).to_ascii_lowercase();
            line.starts_with("content-disposition:") && line.contains(&disposition)
        });
        if named {
            return Some(value..end);
        }
        at = next;
    }
    None
}

/// Reads the routing fields of a multipart form body sent with `content_type`.
pub fn peek_form(body: &[u8], content_type: &str) -> Result<RequestMeta, PeekError> {
    let boundary = boundary(content_type).ok_or(PeekError::NotForm)?;
    let delimiter = format!("--{boundary}");
    let span = field(body, delimiter.as_bytes(), "model").ok_or(PeekError::Missing("model"))?;
    let model = std::str::from_utf8(&body[span.clone()])
        .map_err(|_| PeekError::WrongType {
            field: "model",
            expected: "text",
        })?
        .trim()
        .to_owned();
    if model.is_empty() || model.len() > 256 || model.contains(['\r', '\n']) {
        return Err(PeekError::Missing("model"));
    }
    let stream = field(body, delimiter.as_bytes(), "stream")
        .is_some_and(|r| body[r].trim_ascii().eq_ignore_ascii_case(b"true"));
    Ok(RequestMeta {
        model,
        model_span: span,
        stream,
        max_tokens: None,
        include_usage: false,
        // The file is audio or an image, not prompt text: the estimate starts from nothing
        // and is settled from the usage the upstream reports.
        prompt_bytes: 0,
        previous_response_id: None,
        form: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn form(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.extend_from_slice(
                format!(
                    "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    #[test]
    fn the_model_field_is_found_and_rewritten_in_place() {
        let body = form(&[
            ("file", "RIFF....binary"),
            ("model", "whisper-1"),
            ("stream", "true"),
        ]);
        let m = peek_form(&body, CT).unwrap();
        assert_eq!(m.model, "whisper-1");
        assert!(m.stream && m.form);
        let out = m.rewrite_model(&bytes::Bytes::from(body), "provider-whisper");
        let again = peek_form(&out, CT).unwrap();
        assert_eq!(again.model, "provider-whisper");
        assert!(String::from_utf8_lossy(&out).contains("RIFF....binary"));
    }

    #[test]
    fn a_form_without_a_model_or_a_boundary_is_named() {
        assert_eq!(
            peek_form(&form(&[("file", "x")]), CT),
            Err(PeekError::Missing("model"))
        );
        assert_eq!(
            peek_form(b"{}", "application/json"),
            Err(PeekError::NotForm)
        );
        assert_eq!(
            peek_form(
                b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm",
                CT
            ),
            Err(PeekError::Missing("model")),
            "a part cut off before its end"
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=\"a b\""),
            Some("a b")
        );
    }
}
