//! Reading S3's XML answers without an XML library, and the base64 its checksum headers take.

/// Standard base64 with padding (RFC 4648), as S3's checksum headers take it.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The text of every `<tag>…</tag>` in `xml`, with XML's five entities decoded.
pub(super) fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(
            after[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    out
}

/// (key, upload id) of each `<Upload>` of a ListMultipartUploads answer.
pub(super) fn uploads_in(xml: &str) -> Vec<(String, String)> {
    xml_values(xml, "Upload")
        .iter()
        .filter_map(|upload| {
            let key = xml_values(upload, "Key").into_iter().next()?;
            let id = xml_values(upload, "UploadId").into_iter().next()?;
            Some((key, id))
        })
        .collect()
}
