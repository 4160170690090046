//! `multipart/form-data` uploads to `POST /api/predict` (`curl -F
//! image=@face.jpg`): telling them from raw image bodies, picking the image
//! part, and saying what was wrong when there is none. The body reaches here
//! already read whole under a raw upload's limits (`--max-body`,
//! `--read-timeout`, in `http`), so the parser only walks bytes in memory
//! and every error it finds is about the format (a 400). Decoding the image
//! stays the engine's, as for a raw body.

use axum::body::Body;
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, request::Parts, HeaderMap};

/// Field names taken as the image, ahead of any other part with a filename.
const IMAGE_FIELDS: [&str; 2] = ["image", "file"];

/// Whether the Content-Type says the body is `multipart/form-data`; any
/// other (or none) is a raw JPEG or PNG body, as before.
pub(super) fn is_form(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/form-data"))
    })
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE)?.to_str().ok()
}

/// The image in a whole `multipart/form-data` body: the part named `image`
/// or `file`, else the first part with a filename. `Err` is the message of
/// the 400.
pub(super) async fn image_part(parts: Parts, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let ct = content_type(&parts.headers).unwrap_or_default().to_string();
    // The same parser the extractor uses, so the boundary named in a
    // message is the one it looked for.
    let boundary = multer::parse_boundary(&ct).map_err(|e| {
        format!(
            "Content-Type {ct:?}: {e}; expected multipart/form-data; boundary=<the delimiter used in the body>"
        )
    })?;
    let delimiter = format!("--{boundary}");
    let opens = body
        .windows(delimiter.len())
        .any(|w| w == delimiter.as_bytes());
    let req = Request::from_parts(parts, Body::from(body));
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| format!("Content-Type {ct:?}: {}", e.body_text()))?;
    let malformed = |e: MultipartError| malformed(e, &delimiter, opens);
    let mut found: Vec<String> = Vec::new();
    let mut named: Option<(String, Vec<u8>)> = None;
    let mut with_filename: Option<(String, Vec<u8>)> = None;
    // Every part is read, so a body malformed after its image is refused too.
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().map(str::to_string);
        let file_name = field.file_name().map(str::to_string);
        let desc = match (&name, &file_name) {
            (Some(n), Some(f)) => format!("{n:?} (filename {f:?})"),
            (Some(n), None) => format!("{n:?} (no filename)"),
            (None, Some(f)) => format!("a part with no name (filename {f:?})"),
            (None, None) => "a part with no name".to_string(),
        };
        let is_named = name.as_deref().is_some_and(|n| IMAGE_FIELDS.contains(&n));
        let bytes = field.bytes().await.map_err(malformed)?;
        if is_named && named.is_none() {
            named = Some((desc.clone(), bytes.to_vec()));
        } else if file_name.is_some() && with_filename.is_none() {
            with_filename = Some((desc.clone(), bytes.to_vec()));
        }
        found.push(desc);
    }
    let Some((desc, bytes)) = named.or(with_filename) else {
        let found = match found.is_empty() {
            true => "no parts".to_string(),
            false => found.join(", "),
        };
        return Err(format!(
            "no image in the multipart/form-data body: expected a part named \"image\" or \"file\", or one with a filename; found {found}"
        ));
    };
    if bytes.is_empty() {
        return Err(format!(
            "the image part {desc} is empty: send a JPEG or PNG file"
        ));
    }
    Ok(bytes)
}

/// A parse error as the client's message: what multer found, and for a
/// stream that never completes, whether the declared boundary was there.
fn malformed(e: MultipartError, delimiter: &str, opens: bool) -> String {
    let cause = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<multer::Error>());
    let what = match cause {
        Some(multer::Error::IncompleteStream) if !opens => format!(
            "the boundary {delimiter:?} that Content-Type declares never occurs in the body"
        ),
        Some(multer::Error::IncompleteStream) => {
            format!("the body ends before its closing boundary \"{delimiter}--\"")
        }
        Some(multer::Error::IncompleteFieldData { field_name }) => format!(
            "the body ends inside part {:?}, before the boundary {delimiter:?} that closes it",
            field_name.as_deref().unwrap_or("with no name")
        ),
        Some(m) => {
            // httparse's reason, when it has one, says which header.
            match std::error::Error::source(m) {
                Some(inner) => format!("{m} ({inner})"),
                None => m.to_string(),
            }
        }
        None => e.body_text(),
    };
    format!("malformed multipart/form-data body: {what}")
}
